"""Cutting sequences into overlapping windows, stitching them back, sampling clips.

Host-side numpy helpers (:func:`window_starts`, :func:`pad_to`,
:func:`cut_windows`, :func:`stitch`, :class:`ClipSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from stride_jax.data.augment import speed_change

_BLENDS = ("triangle", "hann", "uniform")


def _check_length_stride(length: int, stride: int) -> None:
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 1 <= stride <= length:
        raise ValueError(f"stride must be in [1, length={length}] to cover every frame, "
                         f"got {stride}")


def window_starts(n_frames: int, length: int, stride: int) -> np.ndarray:
    """Start frames of windows of ``length`` frames covering ``n_frames`` frames.

    Starts are ``0, stride, 2*stride, ...``, plus a last window flush with the
    end if the grid does not reach it.  A sequence with ``n_frames <= length``
    gives the single start ``0`` (pad it with :func:`pad_to`).

    Returns:
      int64 ``[W]`` increasing starts.
    """
    _check_length_stride(length, stride)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if n_frames <= length:
        return np.zeros((1,), np.int64)
    starts = np.arange(0, n_frames - length + 1, stride, dtype=np.int64)
    if starts[-1] + length < n_frames:
        starts = np.append(starts, n_frames - length)
    return starts


def pad_to(x: np.ndarray, length: int, *, mode: str = "edge") -> tuple[np.ndarray, np.ndarray]:
    """Pads ``x [T, ...]`` along time to ``length`` frames.

    Args:
      x: ``[T, ...]`` with ``1 <= T <= length``.
      length: target frame count.
      mode: ``"edge"`` repeats the last frame, ``"zero"`` pads with zeros.

    Returns:
      ``(padded [length, ...], mask bool [length])``, mask True on real frames.
    """
    x = np.asarray(x)
    if x.ndim < 1 or not 1 <= x.shape[0] <= length:
        raise ValueError(f"x must be [T, ...] with 1 <= T <= {length}, got {x.shape}")
    if mode not in ("edge", "zero"):
        raise ValueError(f"mode must be 'edge' or 'zero', got {mode!r}")
    n_pad = length - x.shape[0]
    widths = [(0, n_pad)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, widths, mode="edge" if mode == "edge" else "constant")
    return padded, np.arange(length) < x.shape[0]


def cut_windows(x: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Cuts ``x [T, ...]`` into ``[W, length, ...]`` windows at :func:`window_starts`.

    A sequence shorter than ``length`` is edge-padded into one window.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must be [T, ...], got {x.shape}")
    starts = window_starts(x.shape[0], length, stride)
    if x.shape[0] < length:
        x, _ = pad_to(x, length)
    return x[starts[:, None] + np.arange(length)]


def blend_weights(length: int, blend: str = "triangle") -> np.ndarray:
    """Positive per-frame weights ``[length]`` for overlap-add stitching.

    ``"triangle"``: ``min(i + 1, length - i)`` (integers, so float64 stitching
    of identical overlaps is exact); ``"hann"``: ``sin^2(pi (i + 0.5) / length)``;
    ``"uniform"``: ones.
    """
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS}, got {blend!r}")
    i = np.arange(length, dtype=np.float64)
    if blend == "triangle":
        return np.minimum(i + 1, length - i)
    if blend == "hann":
        return np.sin(np.pi * (i + 0.5) / length) ** 2
    return np.ones(length)


def _stitch_plan(
    shape: tuple[int, ...], starts: np.ndarray, n_frames: int, blend: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checks inputs; returns (frame index [W, L], weights [L], weight sum [T])."""
    if len(shape) < 2:
        raise ValueError(f"windows must be [W, L, ...], got {shape}")
    starts = np.asarray(starts, np.int64).reshape(-1)
    n_windows, length = shape[:2]
    if starts.shape[0] != n_windows:
        raise ValueError(f"got {starts.shape[0]} starts for {n_windows} windows")
    if n_frames < 1 or (starts < 0).any() or (starts >= n_frames).any():
        raise ValueError(f"starts must lie in [0, n_frames={n_frames}), got {starts}")
    index = starts[:, None] + np.arange(length)
    weights = blend_weights(length, blend)
    inside = index < n_frames
    total = np.bincount(index[inside], np.broadcast_to(weights, index.shape)[inside],
                        minlength=n_frames)
    if (total <= 0).any():
        raise ValueError(f"windows leave frames uncovered: {np.flatnonzero(total <= 0)[:10]}")
    return index, weights, total


def stitch(
    windows: np.ndarray, starts: np.ndarray, n_frames: int, *, blend: str = "triangle"
) -> np.ndarray:
    """Overlap-adds windows into one sequence with cross-fading weights.

    Every output frame is the weighted mean of the windows covering it, weights
    from :func:`blend_weights`; window frames past ``n_frames`` (padding) are
    dropped.  ``stitch(cut_windows(x, L, s), window_starts(len(x), L, s), len(x))
    == x`` exactly with the default triangle blend.

    Args:
      windows: ``[W, L, ...]``.
      starts: ``[W]`` start frame of each window.
      n_frames: output length ``T``.
      blend: ``"triangle"``, ``"hann"`` or ``"uniform"``.

    Returns:
      ``[T, ...]`` array of the windows' dtype (accumulated in float64).
    """
    windows = np.asarray(windows)
    index, weights, total = _stitch_plan(windows.shape, starts, n_frames, blend)
    rest = windows.shape[2:]
    out = np.zeros((n_frames,) + rest, np.float64)
    w = weights.reshape((-1,) + (1,) * len(rest))
    for k, start in enumerate(index[:, 0]):
        n = min(windows.shape[1], n_frames - start)
        out[start:start + n] += w[:n] * windows[k, :n]
    return (out / total.reshape((-1,) + (1,) * len(rest))).astype(windows.dtype)


