"""Savitzky-Golay smoothing along time, compiled, for windows padded at the end.

Test-time training can fit its pseudo-labels smoothed (``ttt.target_smoothing``, our
addition, not in the paper): the detections jitter by a few centimetres per frame, and a
prior fine-tuned on them learns the jitter.  On the ``n`` real frames of a window (its
``frame_mask``, padding at the end) the filter equals
``scipy.signal.savgol_filter(x[:n], L, polyorder, axis=time, mode='interp')`` with
``L = effective_window(window, n)``: every output frame is the value at that frame of the
degree-``polyorder`` least-squares polynomial through the ``L`` frames around it (the
first or last ``L`` at the ends), so padding never changes the real frames' result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_window(window: int, polyorder: int = 2) -> int:
    """``window`` if it is 0 (off) or an odd number of frames > ``polyorder``; else a
    ``ValueError`` naming it."""
    window = int(window)
    if window < 0 or (window and (window % 2 == 0 or window <= polyorder)):
        raise ValueError(f"smoothing window {window} must be 0 (off) or an odd number of "
                         f"frames > polyorder {polyorder}")
    return window


def effective_window(window, frames, polyorder: int = 2):
    """The filter length used on ``frames`` real frames: ``window``, shortened to the
    longest odd length that fits; 0 (no smoothing) when none longer than ``polyorder``
    fits or ``window`` is 0 (``frames`` may be traced)."""
    length = jnp.minimum(window, frames - 1 + frames % 2)  # the longest odd that fits
    return length * (length > polyorder)


def savgol_matrix(frames: jax.Array, width: int, window: int, polyorder: int = 2) -> jax.Array:
    """``[width, width]`` smoothing weights for a window whose first ``frames`` frames are
    real (row t: the weights of output frame t; rows of padded frames and every row when
    the effective window is 0 are those of the identity)."""
    length = effective_window(window, frames, polyorder)
    t = jnp.arange(width)
    start = jnp.clip(t - length // 2, 0, jnp.maximum(frames - length, 0))  # [width]
    pos = jnp.arange(width)[None, :] - start[:, None]  # frame j relative to row t's start
    inside = (pos >= 0) & (pos < length)
    centre = (length - 1) / 2.0
    powers = jnp.arange(polyorder + 1)
    u = jnp.arange(width) - centre  # centred positions 0..length-1 (masked below)
    basis = u[:, None] ** powers  # [width, p+1]
    gram = (basis * (jnp.arange(width) < length)[:, None]).T @ basis  # sum over the window
    gram = gram + jnp.eye(polyorder + 1) * (length == 0)  # keep it invertible when off
    rel = jnp.where(inside, pos - centre, 0.0)[..., None] ** powers  # [width, width, p+1]
    here = ((t - start) - centre)[:, None] ** powers  # row t evaluates at its own frame
    coef = jnp.linalg.solve(gram, here.T).T  # [width, p+1]
    weights = jnp.einsum("tk,tjk->tj", coef, rel) * inside
    use = (length > 0) & (t < frames)
    return jnp.where(use[:, None], weights, jnp.eye(width))


def savgol(x: jax.Array, frame_mask: jax.Array, window: int, polyorder: int = 2) -> jax.Array:
    """``x [..., W, J, 3]`` smoothed along time (``frame_mask [..., W]``: real frames
    first, then padding); ``x`` itself when ``window`` is 0."""
    if not check_window(window, polyorder):
        return x
    width = x.shape[-3]
    frames = jnp.sum(frame_mask, axis=-1).astype(jnp.int32)
    mats = jnp.vectorize(lambda n: savgol_matrix(n, width, window, polyorder),
                         signature="()->(t,t)")(frames)
    return jnp.einsum("...tj,...jkc->...tkc", mats.astype(x.dtype), x)
