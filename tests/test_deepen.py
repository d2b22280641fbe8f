"""Warm-starting a deeper model from a shallower prior (identity blocks on top)."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

from configs import cpu
from stride_jax import checkpoint, deepen, model_input, pretrain
from stride_jax.data.dataset import Sequence, load_demo
from stride_jax.model import build_model, init_params


def _model_config(**changes) -> dict:
    config = cpu.get_config("runlocal").model.to_dict()
    config.update(residual=False, **changes)  # no residual: the blocks alone set the output
    return config


def _poses(key: int) -> jax.Array:
    return 0.3 * jax.random.normal(jax.random.key(key), (2, 27, 17, 3))


@pytest.mark.parametrize("depth_in,depth_out", [(1, 2), (2, 4)])
def test_deepened_model_starts_equal_to_the_prior(depth_in, depth_out):
    small = build_model(_model_config(depth=depth_in))
    big = build_model(_model_config(depth=depth_out))
    prior = init_params(small, jax.random.key(0))
    fresh = init_params(big, jax.random.key(1))
    params = deepen.deepen_params(prior, fresh)
    assert deepen.block_depth(params) == depth_out
    x = _poses(2)
    np.testing.assert_allclose(big.apply({"params": params}, x),
                               small.apply({"params": prior}, x), rtol=1e-5, atol=1e-6)
    # the copied blocks are the prior's, the new ones keep the fresh attention weights
    np.testing.assert_array_equal(params["blocks_st_0"]["attn_s"]["qkv"]["kernel"],
                                  prior["blocks_st_0"]["attn_s"]["qkv"]["kernel"])
    new = f"blocks_ts_{depth_out - 1}"
    np.testing.assert_array_equal(params[new]["attn_t"]["qkv"]["kernel"],
                                  fresh[new]["attn_t"]["qkv"]["kernel"])

    # training can grow the new blocks: their zeroed output layers get gradients at once
    def loss(p):
        return ((big.apply({"params": p}, x) - 0.5 * x) ** 2).mean()

    grads = jax.grad(loss)(jax.tree_util.tree_map(jax.numpy.asarray, params))
    for module, layer in (("attn_s", "proj"), ("mlp_t", "fc2")):
        assert np.abs(grads[new][module][layer]["kernel"]).max() > 1e-7
    # ... and once they are non-zero the model differs from the prior
    params[new]["mlp_t"]["fc2"]["bias"][:] = np.linspace(-1.0, 1.0, 16)  # not uniform: LayerNorm
    moved = big.apply({"params": params}, x)
    ref = small.apply({"params": prior}, x)
    assert np.abs(moved - ref).max() > 0.05 * np.abs(ref).max()


def test_deepen_rejects_shallower_or_different_models():
    prior = init_params(build_model(_model_config(depth=2)), jax.random.key(0))
    same = init_params(build_model(_model_config(depth=2)), jax.random.key(1))
    with pytest.raises(ValueError, match="needs a deeper model: the prior has 2 block pairs, "
                                         "the model 2"):
        deepen.deepen_params(prior, same)
    wider = init_params(build_model(_model_config(depth=3, dim_rep=32)), jax.random.key(1))
    deep = deepen.deepen_params(prior, wider)  # copies the head as is: shapes differ
    with pytest.raises(ValueError, match=r"head/kernel has shape \(16, 3\), the model "
                                         r"expects \(32, 3\)"):
        model_input.adapt_params(deep, wider)
    no_fuse = init_params(build_model(_model_config(depth=3, att_fuse=False)),
                          jax.random.key(1))
    with pytest.raises(ValueError, match=r"prior parameters not in the model: \['ts_attn_0'"):
        deepen.deepen_params(prior, no_fuse)


def test_init_from_a_shallower_prior_trains_a_deeper_four_channel_model(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    small_cfg = dict(_model_config(depth=1), residual=True)
    small = build_model(small_cfg)
    prior_params = init_params(small, jax.random.key(3))
    prior_dir = checkpoint.save_prior(tmp_path / "prior3", prior_params, small_cfg)

    config = cpu.get_config("runlocal")
    config.model.update(depth=3, dim_in=4, residual=True)
    config.pretrain.update(num_steps=2, init_from=str(prior_dir))
    big = build_model(config.model)
    abstract = jax.eval_shape(lambda: init_params(big, jax.random.key(0)))
    shardings = jax.tree_util.tree_map(
        lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract)
    with pytest.raises(ValueError, match="different depth or architecture"):
        pretrain.warm_start_params(prior_dir, abstract, shardings)  # no fresh params given
    warm = pretrain.warm_start_params(prior_dir, abstract, shardings,
                                      fresh_params=lambda: init_params(big, jax.random.key(4)))
    x, valid = _poses(5), jax.random.bernoulli(jax.random.key(6), 0.6, (2, 27))
    np.testing.assert_allclose(big.apply({"params": warm}, model_input.make_input(x, valid, 4)),
                               small.apply({"params": prior_params}, x), rtol=1e-5, atol=1e-6)

    world, fps = load_demo()
    train = [Sequence("demo_0", "b", world[0], fps, "climb")]
    val = [Sequence("demo_1", "b", world[1][:120], fps, "climb")]
    pretrain.train_and_evaluate(config, tmp_path / "run", train_sequences=train,
                                val_sequences=val)
    assert any("1 block pairs copied, 2 identity pairs added" in r.getMessage()
               for r in caplog.records)
    trained = checkpoint.load_prior(tmp_path / "run" / "prior")
    assert trained.model["depth"] == 3
    assert deepen.block_depth(trained.params) == 3
