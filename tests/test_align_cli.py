"""The align CLI as a user runs it: exit codes, bad files, SIGKILL and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import cpu
from stride_jax import checkpoint
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.model import build_model, init_params

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    config = cpu.get_config("runlocal")
    params = init_params(build_model(config.model), jax.random.key(0))
    return checkpoint.save_prior(tmp_path_factory.mktemp("prior") / "prior", params,
                                 config.model.to_dict())


def _write_inputs(directory: Path, lengths: list[int]) -> None:
    directory.mkdir()
    world, _ = load_demo()
    cam = np.asarray(augment.world_to_camera(world))[0]
    rng = np.random.default_rng(0)
    for i, n in enumerate(lengths):
        valid = rng.random(n) > 0.3
        valid[0] = True
        np.savez(directory / f"clip{i}.npz", poses=cam[:n], valid=valid)


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "stride_jax.align", "--config",
            str(REPO / "configs" / "cpu.py") + ":runlocal", *args]


def test_sigkill_then_resume(prior, tmp_path):
    _write_inputs(tmp_path / "in", [20, 45, 70, 100])  # four buckets: written one by one
    out = tmp_path / "out"
    args = _cli(["--input", str(tmp_path / "in"), "--output", str(out),
                 "--checkpoint", str(prior)])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*.npz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert before, "no output appeared before the kill"
    for path in out.glob("*.npz"):  # whatever was written is complete
        assert np.load(path)["refined"].shape[1:] == (17, 3)
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.npz")) == [f"clip{i}.npz" for i in range(4)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    for name, stamp in before.items():  # outputs from before the kill were not redone
        assert (out / name).stat().st_mtime_ns == stamp


def test_bad_file_is_reported_and_others_aligned(prior, tmp_path):
    _write_inputs(tmp_path / "in", [30])
    (tmp_path / "in" / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    np.save(tmp_path / "in" / "coco2d.npy", np.zeros((30, 17, 2), np.float32))
    done = subprocess.run(_cli(["--input", str(tmp_path / "in"), "--output",
                                str(tmp_path / "out"), "--checkpoint", str(prior)]),
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True)
    assert done.returncode == 1  # some inputs failed, the good one is written
    assert (tmp_path / "out" / "clip0.npz").exists()
    assert "broken.npz" in done.stderr and "truncated" in done.stderr
    assert "coco2d.npy" in done.stderr and "2D" in done.stderr


def test_missing_prior_exits_2(tmp_path):
    _write_inputs(tmp_path / "in", [30])
    done = subprocess.run(_cli(["--input", str(tmp_path / "in"), "--output",
                                str(tmp_path / "out"), "--checkpoint",
                                str(tmp_path / "nope")]),
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "prior checkpoint directory not found" in done.stderr


@pytest.mark.parametrize("module", ["stride_jax.align", "stride_jax.evaluate"])
def test_model_override_is_an_error_naming_prior_json(prior, tmp_path, module):
    """--config.model.* cannot change a trained prior: exit 2 before any work, naming the
    prior's prior.json (it used to be accepted and silently ignored)."""
    done = subprocess.run([sys.executable, "-m", module, "--config",
                           str(REPO / "configs" / "cpu.py") + ":runlocal",
                           "--config.model.depth=3", "--checkpoint", str(prior)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--config.model.depth" in done.stderr
    assert str(Path(prior) / "prior.json") in done.stderr


def test_model_overrides_are_found_in_any_flag_form():
    from stride_jax import config_util

    argv = ["align", "--config.ttt.epochs=3", "--config.model.depth=2", "--config.model.dim_feat",
            "64", "--config.modelx=1", "--config.model=cfg.py"]
    assert config_util.model_overrides(argv) == ["--config.model.depth", "--config.model.dim_feat",
                                                 "--config.model"]
    config_util.reject_model_overrides(["align", "--config.ttt.lr=1e-4"], "p")  # no error
    with pytest.raises(ValueError, match=r"comes from p/prior\.json"):
        config_util.reject_model_overrides(argv, "p")
