"""Linear inter/extrapolation of missing frames (STRIDE's pseudo-labels).

A missing frame is filled by linear interpolation between the nearest valid
frames before and after it; frames before the first (after the last) valid
frame copy that frame.  Validity is either per frame ``[..., T]`` or per joint
``[..., T, J]``.  Everything is pure ``jnp`` with static shapes, so it works
under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from stride_jax import skeleton


def _per_joint_valid(poses: jax.Array, valid: jax.Array) -> jax.Array:
    """Checks shapes and returns validity broadcast to ``poses.shape[:-1]``."""
    skeleton.check_poses(poses, joints=None)
    if valid.dtype != jnp.bool_:
        raise ValueError(f"valid must be boolean, got dtype {valid.dtype}")
    if valid.shape == poses.shape[:-2]:
        return jnp.broadcast_to(valid[..., None], poses.shape[:-1])
    if valid.shape == poses.shape[:-1]:
        return valid
    raise ValueError(
        f"valid must be [..., T] {poses.shape[:-2]} or [..., T, J] {poses.shape[:-1]} "
        f"to match poses {poses.shape}, got {valid.shape}"
    )


def fill_missing(poses: jax.Array, valid: jax.Array) -> jax.Array:
    """Fills invalid frames by linear interpolation between the nearest valid ones.

    Values of ``poses`` at invalid frames are ignored (they may even be NaN).
    Valid entries are returned unchanged.  Leading/trailing gaps are filled with
    the first/last valid frame (constant extrapolation).  A sequence (or, with
    per-joint validity, a joint track) with no valid frame is filled with zeros
    (``stride_jax.aligner`` does not align such a video).

    Args:
      poses: float ``[..., T, J, 3]`` joint positions (metres).
      valid: bool ``[..., T]`` per-frame or ``[..., T, J]`` per-joint validity.

    Returns:
      ``[..., T, J, 3]`` filled poses, same dtype as ``poses``.
    """
    poses = jnp.asarray(poses)
    v = _per_joint_valid(poses, jnp.asarray(valid))  # [..., T, J]
    n_frames = poses.shape[-3]
    t = lax.broadcasted_iota(jnp.int32, v.shape, v.ndim - 2)
    axis = v.ndim - 2
    prev = lax.cummax(jnp.where(v, t, -1), axis=axis)
    nxt = lax.cummin(jnp.where(v, t, n_frames), axis=axis, reverse=True)
    has_prev = prev >= 0
    has_next = nxt < n_frames
    # Without a neighbour on one side, use the other one (constant extrapolation).
    lo = jnp.where(has_prev, prev, nxt)
    hi = jnp.where(has_next, nxt, prev)
    lo = jnp.clip(lo, 0, n_frames - 1)
    hi = jnp.clip(hi, 0, n_frames - 1)
    span = hi - lo
    w = jnp.where(span > 0, (t - lo) / jnp.maximum(span, 1), 0.0).astype(poses.dtype)
    a = jnp.take_along_axis(poses, lo[..., None], axis=-3)
    b = jnp.take_along_axis(poses, hi[..., None], axis=-3)
    w = w[..., None]
    interp = a + w * (b - a)
    any_valid = (has_prev | has_next)[..., None]
    filled = jnp.where(any_valid, interp, jnp.zeros_like(interp))
    return jnp.where(v[..., None], poses, filled)
