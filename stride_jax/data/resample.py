"""Resample motion to another frame rate.

Positions are interpolated with a cubic spline over time. When the rate goes down, a
zero-phase 4th-order Butterworth low-pass at 0.8 x the new Nyquist frequency is applied first,
so that fast jitter does not alias into the slower signal (120 -> 30 Hz: 12 Hz cut-off, far
above the frequencies of human motion).
"""

from __future__ import annotations

import numpy as np
from scipy import interpolate, signal

TARGET_FPS: float = 30.0
_CUTOFF: float = 0.8
_ORDER: int = 4


def num_output_frames(num_frames: int, fps_in: float, fps_out: float) -> int:
    """Frames at ``fps_out`` that fit in the time span of ``num_frames`` frames at ``fps_in``."""
    duration = (num_frames - 1) / fps_in
    return int(np.floor(duration * fps_out + 1e-6)) + 1


def resample(positions: np.ndarray, fps_in: float, fps_out: float = TARGET_FPS, antialias: bool = True) -> np.ndarray:
    """Resample along the first (time) axis.

    Output frame ``k`` is at time ``k / fps_out``; frame 0 equals input frame 0 and the last
    output frame lies within the input's time span (no extrapolation).

    Args:
      positions: ``(T, ...)`` array, e.g. ``(T, J, 3)`` metres.
      fps_in: input rate in Hz.
      fps_out: output rate in Hz.
      antialias: low-pass before downsampling (ignored when upsampling).

    Returns:
      ``(T', ...)`` array of the input's float dtype.

    Raises:
      ValueError: non-positive rates or fewer than 2 frames.
    """
    x = np.asarray(positions)
    if not (fps_in > 0 and fps_out > 0):
        raise ValueError(f"frame rates must be positive, got fps_in={fps_in}, fps_out={fps_out}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 frames to resample, got {x.shape[0]}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    if np.isclose(fps_in, fps_out, rtol=1e-9, atol=0.0):
        return x.astype(dtype, copy=True)
    data = x.astype(np.float64)
    if antialias and fps_out < fps_in:
        b, a = signal.butter(_ORDER, _CUTOFF * fps_out / fps_in)
        if data.shape[0] > 3 * max(len(a), len(b)):
            data = signal.filtfilt(b, a, data, axis=0)
    t_out = np.arange(num_output_frames(x.shape[0], fps_in, fps_out)) / fps_out
    return sample_at(data, fps_in, t_out).astype(dtype)


def sample_at(positions: np.ndarray, fps_in: float, times: np.ndarray) -> np.ndarray:
    """Values of ``(T, ...)`` frames at ``fps_in`` at the given ``times`` (seconds).

    A cubic spline through the frames (linear for fewer than 4); times outside the input's
    span are clamped to it (the first / last frame is held).
    """
    data = np.asarray(positions, np.float64)
    t_in = np.arange(data.shape[0]) / fps_in
    t = np.clip(np.asarray(times, np.float64), 0.0, t_in[-1])
    if data.shape[0] >= 4:
        return interpolate.CubicSpline(t_in, data, axis=0)(t)
    return interpolate.interp1d(t_in, data, axis=0)(t)


def resample_track(poses: np.ndarray, valid: np.ndarray, fps_in: float,
                   fps_out: float) -> tuple[np.ndarray, np.ndarray]:
    """An estimator's track at ``fps_in`` -> the same track at ``fps_out``.

    Args:
      poses: ``(T, J, 3)`` with every frame filled (e.g. by linear in-filling of the
        undetected ones; NaN is not allowed).
      valid: ``(T,)`` detections.
      fps_in, fps_out: frame rates (Hz).

    Returns:
      ``(poses (T', J, 3) float32, valid (T',))`` with ``T' = num_output_frames``; an
      output frame is valid when the input frames on both sides of its time are (the
      frame itself when the times coincide).
    """
    poses = np.asarray(poses)
    valid = np.asarray(valid, bool)
    if not np.isfinite(poses).all():
        raise ValueError("resample_track needs filled poses (no NaN); in-fill them first")
    out = resample(poses, fps_in, fps_out).astype(np.float32)
    pos = np.arange(out.shape[0]) * (fps_in / fps_out)  # fractional input frame index
    lo = np.clip(np.floor(pos + 1e-6).astype(np.int64), 0, valid.size - 1)
    hi = np.clip(np.ceil(pos - 1e-6).astype(np.int64), 0, valid.size - 1)
    return out, valid[lo] & valid[hi]
