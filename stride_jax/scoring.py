"""Scores of predicted pose windows against ground truth, split by frame visibility."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from stride_jax import metrics


def score(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """MPJPE, PA-MPJPE and acceleration error (mm) on all / occluded / visible frames.

    Args:
      pred, gt: ``[N, T, 17, 3]`` metres (any root: metrics align the pelvis).
      valid: ``[N, T]`` True where the estimator detected the person; False frames are the
        "occluded" ones.

    Returns:
      ``{"mpjpe", "mpjpe_occ", "mpjpe_vis", "pa_mpjpe", "pa_mpjpe_occ", "pa_mpjpe_vis",
      "accel", "accel_occ", "accel_vis"}`` (NaN where a subset is empty).
    """
    pred, gt = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
    valid = jnp.asarray(valid, bool)
    per_frame = {"mpjpe": metrics.mpjpe(pred, gt), "pa_mpjpe": metrics.pa_mpjpe(pred, gt)}
    out: dict[str, float] = {}
    for name, err in per_frame.items():
        out[name] = float(err.mean())
        out[f"{name}_occ"] = float(metrics.masked_mean(err, ~valid))
        out[f"{name}_vis"] = float(metrics.masked_mean(err, valid))
    acc = metrics.accel_error(pred, gt)
    middle_occ = ~valid[..., 1:-1]  # an acceleration sample belongs to its middle frame
    out["accel"] = float(acc.mean())
    out["accel_occ"] = float(metrics.masked_mean(acc, middle_occ))
    out["accel_vis"] = float(metrics.masked_mean(acc, ~middle_occ))
    return out
