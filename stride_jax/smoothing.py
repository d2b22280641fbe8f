"""Savitzky-Golay smoothing along time as one fixed linear map (compiled, differentiable).

Test-time training can fit its pseudo-labels smoothed (``ttt.target_smoothing``, our
addition, not in the paper): the detections jitter by a few centimetres per frame, and a
prior fine-tuned on them learns the jitter.  The filter equals
``scipy.signal.savgol_filter(x, window, polyorder, axis=time, mode='interp')``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.signal import savgol_filter


def check_window(window: int, polyorder: int = 2) -> int:
    """``window`` if it is 0 (off) or an odd number of frames > ``polyorder``; else a
    ``ValueError`` naming it."""
    window = int(window)
    if window < 0 or (window and (window % 2 == 0 or window <= polyorder)):
        raise ValueError(f"smoothing window {window} must be 0 (off) or an odd number of "
                         f"frames > polyorder {polyorder}")
    return window


def effective_window(window: int, frames: int, polyorder: int = 2) -> int:
    """The filter length used on ``frames`` frames: ``window`` (odd), shortened to the
    longest odd length that fits; 0 (no smoothing) when none longer than ``polyorder``
    fits or ``window`` is 0."""
    window = min(check_window(window, polyorder), frames if frames % 2 else frames - 1)
    return window if window > polyorder else 0


@functools.cache
def _matrix(frames: int, window: int, polyorder: int) -> np.ndarray:
    """``[frames, frames]``: row t holds the weights of output frame t."""
    return savgol_filter(np.eye(frames), window, polyorder, axis=0, mode="interp").astype(
        np.float32)


def savgol(x: jax.Array, window: int, polyorder: int = 2, axis: int = -3) -> jax.Array:
    """``x`` smoothed along ``axis`` (default: time of ``[..., T, J, 3]``) with
    :func:`effective_window` (``x`` unchanged when it is 0)."""
    frames = x.shape[axis]
    window = effective_window(window, frames, polyorder)
    if not window:
        return x
    moved = jnp.moveaxis(x, axis, -1)
    out = moved @ jnp.asarray(_matrix(frames, window, polyorder).T, x.dtype)
    return jnp.moveaxis(out, -1, axis)
