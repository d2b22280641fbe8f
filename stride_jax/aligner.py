"""Library core of test-time alignment: ``align_videos`` for many videos at once.

Per video, frames without a detection are filled by linear interpolation (constant at the
ends) to make pseudo-labels; a copy of the prior is fine-tuned on the video's overlapping
windows with the STRIDE losses; the prediction is stitched back (triangular cross-fade)
and the pseudo-label pelvis trajectory is added back.  Short videos get the smallest window
of ``ttt.length_buckets`` that holds them (81 / 162 / 243 frames), not a padded full
window.  Videos are bucketed by (window count, window width); each bucket runs as
compiled ``jit(vmap(scan))`` calls of :func:`videos_per_call` videos (``stride_jax.ttt``;
``ttt.vmap_width`` of them side by side per device, the rest group after group).

Frame rates: the prior and the velocity loss assume the prior's rate (``Prior.fps``, 30).
A video with another ``fps`` is resampled to it (cubic spline through the in-filled input;
a resampled frame counts as detected when the input frames on both sides of it are),
aligned, and its refined poses are sampled back at the input's frame times.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from stride_jax import model_input, skeleton
from stride_jax import progress as progress_lib
from stride_jax import ttt as ttt_lib
from stride_jax.checkpoint import Prior
from stride_jax.data import resample, windows
from stride_jax.interpolate import fill_missing
from stride_jax.model import build_model
from stride_jax.rotation_infill import pseudo_labels


@dataclasses.dataclass
class Video:
    """One person track: ``poses (T,17,3)`` metres (camera axes), ``valid (T,)`` detections,
    ``fps`` its frame rate (None: the prior's rate)."""

    poses: np.ndarray
    valid: np.ndarray
    name: str = "video"
    track: str | None = None
    fps: float | None = None


@dataclasses.dataclass
class AlignResult:
    """Output for one video.

    Attributes:
      refined: ``(T,17,3)`` STRIDE output, metres, with the pseudo-label pelvis trajectory.
      pseudo: ``(T,17,3)`` the interpolated input (pseudo-labels).
      loss_curve: ``(epochs,)`` test-time loss per step.
      ok: False when the video was not aligned (``error`` says why); then ``refined`` is
        the pseudo-label (or NaN when there was nothing to interpolate).
      fps: frame rate of the arrays (the input's; None: the prior's rate).
    """

    name: str
    track: str | None
    refined: np.ndarray
    pseudo: np.ndarray
    valid: np.ndarray
    loss_curve: np.ndarray
    ok: bool
    error: str | None = None
    fps: float | None = None


@dataclasses.dataclass
class AlignTiming:
    """Seconds spent compiling and running, per ``(K, N, W)`` bucket shape."""

    compile_s: float = 0.0
    run_s: float = 0.0
    buckets: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Prepared:
    index: int
    windows: np.ndarray  # [N, W, J, dim_in] root-relative pseudo-labels (+ detections)
    weights: np.ndarray  # [N, W]
    frame_mask: np.ndarray  # [N, W]
    starts: np.ndarray
    pseudo: np.ndarray  # [T, J, 3]


def window_length(frames: int, ttt: ml_collections.ConfigDict) -> int:
    """Window width for a video of ``frames`` frames: the smallest of
    ``ttt.length_buckets`` that holds it (so short videos are not padded to
    ``ttt.window``), else ``ttt.window`` (longer videos: overlapping windows)."""
    for width in sorted(int(b) for b in ttt.get("length_buckets", ())):
        if frames <= width <= ttt.window:
            return width
    return int(ttt.window)


def _prepare(index: int, video: Video, ttt: ml_collections.ConfigDict,
             dim_in: int = 3) -> _Prepared:
    poses = np.asarray(video.poses, np.float32)
    valid = np.asarray(video.valid, bool)
    pseudo = pseudo_labels(poses, valid, ttt.get("infill", "linear"))
    rr = skeleton.root_relative(pseudo)
    n, w = poses.shape[0], window_length(poses.shape[0], ttt)
    frame_w = np.where(valid, 1.0, ttt.interp_weight).astype(np.float32)
    if n < w:
        pad = w - n
        win = np.concatenate([rr, np.repeat(rr[-1:], pad, axis=0)])[None]
        weights = np.concatenate([frame_w, np.zeros(pad, np.float32)])[None]
        mask = (np.arange(w) < n)[None]
        starts = np.zeros(1, np.int64)
    else:
        starts = windows.window_starts(n, w, ttt.stride)
        win = windows.cut_windows(rr, w, ttt.stride)
        weights = windows.cut_windows(frame_w, w, ttt.stride)
        mask = np.ones(weights.shape, bool)
    if dim_in != 3:  # the model's detection channel: 1 detected, 0 in-filled or padding
        det = np.concatenate([valid, np.zeros(max(w - n, 0), bool)]).astype(np.float32)
        det = det[None] if n < w else windows.cut_windows(det, w, ttt.stride)
        win = np.asarray(model_input.make_input(win, det, dim_in))
    return _Prepared(index, win, weights, mask, starts, pseudo)


def videos_per_call(ttt: ml_collections.ConfigDict, devices: int, platform: str,
                    bytes_per_video: int | None = None,
                    memory_limit: int | None = None) -> int:
    """How many videos go into one compiled call (a multiple of ``devices``).

    ``ttt.max_batch > 0`` caps it.  ``ttt.max_batch = 0`` (auto): on CPU one video per
    device per call (``scripts/bench_align.py`` measures a Python loop of one-video calls
    faster per video than ``vmap`` over several on XLA's CPU backend), elsewhere 16 per
    device.  A memory budget (``ttt.max_memory_gb``, 0: ``memory_limit``, the device's
    own) lowers it to what fits, from ``bytes_per_video`` (``memory_analysis`` of a
    one-video call).
    """
    cap = int(ttt.get("max_batch", 0)) or (devices if platform == "cpu" else 16 * devices)
    budget_gb = float(ttt.get("max_memory_gb", 0.0))
    budget = budget_gb * 2**30 if budget_gb > 0 else memory_limit
    if budget and bytes_per_video:
        cap = min(cap, max(1, int(0.9 * budget // bytes_per_video)) * devices)
    return max(devices, cap // devices * devices)


def device_memory_limit(device: jax.Device) -> int | None:
    """Bytes one device may allocate: ``memory_stats()['bytes_limit']`` on accelerators,
    the machine's physical memory shared by the local devices on CPU, None if unknown."""
    if device.platform == "cpu":
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
        return total // max(1, len(jax.local_devices()))
    try:
        stats = device.memory_stats() or {}
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    return stats.get("bytes_limit")


def _stitch(pred: np.ndarray, prep: _Prepared) -> np.ndarray:
    n = prep.pseudo.shape[0]
    if prep.starts.size == 1 and n <= pred.shape[1]:
        rr = pred[0, :n]
    else:
        rr = windows.stitch(pred[: prep.starts.size], prep.starts, n)
    return rr + prep.pseudo[:, :1]


def _needs_resampling(video: Video, rate: float) -> bool:
    return video.fps is not None and not np.isclose(video.fps, rate, rtol=1e-6, atol=0.0)


def _to_rate(video: Video, rate: float) -> Video:
    """``video`` at the prior's ``rate`` (unchanged when it is already at that rate)."""
    if not _needs_resampling(video, rate) or not np.asarray(video.valid, bool).any():
        return video
    filled = np.asarray(fill_missing(np.asarray(video.poses, np.float32),
                                     np.asarray(video.valid, bool)))
    poses, valid = resample.resample_track(filled, video.valid, video.fps, rate)
    return dataclasses.replace(video, poses=poses, valid=valid, fps=rate)


def _at_input_rate(result: AlignResult, video: Video, rate: float,
                   infill: str) -> AlignResult:
    """A result computed at the prior's ``rate`` sampled back at ``video``'s frame times."""
    if not _needs_resampling(video, rate) or not np.asarray(video.valid, bool).any():
        return dataclasses.replace(result, fps=video.fps)
    valid = np.asarray(video.valid, bool)
    pseudo = pseudo_labels(np.asarray(video.poses, np.float32), valid, infill)
    times = np.arange(valid.size) / video.fps
    refined = (resample.sample_at(result.refined, rate, times).astype(np.float32)
               if result.ok else pseudo)
    return dataclasses.replace(result, refined=refined, pseudo=pseudo, valid=valid,
                               fps=video.fps)


def align_videos(videos: Sequence[Video], prior: Prior, ttt: ml_collections.ConfigDict, *,
                 seed: int = 0, max_batch: int | None = None, use_mesh: bool = True,
                 progress: Callable[[str], None] | None = None,
                 on_result: Callable[[int, AlignResult], None] | None = None,
                 ) -> tuple[list[AlignResult], AlignTiming]:
    """Aligns every video; one compiled call per bucket of at most ``max_batch`` videos.

    Videos whose ``fps`` differs from ``prior.fps`` are aligned at the prior's rate and
    returned at their own frame times (module docstring).

    Args:
      videos: inputs (poses in metres, camera axes; ``valid`` marks detections).
      prior: the motion prior (:func:`stride_jax.checkpoint.load_prior`).
      ttt: ``config.ttt`` (window, stride, epochs, lr, weight_decay, lr_decay, loss,
        interp_weight, flip_average, infill: the pseudo-labels' in-fill).
      seed: base PRNG seed (per-video keys are ``fold_in(seed, video index)``).
      max_batch: largest K in one call (None or 0: :func:`videos_per_call`).
      use_mesh: shard the video axis over all local devices when there are several.
      progress: optional callback for one-line progress messages; with it every compiled
        call also shows its epochs (``progress.EpochProgress``: a bar on a terminal,
        lines through ``progress`` otherwise).
      on_result: optional ``(video_index, result)`` callback, called as soon as a video's
        bucket is done (the CLI writes outputs there, so a killed run keeps them).

    Returns:
      Per-video results (input order, each at its input's frame rate) and timing.  A
      video with no valid frame is not aligned and comes back with ``ok=False`` and an
      ``error``; the batch goes on.
    """
    rate = prior.fps
    at_rate = [_to_rate(v, rate) for v in videos]
    results: list[AlignResult | None] = [None] * len(videos)

    def done(i: int, result: AlignResult) -> None:
        results[i] = _at_input_rate(result, videos[i], rate, ttt.get("infill", "linear"))
        if on_result:
            on_result(i, results[i])

    _, timing = _align_at_prior_rate(at_rate, prior.params, prior.model, ttt, seed=seed,
                                     max_batch=max_batch, use_mesh=use_mesh,
                                     progress=progress, on_result=done)
    return results, timing


def _align_at_prior_rate(videos: Sequence[Video], params: Any, model_config: dict,
                         ttt: ml_collections.ConfigDict, *, seed: int = 0,
                         max_batch: int | None = None, use_mesh: bool = True,
                         progress: Callable[[str], None] | None = None,
                         on_result: Callable[[int, AlignResult], None] | None = None,
                         ) -> tuple[list[AlignResult], AlignTiming]:
    """:func:`align_videos` on videos already at the prior's rate.

    Args:
      videos: inputs (poses in metres, camera axes; ``valid`` marks detections).
      params: prior parameters; model_config: its ``config.model``.
      ttt: ``config.ttt`` (window, stride, epochs, lr, weight_decay, lr_decay, loss,
        interp_weight, flip_average, infill: the pseudo-labels' in-fill).
      seed: base PRNG seed (per-video keys are ``fold_in(seed, video index)``).
      max_batch: largest K in one call (None or 0: :func:`videos_per_call`).
      use_mesh: shard the video axis over all local devices when there are several.
      progress: optional callback for one-line progress messages.
      on_result: optional ``(video_index, result)`` callback, called as soon as a video's
        bucket is done (the CLI writes outputs there, so a killed run keeps them).

    Returns:
      Per-video results (input order) and timing.  A video with no valid frame is not
      aligned and comes back with ``ok=False`` and an ``error``; the batch goes on.
    """
    if ttt.window > model_config["maxlen"]:
        raise ValueError(f"ttt.window {ttt.window} exceeds the prior's maxlen "
                         f"{model_config['maxlen']}")
    model = build_model(model_config)
    results: list[AlignResult | None] = [None] * len(videos)
    prepared: list[_Prepared] = []
    for i, video in enumerate(videos):
        valid = np.asarray(video.valid, bool)
        if not valid.any():
            nan = np.full(np.shape(video.poses), np.nan, np.float32)
            results[i] = AlignResult(video.name, video.track, nan, nan, valid,
                                     np.zeros(0, np.float32), False, "no valid frame")
            if on_result:
                on_result(i, results[i])
            continue
        prepared.append(_prepare(i, video, ttt, model.dim_in))
    mesh = ttt_lib.video_mesh() if use_mesh else None
    multiple = mesh.size if mesh is not None else 1
    device = jax.local_devices()[0]
    buckets: dict[tuple[int, int], list[_Prepared]] = {}
    for prep in prepared:
        buckets.setdefault(prep.windows.shape[:2], []).append(prep)
    timing = AlignTiming()
    fresh: set[tuple[int, int, int]] = set()  # shapes compiled by this call
    base = jax.random.key(seed)

    def compiled(shape: tuple[int, int, int]) -> ttt_lib.CompiledTTT:
        fn, hit = ttt_lib.compile_ttt_cached(model, ttt, params, shape, mesh)
        if not hit:
            fresh.add(shape)
            timing.compile_s += fn.compile_s
        return fn

    for (n_windows, width), group in sorted(buckets.items()):
        limit = max_batch or videos_per_call(ttt, multiple, device.platform)
        if not max_batch and limit > multiple:  # fit the memory budget
            per_video = compiled((multiple, n_windows, width)).bytes // multiple
            limit = videos_per_call(ttt, multiple, device.platform, per_video,
                                    device_memory_limit(device))
        for lo in range(0, len(group), limit):
            chunk = group[lo: lo + limit]
            k = -(-len(chunk) // multiple) * multiple
            shape = (k, n_windows, width)
            fn = compiled(shape)
            fill = chunk + [chunk[0]] * (k - len(chunk))
            inputs = np.stack([p.windows for p in fill])
            weights = np.stack([p.weights for p in fill])
            weights[len(chunk):] = 0.0
            masks = np.stack([p.frame_mask for p in fill])
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(
                np.array([p.index for p in fill]))
            t0 = time.perf_counter()
            one_by_one = "" if fn.groups == 1 else f", {fn.width} at a time"
            bar = (progress_lib.EpochProgress(fn.reported_epochs, f"TTT of {len(chunk)} "
                                              f"video(s) x {n_windows} window(s) of {width} "
                                              f"frames{one_by_one}", log=progress)
                   if progress else None)
            pred, curves, ok = ttt_lib.run_compiled(fn, params, inputs, weights,
                                                    masks, keys, on_epoch=bar)
            run_s = time.perf_counter() - t0
            timing.run_s += run_s
            timing.buckets.append({"shape": shape, "videos": len(chunk), "run_s": run_s,
                                   "compile_s": fn.compile_s, "bytes": fn.bytes,
                                   "compiled_now": shape in fresh})
            for j, prep in enumerate(chunk):
                video = videos[prep.index]
                good = bool(ok[j])
                results[prep.index] = AlignResult(
                    video.name, video.track,
                    _stitch(pred[j], prep) if good else prep.pseudo, prep.pseudo,
                    np.asarray(video.valid, bool), curves[j], good,
                    None if good else "diverged (non-finite loss); returned the interpolation")
                if on_result:
                    on_result(prep.index, results[prep.index])
            if progress:
                progress(f"aligned {len(chunk)} video(s) of {n_windows} window(s) of {width} "
                         f"frames in {run_s:.2f} s (compile {fn.compile_s:.2f} s"
                         f"{'' if shape in fresh else ', earlier'}, "
                         f"{fn.bytes / 2**30:.2f} GiB)")
    return results, timing