class ClipSampler(Iterator[np.ndarray]):
    """Infinite, seeded, resumable iterator over random training clips.

    Each epoch visits every ``(sequence, start)`` pair with starts from
    :func:`window_starts` (``length``, ``stride``) once, in an order shuffled by
    ``(seed, epoch)``.  With ``speed_range=(s_min, s_max)`` each clip gets a
    playback factor ``f`` uniform in that range (drawn with the order): a source
    span of ``round((length - 1) * f) + 1`` frames from the start (moved back to
    fit, shortened if the sequence is too short; ``f`` is then quantised to
    ``(span - 1) / (length - 1)``) is resampled with
    :func:`~stride_jax.data.augment.speed_change` to ``length`` frames.
    Sequences shorter than ``length`` are skipped.  Batches run across epoch
    boundaries.  State is ``(epoch, position)`` (see :meth:`state_dict`).  With
    ``shard=(i, n)`` (data-parallel processes) it yields only rows
    ``[i * B / n, (i + 1) * B / n)`` of each batch of ``batch_size = B`` clips, and the
    state still counts whole batches, so every process shares it.

    Yields:
      float32 ``[batch_size, length, ...]`` (e.g. ``[B, length, 17, 3]``).
    """

    def __init__(
        self,
        sequences: Sequence[np.ndarray],
        *,
        length: int,
        stride: int,
        batch_size: int,
        seed: int = 0,
        speed_range: tuple[float, float] | None = None,
        shuffle: bool = True,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        _check_length_stride(length, stride)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, "
                             f"got {shard}")
        if batch_size % count:
            raise ValueError(f"batch_size {batch_size} is not divisible by the shard "
                             f"count {count}")
        per = batch_size // count
        self._keep = range(index * per, (index + 1) * per)
        if speed_range is not None and not 0 < speed_range[0] <= speed_range[1]:
            raise ValueError(f"speed_range must satisfy 0 < s_min <= s_max, got {speed_range}")
        seqs = [np.asarray(s, np.float32) for s in sequences]
        if any(s.ndim < 1 or s.shape[1:] != seqs[0].shape[1:] for s in seqs):
            raise ValueError("sequences must be [T_i, ...] with equal trailing shapes")
        self._seqs = [s for s in seqs if s.shape[0] >= length]
        if not self._seqs:
            raise ValueError(f"no sequence has at least length={length} frames")
        self._items = np.array(
            [(i, st) for i, s in enumerate(self._seqs)
             for st in window_starts(s.shape[0], length, stride)], np.int64)
        self._length, self._batch_size, self._seed = length, batch_size, seed
        self._speed_range, self._shuffle = speed_range, shuffle
        self._epoch, self._position = 0, 0
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None

    @property
    def clips_per_epoch(self) -> int:
        """Number of clips in one epoch."""
        return len(self._items)

    def state_dict(self) -> dict[str, int]:
        """Position of the next clip: ``{"epoch": e, "position": p}``."""
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resumes from a :meth:`state_dict`; the next batches repeat the original run."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < len(self._items):
            raise ValueError(f"bad sampler state {state} for {len(self._items)} clips/epoch")
        self._epoch, self._position = epoch, position

    def _epoch_plan(self) -> tuple[np.ndarray, np.ndarray]:
        """(order [N], speed factors [N]) of the current epoch, cached."""
        if self._plan is None or self._plan[0] != self._epoch:
            rng = np.random.default_rng([self._seed, self._epoch])
            n = len(self._items)
            order = rng.permutation(n) if self._shuffle else np.arange(n)
            lo, hi = self._speed_range or (1.0, 1.0)
            factors = rng.uniform(lo, hi, n) if self._speed_range else np.ones(n)
            self._plan = (self._epoch, order, factors)
        return self._plan[1], self._plan[2]

    def _clip(self, item: int, factor: float) -> np.ndarray:
        seq_id, start = self._items[item]
        seq = self._seqs[seq_id]
        if factor == 1.0 or self._length == 1:
            return seq[start:start + self._length]
        # Quantise the factor so that the span resamples to exactly `length` frames.
        span = min(max(int(round((self._length - 1) * factor)), 1) + 1, seq.shape[0])
        factor = (span - 1) / max(self._length - 1, 1)
        start = min(start, seq.shape[0] - span)
        return speed_change(seq[start:start + span], factor)[:self._length]

    def __iter__(self) -> ClipSampler:
        return self

    def __next__(self) -> np.ndarray:
        clips = []
        for row in range(self._batch_size):
            order, factors = self._epoch_plan()
            if row in self._keep:
                item = order[self._position]
                clips.append(self._clip(int(item), float(factors[self._position])))
            self._position += 1
            if self._position == len(self._items):
                self._epoch, self._position = self._epoch + 1, 0
        return np.stack(clips).astype(np.float32)
