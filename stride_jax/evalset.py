"""Deterministic evaluation windows: real mocap seen by a virtual camera, then corrupted.

Used by pretraining validation and by ``stride_jax.evaluate``: each sequence of a split is
cut into windows, viewed from a seeded random yaw (camera-style axes), and passed through
the occlusion / estimator simulator with a seeded key.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence as Seq

import jax
import jax.numpy as jnp
import numpy as np

from stride_jax import corrupt
from stride_jax.data import augment, windows
from stride_jax.data.dataset import Sequence


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Windows ``[N, T, 17, 3]`` (camera axes, metres) with their simulated observations.

    Attributes:
      clean: ground-truth camera-space poses.
      observed: simulated estimator output (0 where ``valid`` is False).
      valid: ``[N, T]`` frames where the simulated estimator detected the person.
      names: ``N`` labels ``"<sequence>@<start>"``.
    """

    clean: np.ndarray
    observed: np.ndarray
    valid: np.ndarray
    names: tuple[str, ...]


def make_eval_set(sequences: Seq[Sequence], *, length: int, stride: int, fps: float,
                  seed: int, simulator: dict, pitch_max_deg: float = 10.0) -> EvalSet:
    """Cuts, views and corrupts ``sequences`` reproducibly (same seed -> same set)."""
    clips, names = [], []
    for seq in sequences:
        if abs(seq.fps - fps) > 1e-3:
            raise ValueError(f"sequence {seq.name} is at {seq.fps} fps, expected {fps}")
        if seq.joints.shape[0] < length:
            continue
        starts = windows.window_starts(seq.joints.shape[0], length, stride)
        clips.append(windows.cut_windows(seq.joints, length, stride))
        names.extend(f"{seq.name}@{int(s)}" for s in starts)
    if not clips:
        raise ValueError(f"no sequence has {length} frames or more")
    world = jnp.asarray(np.concatenate(clips).astype(np.float32))
    key_view, key_sim = jax.random.split(jax.random.key(seed))
    clean = augment.random_view(key_view, world, pitch_max_rad=np.deg2rad(pitch_max_deg))
    observed, valid = corrupt.simulate_estimator(key_sim, clean, fps=fps, **dict(simulator))
    return EvalSet(np.asarray(clean), np.asarray(observed), np.asarray(valid), tuple(names))
