"""Tests for stride_jax.model (no torch): shapes, checks, attention locality, dtypes, fusion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import model as model_lib

TINY = dict(dim_feat=16, dim_rep=16, depth=1, num_heads=2, mlp_ratio=2.0, maxlen=81)


def _perturbed(params, seed: int, scale: float = 0.3):
    """Adds noise to every parameter so that no layer is trivially zero or identity."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p: np.asarray(p) + rng.normal(scale=scale, size=p.shape).astype(np.float32),
        params)


def _init(model: model_lib.DSTFormer, seed: int = 0):
    """``init_params`` under jit (eager init dispatches every op separately: slow on CPU)."""
    return jax.jit(lambda key: model_lib.init_params(model, key))(jax.random.key(seed))


def _poses(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.3, size=shape + (3,)).astype(np.float32)


def test_forward_shape_under_jit():
    model = model_lib.build_model(TINY)
    params = _init(model)
    out = jax.jit(model.apply)({"params": params}, _poses(2, 81, 17))
    assert out.shape == (2, 81, 17, 3) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()


def test_too_long_and_wrong_joints_raise():
    model = model_lib.build_model({**TINY, "maxlen": 9})
    params = _init(model)
    apply = jax.jit(model.apply)
    with pytest.raises(ValueError, match="exceeds maxlen 9"):
        apply({"params": params}, _poses(1, 10, 17))
    with pytest.raises(ValueError, match="expects"):
        apply({"params": params}, _poses(1, 9, 16))
    with pytest.raises(ValueError, match="expects"):
        apply({"params": params}, _poses(9, 17))


@pytest.mark.parametrize("mode", ["spatial", "temporal"])
def test_attention_mixes_only_its_axis(mode):
    """Perturbing token (t, j) moves spatial outputs only in frame t, temporal only in joint j."""
    frames, joints, t, j = 6, 5, 2, 3
    attn = model_lib.Attention(dim=8, num_heads=2, mode=mode)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, frames, joints, 8)), jnp.float32)
    params = _perturbed(attn.init(jax.random.key(2), x)["params"], seed=3)
    apply = jax.jit(attn.apply)
    base = apply({"params": params}, x)
    moved = apply({"params": params}, x.at[0, t, j].add(1.0))
    changed = np.abs(np.asarray(moved - base)).max(axis=-1)[0] > 1e-6  # [T, J]
    expected = np.zeros((frames, joints), bool)
    if mode == "spatial":
        expected[t, :] = True
    else:
        expected[:, j] = True  # bidirectional: earlier frames change as well
    np.testing.assert_array_equal(changed, expected)


def test_bfloat16_compute_keeps_float32_params():
    model32 = model_lib.build_model(TINY)
    model16 = model_lib.build_model({**TINY, "dtype": "bfloat16"})
    params = _init(model16)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    params = _perturbed(params, seed=1, scale=0.1)
    x = _poses(2, 27, 17)
    ref = np.asarray(jax.jit(model32.apply)({"params": params}, x))
    out = jax.jit(model16.apply)({"params": params}, x)
    assert out.dtype == jnp.float32
    err = np.abs(np.asarray(out) - ref).max()
    assert 0 < err <= 0.05 * np.abs(ref).max() + 1e-3


def test_initial_fusion_is_plain_average():
    """ts_attn starts at weight 0 / bias 0.5, i.e. softmax -> (0.5, 0.5): the plain mean."""
    fused = model_lib.build_model({**TINY, "depth": 2})
    mean = model_lib.build_model({**TINY, "depth": 2, "att_fuse": False})
    params = _init(fused)
    for i in range(2):
        np.testing.assert_array_equal(params[f"ts_attn_{i}"]["kernel"], 0.0)
        np.testing.assert_array_equal(params[f"ts_attn_{i}"]["bias"], 0.5)
    others = {k: v for k, v in params.items() if not k.startswith("ts_attn_")}
    others = _perturbed(others, seed=1)
    x = _poses(2, 11, 17)
    got = jax.jit(fused.apply)({"params": {**params, **others}}, x)
    want = jax.jit(mean.apply)({"params": others}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_build_model_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown model config fields"):
        model_lib.build_model({**TINY, "num_layers": 3})


def test_erf_gelu_equals_jax_exact_gelu():
    from stride_jax.model import gelu

    x = jnp.linspace(-8.0, 8.0, 4001)
    # float32 rounding of the erf form in the far negative tail (|value| < 1e-5): < 1e-6
    np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
    assert float(jnp.abs(gelu(x) - x * jax.scipy.stats.norm.cdf(x)).max()) < 1e-6
