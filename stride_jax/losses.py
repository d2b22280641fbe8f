"""Training losses shared by pretraining and test-time alignment.

Every term takes ``pred, target [..., T, J, 3]`` (metres) and an optional ``mask`` that
says which frames (``[..., T]``) or joints (``[..., T, J]``) count; masked-out entries
never contribute, and an all-masked input gives 0 (not NaN).  Each term returns a scalar
averaged over the counted entries of the whole batch.  ``weighted_loss`` combines the
terms with a mapping of weights; terms with weight 0 are not computed.

Terms (names used as config keys):
  ``mpjpe``     mean per-joint L2 distance.
  ``n_mpjpe``   MPJPE after scaling ``pred`` by the least-squares optimal scale, found per
                sample *and frame* (MotionBERT's ``n_mpjpe``).
  ``velocity``  mean L2 norm of the difference of first temporal differences.
  ``limb_var``  variance over time of each of the 16 bone lengths of ``pred``, averaged
                over bones (MotionBERT's ``loss_limb_var``, unbiased variance).
"""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp

from stride_jax import skeleton

LOSS_TERMS = ("mpjpe", "n_mpjpe", "velocity", "limb_var")
_EPS = 1e-8


def _check(pred: jax.Array, target: jax.Array | None = None) -> None:
    skeleton.check_poses(pred, "pred", like=target, joints=None)


def _joint_weights(mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """Broadcasts a frame ``[..., T]`` or joint ``[..., T, J]`` mask to ``[..., T, J]``."""
    if mask is None:
        return jnp.ones(shape[:-1], jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape == shape[:-2]:
        mask = mask[..., None]
    if mask.shape[-1] not in (1, shape[-2]) or mask.ndim != len(shape) - 1:
        raise ValueError(f"mask {mask.shape} does not fit poses {shape}")
    return jnp.broadcast_to(mask, shape[:-1])


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """L2 norm whose gradient is finite at 0."""
    sq = jnp.sum(x * x, axis=axis)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)


def mpjpe(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean per-joint position error (metres): ``[..., T, J, 3] x2 -> []``."""
    _check(pred, target)
    return _masked_mean(_safe_norm(pred - target), _joint_weights(mask, pred.shape))


def optimal_scale(pred: jax.Array, target: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
    """Least-squares scale ``s`` minimising ``|s*pred - target|`` per frame: ``-> [..., T, 1, 1]``.

    With a ``mask`` only the counted joints of each frame enter the fit.
    """
    chex.assert_shape(pred, (..., 3))
    chex.assert_equal_shape([pred, target])
    w = _joint_weights(mask, pred.shape)[..., None]
    num = jnp.sum(w * pred * target, axis=(-2, -1), keepdims=True)
    den = jnp.sum(w * pred * pred, axis=(-2, -1), keepdims=True)
    return num / jnp.maximum(den, _EPS)


def n_mpjpe(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Scale-normalised MPJPE (per sample and frame optimal scale), metres."""
    _check(pred, target)
    return mpjpe(optimal_scale(pred, target, mask) * pred, target, mask)


def velocity(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean L2 error of first temporal differences; a difference counts if both frames do."""
    _check(pred, target)
    if pred.shape[-3] < 2:
        return jnp.zeros((), jnp.float32)
    w = _joint_weights(mask, pred.shape)
    w = w[..., 1:, :] * w[..., :-1, :]
    dv = jnp.diff(pred, axis=-3) - jnp.diff(target, axis=-3)
    return _masked_mean(_safe_norm(dv), w)


def limb_lengths(poses: jax.Array) -> jax.Array:
    """Bone lengths ``[..., T, J, 3] -> [..., T, 16]`` for ``skeleton.BONES``."""
    chex.assert_shape(poses, (..., skeleton.NUM_JOINTS, 3))
    parent, child = skeleton.BONES[:, 0], skeleton.BONES[:, 1]
    return _safe_norm(poses[..., child, :] - poses[..., parent, :])


def limb_var(pred: jax.Array, target: jax.Array | None = None,
             mask: jax.Array | None = None) -> jax.Array:
    """Unbiased variance over counted frames of each bone length, mean over bones (m^2).

    ``target`` is ignored (the term is self-supervised); it is accepted so all terms share
    one signature.  A bone counts in a frame when both of its joints do.
    """
    _check(pred)
    lengths = limb_lengths(pred)  # [..., T, B]
    w = _joint_weights(mask, pred.shape)
    w = w[..., skeleton.BONES[:, 0]] * w[..., skeleton.BONES[:, 1]]  # [..., T, B]
    count = jnp.sum(w, axis=-2, keepdims=True)
    mean = jnp.sum(lengths * w, axis=-2, keepdims=True) / jnp.maximum(count, 1.0)
    var = jnp.sum(w * (lengths - mean) ** 2, axis=-2) / jnp.maximum(count[..., 0, :] - 1, 1.0)
    bone_used = (count[..., 0, :] > 1).astype(jnp.float32)
    return _masked_mean(var, bone_used)


_TERM_FNS = {"mpjpe": mpjpe, "n_mpjpe": n_mpjpe, "velocity": velocity, "limb_var": limb_var}


def weighted_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None,
                  weights: Mapping[str, float]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of loss terms.

    Args:
      pred: ``[..., T, J, 3]`` model output, metres.
      target: ``[..., T, J, 3]`` ground truth (pretraining) or pseudo-labels (alignment).
      mask: ``[..., T]`` or ``[..., T, J]`` entries that count, or None for all.
      weights: term name -> weight (``LOSS_TERMS``); zero weights are skipped.

    Returns:
      ``(total, terms)`` where ``terms`` maps each computed term name to its value.
    """
    _check(pred, target)
    unknown = set(weights) - set(_TERM_FNS)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {LOSS_TERMS}")
    terms = {name: _TERM_FNS[name](pred, target, mask)
             for name, w in weights.items() if float(w) != 0.0}
    if not terms:
        raise ValueError("all loss weights are zero")
    total = sum(float(weights[name]) * value for name, value in terms.items())
    return total, terms
