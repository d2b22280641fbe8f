"""Test-time training of the top blocks only (``ttt.adapt_blocks``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cpu
from stride_jax import train_step, ttt
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.model import build_model, init_params


@pytest.fixture(scope="module")
def three_blocks():
    config = cpu.get_config("runlocal")
    config.model.depth = 3
    model = build_model(config.model)
    params = init_params(model, jax.random.key(1))
    # A trained-looking prior: nonzero fusion weights so every block matters.
    params = jax.tree_util.tree_map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    world, _ = load_demo()
    clip = np.asarray(augment.root_relative(augment.world_to_camera(world)))[0, 100:127]
    return config, model, params, clip.astype(np.float32)


def test_two_parts_equal_one_call(three_blocks):
    config, model, params, clip = three_blocks
    x = jnp.asarray(clip[None])
    mask = jnp.arange(27)[None] < 20
    whole = model.apply({"params": params}, x, frame_mask=mask)
    for split in (1, 2):
        h = model.apply({"params": params}, x, frame_mask=mask, last_block=split)
        assert h.shape == (1, 27, 17, config.model.dim_feat)
        top = model.apply({"params": params}, x, frame_mask=mask, features=h, first_block=split)
        np.testing.assert_allclose(top, whole, atol=1e-5)
    with pytest.raises(ValueError, match="features are needed"):
        model.apply({"params": params}, x, first_block=1)
    with pytest.raises(ValueError, match="outside the model"):
        model.apply({"params": params}, x, last_block=4)


def test_top_block_ttt_equals_full_model_with_frozen_lower_params(three_blocks):
    """Independent reference: the whole model trained by an optimizer that leaves the
    embeddings and block pairs 0 and 1 untouched (``optax.multi_transform``)."""
    config, model, params, clip = three_blocks
    cfg = config.ttt.copy_and_resolve_references()
    cfg.epochs, cfg.lr, cfg.adapt_blocks = 4, 1e-3, 1
    cfg.target_smoothing = 0  # the reference below fits the raw pseudo-labels
    cfg.smoothing_candidates = ()
    cfg.output_blend = 0.0  # and outputs its prediction as it is
    rng = np.random.default_rng(0)
    inputs = (clip + rng.normal(0, 0.02, clip.shape)).astype(np.float32)[None]  # [N=1,W,J,3]
    weights = np.ones((1, 27), np.float32)
    frame_mask = np.arange(27)[None] < 24
    key = jax.random.key(2)
    pred, curve, ok = jax.jit(ttt.make_run_one_video(model, cfg))(
        params, inputs, weights, frame_mask, key)
    assert bool(ok)

    adapted, frozen = ttt.split_params(params, 2)
    assert set(frozen) == {"pos_embed", "temp_embed", "joints_embed", "blocks_st_0",
                           "blocks_ts_0", "ts_attn_0", "blocks_st_1", "blocks_ts_1",
                           "ts_attn_1"}
    labels = {k: ("adapt" if k in adapted else "freeze") for k in params}
    optimizer = optax.multi_transform({"adapt": ttt.make_optimizer(cfg),
                                       "freeze": optax.set_to_zero()}, labels)
    step = jax.jit(train_step.make_step(model, cfg.loss, optimizer))
    state = train_step.init_state(params, optimizer)
    batch = {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(inputs),
             "mask": jnp.asarray(weights), "frame_mask": jnp.asarray(frame_mask)}
    ref_curve = []
    for _ in range(cfg.epochs):
        state, m = step(state, batch, key)
        ref_curve.append(float(m["loss"]))
    for name in frozen:  # the reference really kept them
        jax.tree_util.tree_map(np.testing.assert_array_equal, state["params"][name],
                               params[name])
    ref = model.apply({"params": state["params"]}, batch["inputs"], frame_mask=frame_mask)
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(pred)[:, :24], np.asarray(ref)[:, :24], atol=2e-5)
    assert ref_curve[-1] < ref_curve[0]

    full = cfg.copy_and_resolve_references()
    full.adapt_blocks = 0
    pred_full, _, _ = jax.jit(ttt.make_run_one_video(model, full))(
        params, inputs, weights, frame_mask, key)
    assert np.abs(np.asarray(pred_full) - np.asarray(pred)).max() > 1e-4  # not the same run


def test_too_many_blocks_is_an_error(three_blocks):
    config, model, _, _ = three_blocks
    cfg = config.ttt.copy_and_resolve_references()
    cfg.adapt_blocks = 4
    with pytest.raises(ValueError, match="adapt_blocks=4: the prior has 3 block pairs"):
        ttt.make_run_one_video(model, cfg)
