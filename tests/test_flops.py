"""The analytic matmul list of ``stride_jax.flops`` against the FLOP totals and the
matmuls that autodiff and ``stride_jax.attention`` really run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import attention, flops

CPU = dict(dim_feat=128, dim_rep=256, depth=3, num_heads=8, mlp_ratio=2.0, dim_in=4)
SMALL = dict(dim_feat=64, dim_rep=128, depth=2, num_heads=8, mlp_ratio=2.0)
NO_REP = dict(dim_feat=32, dim_rep=0, depth=1, num_heads=4, mlp_ratio=4.0, att_fuse=False,
              dim_out=5)


@pytest.mark.parametrize("config", [CPU, SMALL, NO_REP])
@pytest.mark.parametrize("frames,windows", [(243, 1), (81, 3)])
def test_matmul_list_sums_to_the_flop_counts(config, frames, windows):
    forward = flops.forward_matmuls(config, frames, windows)
    # the step: 3x forward, less the input layer's d-input (not differentiated), plus
    # one recomputed temporal score matmul per temporal attention
    embed = next(op for op in forward if op.name == "joints_embed")
    scores = next(op for op in forward if op.name == flops.TEMPORAL_SCORES)
    step = flops.train_step_matmuls(config, frames, windows)
    assert sum(op.flops for op in step) == pytest.approx(
        flops.train_step_flops(config, frames, windows) - embed.flops + scores.flops)


def test_cpu_size_step_is_49_76_gflop():
    """A CPU-size training step (3-channel input) is 49.76 GFLOP, the figure docs/speed.md uses."""
    assert flops.train_step_flops(dict(CPU, dim_in=3), 243) / 1e9 == pytest.approx(
        49.76, abs=5e-3)


@pytest.mark.parametrize("frames,windows", [(243, 1), (81, 3)])
def test_forward_count_by_hand(frames, windows):
    """NO_REP counted by hand: 3 -> 32 embedding, one depth of two streams (each a
    spatial and a temporal pair of qkv + proj + 32 -> 128 -> 32 MLP and attention over 17
    joints / ``frames`` frames), no fusion, a 32 -> 5 head."""
    tokens = frames * 17
    dense = 3 * 32 + 4 * (4 * 32 * 32 + 2 * 32 * 128) + 32 * 5  # MACs per token
    attention_macs = 2 * (2 * frames * 17 * 17 * 32 + 2 * 17 * frames * frames * 32)
    want = 2.0 * (dense * tokens + attention_macs) * windows
    assert flops.forward_flops(NO_REP, frames, windows) == pytest.approx(want)


def _product(layout, a, b):
    t = lambda x: x.swapaxes(-1, -2)  # noqa: E731
    return {"nn": lambda: a @ b, "nt": lambda: a @ t(b), "tn": lambda: t(a) @ b}[layout]()


@pytest.mark.parametrize("layout", ["nn", "nt"])
def test_backward_matmuls_compute_autodiff_gradients(layout):
    """Each listed backward op, fed the stored arrays, gives jax.vjp's gradient."""
    m, k, n = 5, 3, 4
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k))
    b = rng.standard_normal((k, n) if layout == "nn" else (n, k))
    g = rng.standard_normal((m, n))
    _, vjp = jax.vjp(lambda x, y: _product(layout, x, y), jnp.asarray(a), jnp.asarray(b))
    d_a, d_b = vjp(jnp.asarray(g))
    d_lhs, d_rhs = flops.backward_matmuls([flops.Matmul("x", layout, 1, m, k, n, 1)])
    # d_lhs = g @ b^T (nn) or g @ b (nt); d_rhs = a^T @ g (nn) or g^T @ a (nt)
    lhs_operands = (g, b)
    rhs_operands = (a, g) if layout == "nn" else (g, a)
    for op, operands, want in ((d_lhs, lhs_operands, d_a), (d_rhs, rhs_operands, d_b)):
        assert op.operand_shapes() == tuple(x.shape for x in operands), op
        np.testing.assert_allclose(_product(op.layout, *operands), want, rtol=1e-5,
                                   atol=1e-5)
        assert op.flops == 2 * m * k * n


def _traced_matmuls(fn, *args):
    """``(layout, batch, m, k, n)`` of every matmul in ``fn``'s jaxpr, an operand that is a
    transpose of the last two axes counted as stored transposed (XLA folds it in)."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    transposed = {}
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "transpose" and tuple(eqn.params["permutation"]) == (0, 2, 1):
            transposed[eqn.outvars[0]] = True
        if eqn.primitive.name != "dot_general":
            continue
        (ca, cb), (ba, bb) = eqn.params["dimension_numbers"]
        assert tuple(ba) == tuple(bb) == (0,)
        lhs, rhs = eqn.invars
        a_t = (tuple(ca) == (1,)) != transposed.get(lhs, False)
        b_t = (tuple(cb) == (2,)) != transposed.get(rhs, False)
        batch, *sa = lhs.aval.shape
        m, k = (sa[1], sa[0]) if tuple(ca) == (1,) else (sa[0], sa[1])
        n = rhs.aval.shape[1] if tuple(cb) == (2,) else rhs.aval.shape[2]
        found.append(({(False, False): "nn", (False, True): "nt", (True, False): "tn"}[
            (a_t, b_t)], batch, m, k, n))
    return sorted(found)


def test_attention_backward_list_is_what_the_attention_runs():
    rows, n, d = 6, 9, 4
    q, k, v, g = (jnp.ones((rows, n, d)) for _ in range(4))
    bias = jnp.zeros((rows, 1, n))
    out, lse = attention._block_fwd(q, k, v, bias)
    traced = _traced_matmuls(attention._block_bwd, q, k, v, bias, out, lse, g)
    scores = flops.Matmul(flops.TEMPORAL_SCORES, "nt", rows, n, d, n, 1)
    listed = sorted((o.layout, o.batch, o.m, o.k, o.n)
                    for o in flops.attention_backward_matmuls(scores))
    assert traced == listed
    assert len(listed) == 5


def test_backward_of_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout 'tn'"):
        flops.backward_matmuls([flops.Matmul("x", "tn", 1, 2, 2, 2, 1)])
