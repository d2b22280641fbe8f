"""Deterministic evaluation clips: real mocap seen by a virtual camera, then corrupted.

Each sequence of a split is cut into clips; clip ``i`` is viewed from a random yaw (camera
axes) and passed through the occlusion / estimator simulator, both drawn from
``fold_in(key(seed), i)`` (:func:`view_and_corrupt`, the one place for this).  Two cuts:

* :func:`make_eval_set` (pretraining validation): overlapping windows of one length,
  stacked into an :class:`EvalSet`;
* :func:`make_videos` (``stride_jax.evaluate``, ``scripts/tune_ttt.py``): consecutive
  videos of up to ``video_len`` frames (a shorter tail of 60+ frames is kept), as
  :class:`stride_jax.aligner.Video` s with their ground truths.

Two views of the same clips (``view``): ``"plain"`` plays the mocap as recorded;
``"fast"`` (:func:`fast_view`) plays each sequence 1.5-2x faster and turns each video's
whole body about its pelvis at up to one turn per second (yaw: spins, pitch: flips, roll:
cartwheels), the motion users send that slow mocap lacks.  Both are fixed per seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Sequence as Seq

import jax
import jax.numpy as jnp
import numpy as np

from stride_jax import corrupt
from stride_jax.aligner import Video
from stride_jax.data import augment, windows
from stride_jax.data.dataset import Sequence


def view_and_corrupt(key: jax.Array, world: np.ndarray, *, fps: float, simulator: dict,
                     pitch_max_deg: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``world [T,17,3]`` -> ``(clean, observed, valid)``: a random camera view and the
    simulated estimator output of it, both drawn from ``key`` (one compiled program per
    clip length and settings, so cutting a split into many clips stays fast)."""
    out = _simulator(fps, simulator, pitch_max_deg)(key, jnp.asarray(world, jnp.float32))
    return tuple(np.asarray(x) for x in out)


def _simulator(fps: float, simulator: dict, pitch_max_deg: float) -> Callable:
    """``(key, world) -> (clean, observed, valid)`` for these settings (hashable statics)."""
    return functools.partial(_view_and_corrupt, fps=float(fps),
                             simulator=tuple(sorted(dict(simulator).items())),
                             pitch_max_deg=float(pitch_max_deg))


@functools.partial(jax.jit, static_argnames=("fps", "simulator", "pitch_max_deg"))
def _view_and_corrupt(key: jax.Array, world: jax.Array, *, fps: float,
                      simulator: tuple, pitch_max_deg: float):
    k_view, k_sim = jax.random.split(key)
    clean = augment.random_view(k_view, world, pitch_max_rad=np.deg2rad(pitch_max_deg))
    observed, valid = corrupt.simulate_estimator(k_sim, clean, fps=fps, **dict(simulator))
    return clean, observed, valid


def _check_fps(seq: Sequence, fps: float) -> None:
    if abs(seq.fps - fps) > 1e-3:
        raise ValueError(f"sequence {seq.name} is at {seq.fps} fps, expected {fps}")


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
    """Cuts ``sequences`` into windows (``windows.window_starts``), views and corrupts them
    reproducibly (same seed -> same set)."""
    clips = []
    for seq in sequences:
        _check_fps(seq, fps)
        if seq.joints.shape[0] < length:
            continue
        for start in windows.window_starts(seq.joints.shape[0], length, stride):
            clips.append((f"{seq.name}@{int(start)}", seq.joints[start:start + length]))
    if not clips:
        raise ValueError(f"no sequence has {length} frames or more")
    key = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(len(clips)))
    run = jax.vmap(_simulator(fps, simulator, pitch_max_deg))
    world = jnp.asarray(np.stack([w for _, w in clips]), jnp.float32)
    clean, observed, valid = (np.asarray(x) for x in run(keys, world))  # = clip by clip
    return EvalSet(clean, observed, valid, tuple(name for name, _ in clips))


VIEWS = ("plain", "fast")
FAST_SPEED = (1.5, 2.0)      # playback speed factors of the fast view
FAST_TURNS_PER_S = (0.25, 1.0)  # its whole-body rotation rates (either sense)


def fast_view(seed: int, index: int, world: np.ndarray, fps: float) -> np.ndarray:
    """Video ``index`` of the fast view, already sped up: ``world [T,17,3]`` turned
    about its pelvis by :func:`~stride_jax.data.augment.spin` (axis, sense and rate drawn
    from ``(seed, index)``; rate uniform in ``FAST_TURNS_PER_S`` turns per second)."""
    rng = np.random.default_rng([seed, index, 7])
    axis = int(rng.integers(len(augment.SPIN_AXES)))
    rate = rng.uniform(*FAST_TURNS_PER_S) * rng.choice([-1.0, 1.0]) / fps
    phase = rng.uniform(-np.pi, np.pi)
    return np.asarray(augment.spin(jnp.asarray(world, jnp.float32), rate, axis, phase))


def _speed_of(seed: int, name: str) -> float:
    """The fast view's playback speed of sequence ``name`` (fixed per seed)."""
    digest = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
    return float(np.random.default_rng([seed, digest, 11]).uniform(*FAST_SPEED))


def make_videos(sequences: Seq[Sequence], *, video_len: int, fps: float, seed: int,
                simulator: dict, max_videos: int = 0, pitch_max_deg: float = 10.0,
                view: str = "plain") -> tuple[list[Video], list[np.ndarray]]:
    """Cuts sequences into consecutive videos, views and corrupts them; returns
    ``(videos, ground truths)``; ``max_videos`` > 0 keeps that many, evenly spread.
    ``view="fast"`` plays each sequence faster and spins each video (:func:`fast_view`)."""
    if view not in VIEWS:
        raise ValueError(f"view={view!r}: choose one of {VIEWS}")
    chunks = []
    for seq in sequences:
        _check_fps(seq, fps)
        joints = seq.joints
        if view == "fast":
            joints = augment.speed_change(joints, _speed_of(seed, seq.name))
        n = joints.shape[0]
        for start in range(0, n, video_len):
            stop = min(start + video_len, n)
            if stop - start >= min(video_len, 60):
                chunks.append((f"{seq.name}@{start}", joints[start:stop]))
    if view == "fast":
        chunks = [(f"{name}:fast", fast_view(seed, i, world, fps))
                  for i, (name, world) in enumerate(chunks)]
    if max_videos and len(chunks) > max_videos:
        keep = np.linspace(0, len(chunks) - 1, max_videos).round().astype(int)
        chunks = [chunks[i] for i in keep]
    videos, truths = [], []
    key = jax.random.key(seed)
    for i, (name, world) in enumerate(chunks):
        clean, observed, valid = view_and_corrupt(jax.random.fold_in(key, i), world, fps=fps,
                                                  simulator=simulator,
                                                  pitch_max_deg=pitch_max_deg)
        videos.append(Video(observed, valid, name, fps=fps))
        truths.append(clean)
    return videos, truths
