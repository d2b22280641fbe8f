"""Rotation-aware in-fill of undetected frames: pseudo-labels for a body that turns.

Linear interpolation of root-relative joints (STRIDE's pseudo-labels) carries a turning
body straight through itself: across a 1.6 s gap of a spin, a flip or a cartwheel the
limbs shrink towards the pelvis and the turn is lost.  Here each gap is in-filled as a
rotation of the whole body plus a linear change of its posture:

* the body's axes (hips left-right, pelvis to thorax up) are fitted on up to
  ``fit_frames`` detected frames on each side of the gap: their orientation at the gap's
  edge and their angular velocity (least squares in the tangent space, outliers such as
  left/right swaps dropped);
* the turn across the gap is the rotation from one edge's axes to the other's, plus the
  whole turns that the edges' mean angular velocity predicts when it adds up to more
  than half a turn over the gap and both edges turn the same way at rates within 2x of
  each other (a few noisy frames next to a gap must not invent turns); the body turns at
  a constant rate about that axis;
* the posture (the joints in the body's axes) is interpolated linearly between the edges,
  so the detected frames next to the gap are met exactly;
* gaps whose turn is under ``linear_below`` radians keep linear interpolation (slow motion
  gains nothing from a fitted turn and the fit's noise would cost), gaps over
  ``rotation_above`` take the rotation, and those between blend the two.

Frames before the first and after the last detection copy them, as linear interpolation
does.  Per-frame validity only (a whole frame is detected or not).  Host-side numpy: it
prepares pseudo-labels once per video, before the compiled alignment.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from stride_jax import skeleton
from stride_jax.interpolate import fill_missing

INFILLS = ("linear", "rotation")
_HIPS = (skeleton.JOINT_INDEX["r_hip"], skeleton.JOINT_INDEX["l_hip"])
_UP = (skeleton.ROOT, skeleton.JOINT_INDEX["thorax"])


def body_axes(rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(axes [T,3,3], ok [T])`` of root-relative poses ``rr [T,17,3]``: columns are the
    right-to-left hip direction, the pelvis-to-thorax direction made orthogonal to it, and
    their cross product.  ``ok`` is False where the hips or the torso are degenerate."""
    x = rr[:, _HIPS[1]] - rr[:, _HIPS[0]]
    up = rr[:, _UP[1]] - rr[:, _UP[0]]
    nx = np.linalg.norm(x, axis=-1, keepdims=True)
    x = x / np.maximum(nx, 1e-9)
    y = up - np.sum(up * x, axis=-1, keepdims=True) * x
    ny = np.linalg.norm(y, axis=-1, keepdims=True)
    y = y / np.maximum(ny, 1e-9)
    ok = (nx[:, 0] > 1e-6) & (ny[:, 0] > 1e-6)
    return np.stack([x, y, np.cross(x, y)], axis=-1), ok


MIN_VELOCITY_FRAMES = 4  # fewer detected frames next to a gap: no velocity estimate
AGREE_RATIO = 0.5  # whole turns only when the edges' rates about the axis are this close


def fit_edge(axes: np.ndarray, frames: np.ndarray, at: int) -> tuple[np.ndarray, np.ndarray]:
    """``(orientation [3,3] at frame at, angular velocity [3] in radians per frame)`` of
    ``axes`` over ``frames`` (detected frame indices next to ``at``): a straight line in
    the tangent space about the medoid frame, refitted once without outliers.  With fewer
    than ``MIN_VELOCITY_FRAMES`` frames the velocity is too noisy to use: the nearest
    frame's axes and no rotation."""
    if frames.size < MIN_VELOCITY_FRAMES:
        nearest = frames[np.argmin(np.abs(frames - at))] if frames.size else at
        return axes[nearest], np.zeros(3)
    rots = axes[frames]
    # the reference: the frame closest (sum of angles) to the others, so that a swapped
    # detection (its axes turned by about half a turn) is never the reference
    cos = (np.einsum("aij,bij->ab", rots, rots) - 1.0) / 2.0
    mid = rots[np.argmin(np.arccos(np.clip(cos, -1.0, 1.0)).sum(axis=1))]
    r = Rotation.from_matrix(rots @ mid.T).as_rotvec()  # [n, 3] about the reference
    design = np.stack([np.ones(frames.size), (frames - at).astype(float)], axis=1)
    keep = np.ones(frames.size, bool)
    for _ in range(2):
        coef = np.linalg.lstsq(design[keep], r[keep], rcond=None)[0]
        residual = np.linalg.norm(r - design @ coef, axis=1)
        keep = residual < max(3.0 * float(np.median(residual)), 0.2)
        if keep.sum() < 2:
            break
    return Rotation.from_rotvec(coef[0]).as_matrix() @ mid, coef[1]


