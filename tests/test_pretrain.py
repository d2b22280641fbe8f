"""Pretraining: the shared step learns, kill-and-resume is exact, damaged checkpoints."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cpu
from stride_jax import checkpoint, pretrain, train_step
from stride_jax.data.dataset import Sequence, load_demo
from stride_jax.model import build_model, init_params


def _demo_sequences() -> tuple[list[Sequence], list[Sequence]]:
    """Real climbing motion shipped with the package (two 243-frame clips)."""
    world, fps = load_demo()
    train = [Sequence("demo_0", "b", world[0], fps, "climb")]
    val = [Sequence("demo_1", "b", world[1][:120], fps, "climb")]
    return train, val


def _tiny_config(num_steps: int = 4):
    config = cpu.get_config("runlocal")
    config.pretrain.num_steps = num_steps
    return config


def test_step_decreases_loss_on_fixed_batch():
    config = _tiny_config()
    config.model.residual = False  # start far from the target so learning must show
    model = build_model(config.model)
    optimizer = train_step.make_optimizer(1e-2, weight_decay=0.0)
    step = jax.jit(train_step.make_step(model, {"mpjpe": 1.0, "velocity": 1.0}, optimizer),
                   donate_argnums=0)
    world, _ = load_demo()
    clean = jnp.asarray(world[:, :27] - world[:, :27, :1])
    noisy = clean + 0.02 * jax.random.normal(jax.random.key(1), clean.shape)
    state = train_step.init_state(init_params(model, jax.random.key(0)), optimizer)
    losses = []
    for i in range(12):
        state, m = step(state, {"inputs": noisy, "targets": clean}, jax.random.key(i))
        losses.append(float(m["loss"]))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses


def _latest_params(workdir: Path, config) -> dict:
    model = build_model(config.model)
    optimizer = pretrain.make_optimizer(config.pretrain)
    abstract = jax.eval_shape(lambda: train_step.init_state(
        init_params(model, jax.random.key(0)), optimizer))
    ckpts = checkpoint.TrainCheckpoints(workdir)
    step, state, extra = ckpts.restore_latest(abstract)
    ckpts.close()
    return step, state["params"], extra


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    train, val = _demo_sequences()
    config = _tiny_config(num_steps=4)
    pretrain.train_and_evaluate(config, tmp_path / "straight", train_sequences=train,
                                val_sequences=val)
    out = pretrain.train_and_evaluate(config, tmp_path / "killed", train_sequences=train,
                                      val_sequences=val, stop_after=2)
    assert out["stopped"] and not (tmp_path / "killed" / "prior").exists()
    summary = pretrain.train_and_evaluate(config, tmp_path / "killed", train_sequences=train,
                                          val_sequences=val)
    assert summary["step"] == 4
    step_a, params_a, extra_a = _latest_params(tmp_path / "straight", config)
    step_b, params_b, extra_b = _latest_params(tmp_path / "killed", config)
    assert step_a == step_b == 4 and extra_a["sampler"] == extra_b["sampler"]
    chex.assert_trees_all_close(params_a, params_b, rtol=1e-5, atol=1e-6)
    prior = checkpoint.load_prior(tmp_path / "killed" / "prior")
    assert prior.model["dim_feat"] == config.model.dim_feat and "validation" in prior.meta
    assert prior.path == (tmp_path / "killed" / "prior").absolute()
    assert (tmp_path / "killed" / "loss_curve.png").stat().st_size > 1000
    rows = (tmp_path / "killed" / "metrics.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4]  # no duplicated steps


def _truncate_largest(directory: Path) -> Path:
    files = [p for p in directory.rglob("*") if p.is_file()]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    return victim


def _drain_abandoned_reads() -> None:
    """Lets the reads a failed restore left in flight finish and be collected, so Python
    reports them inside this test (filtered below) rather than during a later one."""
    time.sleep(0.5)
    gc.collect()


# Restores of truncated checkpoints fail with reads of other arrays still in flight, which
# Python reports as ignored exceptions (upstream Orbax/TensorStore behaviour: see
# the note in stride_jax/checkpoint.py).  Only these two messages, and only in this test.
@pytest.mark.filterwarnings(
    r"ignore:(?s).*(Event loop is closed|_read_array_index_and_device_put)"
    ":pytest.PytestUnraisableExceptionWarning")
def test_truncated_checkpoint_falls_back_and_prior_error(tmp_path, caplog):
    train, val = _demo_sequences()
    config = _tiny_config(num_steps=4)
    pretrain.train_and_evaluate(config, tmp_path, train_sequences=train, val_sequences=val)
    _truncate_largest(tmp_path / "checkpoints" / "4")
    step, _, _ = _latest_params(tmp_path, config)
    assert step == 2  # the damaged newest step is reported and the previous one is used
    assert any("step 4" in r.getMessage() and "corrupted" in r.getMessage()
               for r in caplog.records)
    _truncate_largest(tmp_path / "prior" / "params")
    with pytest.raises(checkpoint.CheckpointError, match="corrupted, truncated"):
        checkpoint.load_prior(tmp_path / "prior")
    (tmp_path / "prior" / "prior.json").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="prior.json is corrupted"):
        checkpoint.load_prior(tmp_path / "prior")
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.load_prior(tmp_path / "missing")
    _drain_abandoned_reads()


def test_forward_in_batches_pads_the_last_batch():
    seen = []

    def fwd(params, x):
        seen.append(x.shape)
        return x * params

    inputs = jnp.arange(7 * 2, dtype=jnp.float32).reshape(7, 2)
    out = pretrain.forward_in_batches(fwd, 3.0, inputs, 3)
    np.testing.assert_allclose(out, 3.0 * np.asarray(inputs))
    assert seen == [(3, 2)] * 3  # one shape only: a jitted fwd compiles once
    placed = pretrain.forward_in_batches(fwd, 3.0, inputs, 4, put=lambda x: x + 1.0)
    np.testing.assert_allclose(placed, 3.0 * (np.asarray(inputs) + 1.0))  # put on each batch


def test_abstract_state_matches_a_real_state():
    """``abstract_state`` (the restore target of ``scripts/ship_prior.py``) has the real
    state's tree, shapes and dtypes, optimiser state included."""
    config = _tiny_config()
    model = build_model(config.model)
    optimizer = pretrain.make_optimizer(config.pretrain)
    real = train_step.init_state(init_params(model, jax.random.key(3)), optimizer)
    abstract = pretrain.abstract_state(model, optimizer)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, real)  # and the tree structure
    assert len(jax.tree_util.tree_leaves(real["opt"])) > 0
