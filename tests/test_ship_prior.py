"""scripts/ship_prior.py: a run's best or checkpointed step becomes the prior, with history."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import chex
import jax
import pytest

from configs import cpu
from stride_jax import checkpoint, pretrain, train_step
from stride_jax.data.dataset import Sequence, load_demo
from stride_jax.model import build_model, init_params

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ship_prior.py"


def _load():
    spec = importlib.util.spec_from_file_location("ship_prior", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ship_prior"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 6-step tiny pretraining run on real motion, evaluated and checkpointed every 2."""
    world, fps = load_demo()
    config = cpu.get_config("runlocal")
    config.pretrain.update(num_steps=6, eval_every_steps=2, checkpoint_every_steps=2)
    workdir = tmp_path_factory.mktemp("run")
    pretrain.train_and_evaluate(config, workdir,
                                train_sequences=[Sequence("d0", "b", world[0], fps, "climb")],
                                val_sequences=[Sequence("d1", "b", world[1][:120], fps, "climb")])
    return config, workdir


def _checkpointed_params(config, workdir: Path, step: int):
    optimizer = pretrain.make_optimizer(config.pretrain)
    abstract = jax.eval_shape(lambda: train_step.init_state(
        init_params(build_model(config.model), jax.random.key(0)), optimizer))
    ckpts = checkpoint.TrainCheckpoints(workdir)
    state, _ = ckpts.restore(step, abstract)
    ckpts.close()
    return state["params"]


def test_best_then_a_checkpointed_step_replace_the_prior(tiny_run, tmp_path):
    config, workdir = tiny_run
    ship = _load()
    dest = tmp_path / "prior"
    old = init_params(build_model(config.model), jax.random.key(5))
    checkpoint.save_prior(dest, old, config.model.to_dict(),
                          {"total_steps": 7, "description": "older", "best_step": 7})
    common = ["--dest", str(dest), "--command", "python -m stride_jax.pretrain ..."]
    assert ship.main([str(workdir), "--total_steps", "13", "--description", "best"]
                     + common) == 0
    best = checkpoint.load_prior(dest)
    exported = checkpoint.load_prior(workdir / "prior")
    chex.assert_trees_all_equal(best.params, exported.params)
    assert best.meta["total_steps"] == 13 and best.meta["description"] == "best"
    assert best.meta["previous"] == {"total_steps": 7, "description": "older", "best_step": 7}
    assert best.meta["validation"] == exported.meta["validation"]

    kept = checkpoint.TrainCheckpoints(workdir)
    steps = kept.steps()
    kept.close()
    step = steps[0]  # an older kept step, not the newest
    assert step < 6
    assert ship.main([str(workdir), "--step", str(step), "--total_steps", "14",
                      "--description", "older step"] + common) == 0
    shipped = checkpoint.load_prior(dest)
    want = _checkpointed_params(config, workdir, step)
    chex.assert_trees_all_equal(shipped.params, want)
    rows = (workdir / "eval.csv").read_text().splitlines()
    row = next(r.split(",") for r in rows[1:] if int(r.split(",")[0]) == step)
    assert shipped.meta["best_step"] == step
    assert shipped.meta["validation"]["val_mpjpe_occluded_input"] == pytest.approx(float(row[1]))
    assert shipped.meta["previous"]["description"] == "best"
    assert "config" not in shipped.meta["previous"]  # the chain keeps commands, not configs
    assert shipped.meta["previous"]["command"] == "python -m stride_jax.pretrain ..."
    assert shipped.meta["previous"]["previous"]["description"] == "older"
    assert shipped.meta["config"] == exported.meta["config"]


def test_missing_step_and_bad_flags_are_errors(tiny_run, tmp_path, capsys):
    _, workdir = tiny_run
    ship = _load()
    dest = tmp_path / "prior"
    args = ["--total_steps", "9", "--description", "x", "--command", "c", "--dest", str(dest)]
    assert ship.main([str(workdir), "--step", "1"] + args) == 2
    assert "step 1 is not among the checkpoints" in capsys.readouterr().out
    assert not dest.exists()  # nothing written
    assert ship.main([str(tmp_path / "nowhere")] + args) == 2
    assert "prior checkpoint directory not found" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ship.main([str(workdir), "--step", "last"] + args)
    assert "--step must be best, latest or a step number" in capsys.readouterr().err
