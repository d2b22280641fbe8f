"""``python -m stride_jax.pretrain`` killed with SIGKILL resumes to the same parameters."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from configs import cpu
from stride_jax import checkpoint, pretrain, train_step
from stride_jax.model import build_model, init_params

REPO = Path(__file__).resolve().parent.parent
OVERRIDES = {"num_steps": 8, "checkpoint_every_steps": 2, "eval_every_steps": 4}


def _latest(workdir: Path, config) -> tuple[int, list[np.ndarray]]:
    optimizer = pretrain.make_optimizer(config.pretrain)
    abstract = jax.eval_shape(lambda: train_step.init_state(
        init_params(build_model(config.model), jax.random.key(0)), optimizer))
    ckpts = checkpoint.TrainCheckpoints(workdir)
    step, state, _ = ckpts.restore_latest(abstract)
    ckpts.close()
    return step, [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]


def test_sigkill_and_rerun_match_uninterrupted(prepared_data_root, tmp_path):
    config = cpu.get_config("runlocal")
    config.pretrain.update(OVERRIDES)
    pretrain.train_and_evaluate(config, tmp_path / "straight")

    work = tmp_path / "killed"
    cmd = [sys.executable, "-m", "stride_jax.pretrain", "--config",
           str(REPO / "configs" / "cpu.py") + ":runlocal", "--workdir", str(work)]
    cmd += [f"--config.pretrain.{k}={v}" for k, v in OVERRIDES.items()]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (work / "checkpoints" / "2").exists():
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "prior").exists(), "the run finished before it could be killed"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from step" in done.stderr
    step_a, params_a = _latest(tmp_path / "straight", config)
    step_b, params_b = _latest(work, config)
    assert step_a == step_b == 8
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    checkpoint.load_prior(work / "prior")
