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
    t_in = np.arange(x.shape[0]) / fps_in
    t_out = np.arange(num_output_frames(x.shape[0], fps_in, fps_out)) / fps_out
    t_out = np.minimum(t_out, t_in[-1])
    kind = "cubic" if x.shape[0] >= 4 else "linear"
    if kind == "cubic":
        out = interpolate.CubicSpline(t_in, data, axis=0)(t_out)
    else:
        out = interpolate.interp1d(t_in, data, axis=0)(t_out)
    return out.astype(dtype)
