"""The chunked attention core equals plain softmax attention, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax.attention import attention


def _plain(q, k, v, bias=None):
    s = q @ k.swapaxes(-1, -2)
    if bias is not None:
        s = s + bias
    return jax.nn.softmax(s, -1) @ v


@pytest.mark.parametrize("shape,chunk", [((2, 3, 11, 4), 1), ((2, 3, 11, 4), 4),
                                         ((5, 7, 3), None)])
def test_matches_plain_attention(shape, chunk):
    q, k, v, g = (jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(0), 4))
    mask = jax.random.bernoulli(jax.random.key(1), 0.7, shape[:-2] + (1, shape[-2]))
    mask = mask.at[..., 0].set(True)
    bias = jnp.where(mask, 0.0, -1e9)
    fused = jax.jit(lambda q, k, v: attention(q, k, v, bias, chunk=chunk))
    np.testing.assert_allclose(fused(q, k, v), _plain(q, k, v, bias), atol=1e-5)
    grads_fused = jax.grad(lambda *a: jnp.sum(fused(*a) * g), argnums=(0, 1, 2))(q, k, v)
    grads_plain = jax.grad(lambda *a: jnp.sum(_plain(*a, bias) * g), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(grads_fused, grads_plain):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_masked_keys_get_no_weight_and_no_gradient():
    q, k, v = (jax.random.normal(key, (1, 6, 2)) for key in jax.random.split(jax.random.key(2), 3))
    bias = jnp.array([[[0.0, 0.0, 0.0, -1e9, -1e9, -1e9]]])
    out = attention(q, k, v, bias)
    np.testing.assert_allclose(out, attention(q[:, :, :], k[:, :3], v[:, :3]), atol=1e-6)
    dk, dv = jax.grad(lambda k, v: attention(q, k, v, bias).sum(), argnums=(0, 1))(k, v)
    assert np.abs(dk[:, 3:]).max() == 0 and np.abs(dv[:, 3:]).max() == 0


def test_vmapped_attention_equals_per_item_values_and_gradients():
    """Under vmap the mapped axis is folded into the rows (custom_vmap): same numbers."""
    shape = (3, 2, 5, 9, 4)  # [K, B, H, N, D]
    q, k, v, g = (jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(3), 4))
    bias = jnp.where(jax.random.bernoulli(jax.random.key(4), 0.8, (2, 1, 1, 9)), 0.0, -1e9)
    bias = bias.at[..., 0].set(0.0)

    def loss(q, k, v, g):
        return jnp.sum(attention(q, k, v, bias, chunk=3) * g)

    batched = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1, 2))))(q, k, v, g)
    for i in range(shape[0]):
        val, grads = jax.value_and_grad(
            lambda q_, k_, v_, g_=g[i]: jnp.sum(_plain(q_, k_, v_, bias) * g_),
            argnums=(0, 1, 2))(q[i], k[i], v[i])
        np.testing.assert_allclose(batched[0][i], val, rtol=1e-5)
        for a, b in zip(batched[1], grads):
            np.testing.assert_allclose(a[i], b, atol=1e-4)
