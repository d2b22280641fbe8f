"""The analytic matmul list of ``stride_jax.flops`` against the FLOP totals and autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import flops

CPU = dict(dim_feat=128, dim_rep=256, depth=3, num_heads=8, mlp_ratio=2.0, dim_in=4)
SMALL = dict(dim_feat=64, dim_rep=128, depth=2, num_heads=8, mlp_ratio=2.0)
NO_REP = dict(dim_feat=32, dim_rep=0, depth=1, num_heads=4, mlp_ratio=4.0, att_fuse=False)


@pytest.mark.parametrize("config", [CPU, SMALL, NO_REP])
@pytest.mark.parametrize("frames,windows", [(243, 1), (81, 3)])
def test_matmul_list_sums_to_the_flop_counts(config, frames, windows):
    forward = flops.forward_matmuls(config, frames, windows)
    assert sum(op.flops for op in forward) == pytest.approx(
        flops.forward_flops(config, frames, windows))
    step = flops.train_step_matmuls(config, frames, windows)
    assert len(step) == 3 * len(forward)
    assert sum(op.flops for op in step) == pytest.approx(
        flops.train_step_flops(config, frames, windows))


def test_cpu_size_step_is_the_issue_count():
    """Issue 16 counted 49.76 GFLOP per CPU-size training step (3-channel input)."""
    config = dict(CPU, dim_in=3)
    assert sum(op.flops for op in flops.train_step_matmuls(config, 243)) / 1e9 == pytest.approx(
        49.76, abs=5e-3)


def _stored(op):
    """Operand shapes of ``op`` as stored for its layout (unbatched)."""
    a = (op.k, op.m) if op.layout == "tn" else (op.m, op.k)
    b = (op.n, op.k) if op.layout == "nt" else (op.k, op.n)
    return a, b


def _product(layout, a, b):
    return {"nn": lambda: a @ b, "nt": lambda: a @ b.T, "tn": lambda: a.T @ b}[layout]()


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
        assert _stored(op) == tuple(x.shape for x in operands), op
        np.testing.assert_allclose(_product(op.layout, *operands), want, rtol=1e-5,
                                   atol=1e-5)
        assert op.flops == 2 * m * k * n


def test_backward_of_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout 'tn'"):
        flops.backward_matmuls([flops.Matmul("x", "tn", 1, 2, 2, 2, 1)])