def gap_turn(start: np.ndarray, end: np.ndarray, omega_start: np.ndarray,
             omega_end: np.ndarray, frames: int) -> tuple[np.ndarray, float]:
    """``(unit axis, angle)`` of the turn from orientation ``start`` to ``end`` over a gap
    of ``frames`` frames: the shortest rotation, plus the whole turns that the edges' mean
    angular velocity (radians per frame) predicts when it adds up to more than half a turn
    and both edges turn the same way about the axis."""
    omega = 0.5 * (omega_start + omega_end)
    rel = Rotation.from_matrix(end @ start.T).as_rotvec()
    phi = float(np.linalg.norm(rel))
    if phi > 1e-9:
        axis = rel / phi
    elif np.linalg.norm(omega) > 1e-9:
        axis = omega / np.linalg.norm(omega)
    else:
        return np.array([0.0, 1.0, 0.0]), 0.0
    predicted = float(omega @ axis) * frames
    rates = sorted((float(omega_start @ axis), float(omega_end @ axis)), key=abs)
    agree = rates[0] * rates[1] > 0.0 and abs(rates[0]) >= AGREE_RATIO * abs(rates[1])
    turns = np.round((predicted - phi) / (2 * np.pi)) if agree and abs(predicted) > np.pi else 0.0
    return axis, phi + 2 * np.pi * turns


def fill_rotating(poses: np.ndarray, valid: np.ndarray, *, fit_frames: int = 20,
                  linear_below: float = 1.5, rotation_above: float = 2.5) -> np.ndarray:
    """Pseudo-labels ``[T,17,3]`` of ``poses [T,17,3]`` (metres) with undetected frames
    (``valid [T]`` False) in-filled as a turning body (module docstring); detected frames
    are returned unchanged.  ``linear_below`` / ``rotation_above``: turn angles (radians)
    under which a gap keeps linear interpolation and over which it is a pure rotation."""
    poses = np.asarray(poses, np.float32)
    valid = np.asarray(valid, bool)
    skeleton.check_poses(poses)
    if poses.ndim != 3 or valid.shape != poses.shape[:1]:
        raise ValueError(f"fill_rotating takes one track: poses [T,17,3] and valid [T], "
                         f"got {poses.shape} and {valid.shape}")
    if fit_frames < 1 or not 0.0 <= linear_below <= rotation_above:
        raise ValueError(f"need fit_frames >= 1 and 0 <= linear_below <= rotation_above, "
                         f"got {fit_frames}, {linear_below}, {rotation_above}")
    linear = np.asarray(fill_missing(poses, valid))
    detected = np.flatnonzero(valid)
    if detected.size < 2:
        return linear
    out = linear.astype(np.float64)
    root = out[:, :1].copy()
    rr = out - root
    axes, ok = body_axes(rr)
    usable = valid & ok
    span = rotation_above - linear_below  # the turn angles over which the two blend
    for a, b in zip(detected[:-1], detected[1:]):
        length = int(b - a)
        if length < 2 or not (ok[a] and ok[b]):
            continue
        before = np.arange(max(a - fit_frames + 1, 0), a + 1)
        after = np.arange(b, min(b + fit_frames, len(valid)))
        before, after = before[usable[before]], after[usable[after]]
        start, omega_a = fit_edge(axes, before, a)
        end, omega_b = fit_edge(axes, after, b)
        axis, angle = gap_turn(start, end, omega_a, omega_b, length)
        weight = (float(abs(angle) >= rotation_above) if span == 0.0 else
                  float(np.clip((abs(angle) - linear_below) / span, 0.0, 1.0)))
        if weight == 0.0:
            continue
        f = (np.arange(a + 1, b) - a)[:, None] / length  # [n, 1]
        turn = Rotation.from_rotvec(f * angle * axis).as_matrix() @ start  # [n, 3, 3]
        posture = (1 - f)[..., None] * (rr[a] @ start) + f[..., None] * (rr[b] @ end)
        turned = np.einsum("nij,nkj->nki", turn, posture)  # body axes back to camera
        rr[a + 1:b] = weight * turned + (1 - weight) * rr[a + 1:b]
    out = rr + root
    out[valid] = poses[valid]
    return out.astype(np.float32)


def pseudo_labels(poses: np.ndarray, valid: np.ndarray, infill: str = "linear") -> np.ndarray:
    """STRIDE's pseudo-labels of one track: undetected frames in-filled by ``infill``,
    "linear" (the paper's :func:`~stride_jax.interpolate.fill_missing`) or "rotation"
    (:func:`fill_rotating`)."""
    if infill not in INFILLS:
        raise ValueError(f"ttt.infill={infill!r}: choose one of {INFILLS}")
    if infill == "rotation":
        return fill_rotating(poses, valid)
    return np.asarray(fill_missing(np.asarray(poses, np.float32), np.asarray(valid, bool)))
