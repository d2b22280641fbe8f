"""Evaluation metrics in millimetres: MPJPE, PA-MPJPE, acceleration error.

Inputs are poses ``[..., T, J, 3]`` in metres.  Every metric returns *per-frame* errors
(``[..., T]``, or ``[..., T-2]`` for acceleration) so callers can average over any subset
of frames (e.g. occluded vs visible); ``masked_mean`` does that reduction.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from stride_jax import skeleton

MM = 1000.0


def _check(pred: jax.Array, gt: jax.Array) -> None:
    skeleton.check_poses(pred, "pred", like=gt, joints=None)


def mpjpe(pred: jax.Array, gt: jax.Array, *, root_align: bool = True) -> jax.Array:
    """Per-frame MPJPE in mm ``-> [..., T]``; pelvis-aligned unless ``root_align=False``."""
    _check(pred, gt)
    if root_align:
        pred, gt = skeleton.root_relative(pred), skeleton.root_relative(gt)
    return jnp.linalg.norm(pred - gt, axis=-1).mean(axis=-1) * MM


def procrustes_align(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Similarity transform (rotation, scale, translation) of each pred frame onto gt.

    Solves ``min_{s,R,t} |s R x + t - y|`` per ``[..., J, 3]`` frame with ``det(R) = +1``
    (reflections are excluded by flipping the weakest singular direction).
    """
    chex.assert_shape(pred, (..., 3))
    chex.assert_equal_shape([pred, gt])
    mu_x = pred.mean(axis=-2, keepdims=True)
    mu_y = gt.mean(axis=-2, keepdims=True)
    x, y = pred - mu_x, gt - mu_y
    cov = jnp.einsum("...ji,...jk->...ik", x, y)  # [..., 3, 3] = x^T y
    u, sig, vt = jnp.linalg.svd(cov)
    d = jnp.sign(jnp.linalg.det(jnp.einsum("...ij,...jk->...ik", u, vt)))
    d = jnp.where(d == 0, 1.0, d)
    fix = jnp.concatenate([jnp.ones_like(sig[..., :2]), d[..., None]], axis=-1)
    rot = jnp.einsum("...ij,...j,...jk->...ik", u, fix, vt)  # x @ rot ~ y
    var_x = jnp.sum(x * x, axis=(-2, -1))
    scale = jnp.sum(sig * fix, axis=-1) / jnp.maximum(var_x, 1e-12)
    return scale[..., None, None] * jnp.einsum("...ji,...ik->...jk", x, rot) + mu_y


def pa_mpjpe(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Per-frame Procrustes-aligned (with scale) MPJPE in mm ``-> [..., T]``."""
    _check(pred, gt)
    return mpjpe(procrustes_align(pred, gt), gt, root_align=False)


def accel_error(pred: jax.Array, gt: jax.Array, *, root_align: bool = True) -> jax.Array:
    """Per-frame acceleration error in mm/frame^2 ``-> [..., T-2]`` (second differences).

    Entry ``i`` belongs to the middle frame ``i+1``.
    """
    _check(pred, gt)
    if root_align:
        pred, gt = skeleton.root_relative(pred), skeleton.root_relative(gt)

    def accel(p: jax.Array) -> jax.Array:
        return p[..., :-2, :, :] - 2 * p[..., 1:-1, :, :] + p[..., 2:, :, :]

    return jnp.linalg.norm(accel(pred) - accel(gt), axis=-1).mean(axis=-1) * MM


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean of ``values`` over entries where ``mask`` is true (NaN when none are)."""
    if mask is None:
        return jnp.mean(values)
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), values.shape)
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.sum(mask)
