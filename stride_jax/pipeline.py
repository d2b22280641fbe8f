"""Pipelines joining reading, estimation, alignment and rendering (below the CLIs).

* :func:`align_files`: pose files -> refined ``.npz`` files (``python -m stride_jax.align
  --input``).
* :func:`align_video_file`: a video -> BlazePose estimate -> alignment -> side-by-side
  rendering (``python -m stride_jax.align --video``).
* :func:`run_demo`: the embedded demo clips, occluded and noised, aligned and scored
  (``python -m stride_jax.align`` with no input).

The CLIs (``stride_jax.align``, ``stride_jax.estimate``) only parse flags and call these.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from stride_jax import corrupt, distributed, estimator, files, io, skeleton, video
from stride_jax.aligner import AlignResult, Video, align_videos
from stride_jax.checkpoint import Prior, load_prior
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.rotation_infill import pseudo_labels
from stride_jax.scoring import score

DEFAULT_PRIOR = Path(__file__).parent / "assets" / "prior_cpu"


def _summary_line(result: AlignResult, elapsed: float) -> str:
    occ = 100.0 * (1.0 - result.valid.mean()) if result.valid.size else 0.0
    if not result.ok:
        return f"{result.name}: FAILED ({result.error})"
    curve = result.loss_curve
    drop = f"loss {curve[0]:.4f} -> {curve[-1]:.4f}" if curve.size else "no TTT steps"
    track = f" [track {result.track}]" if result.track is not None else ""
    rate = f" at {result.fps:g} fps" if result.fps else ""
    return (f"{result.name}{track}: {result.refined.shape[0]} frames{rate}, {occ:.0f}% "
            f"undetected, {drop}, done at {elapsed:.1f} s")


def align_files(inputs: list[str], output: str | os.PathLike,
                config: ml_collections.ConfigDict, *,
                checkpoint_dir: str | os.PathLike = DEFAULT_PRIOR, units: str = "auto",
                min_confidence: float = 0.0, seed: int = 0, resume: bool = True) -> int:
    """Aligns pose files into ``output`` (one ``.npz`` per track, written atomically as
    soon as its bucket is done: ``refined``, ``pseudo``, ``valid``, ``loss_curve``, ``ok``,
    ``error``, ``track``, ``fps``).  A file's ``fps`` is honoured (module
    :mod:`stride_jax.aligner`); files without one are taken to be at the prior's rate.

    Multi-host (``jax.distributed`` started): every process lists the same inputs and
    takes its own share (``distributed.split_for_process``), aligns it on its local
    devices and writes its outputs; one summary line (process 0) covers the whole run.

    Returns:
      The exit code of the whole run: 0 every video aligned, 1 some failed or some input
      was unreadable.

    Raises:
      InputError: no input could be read; CheckpointError: the prior is missing or damaged.
    """
    t_start = time.perf_counter()
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    prior = load_prior(checkpoint_dir)
    all_paths = io.list_inputs(inputs)
    paths = distributed.split_for_process(all_paths)
    videos, targets, bad_files, skipped = [], [], 0, 0
    for path in paths:
        try:
            tracks = io.load_pose_file(path, units=units, min_confidence=min_confidence)
        except io.InputError as err:  # one bad file does not stop the others
            logging.error("%s", err)
            bad_files += 1
            continue
        multi = len(tracks) > 1
        for vid in io.to_videos(tracks):
            target = io.output_path(out_dir, vid.name, vid.track, multi)
            if resume and target.exists():
                logging.info("skip %s: %s exists (use --noresume to redo)", path, target)
                skipped += 1
                continue
            videos.append(vid)
            targets.append(target)
    t0 = time.perf_counter()
    failed = 0

    def write(index: int, result: AlignResult) -> None:
        nonlocal failed
        files.save_npz_atomic(targets[index], refined=result.refined, pseudo=result.pseudo,
                              valid=result.valid, loss_curve=result.loss_curve,
                              ok=np.bool_(result.ok), error=np.str_(result.error or ""),
                              track=np.str_(result.track or ""),
                              fps=np.float64(result.fps or prior.fps))
        failed += not result.ok
        logging.info("%s -> %s", _summary_line(result, time.perf_counter() - t0),
                     targets[index])

    if videos:
        _, timing = align_videos(videos, prior, config.ttt, seed=seed,
                                 max_batch=config.ttt.max_batch, progress=logging.info,
                                 on_result=write)
        logging.info("%d video(s) in %.1f s (compile %.1f s, run %.1f s); outputs in %s",
                     len(videos), time.perf_counter() - t0, timing.compile_s, timing.run_s,
                     out_dir.absolute())
    # Every process reaches this point (no early return), so the sums cannot hang.
    n_videos, n_failed, n_bad, n_skipped = (int(x) for x in distributed.sum_over_processes(
        [len(videos), failed, bad_files, skipped]))
    wall = distributed.max_over_processes(time.perf_counter() - t_start)
    if not n_videos and n_bad:
        raise io.InputError(f"none of the {n_bad} input file(s) could be read")
    if jax.process_index() == 0:
        logging.info("run: %d input file(s) over %d process(es), %d device(s): %d video(s) "
                     "aligned, %d failed, %d skipped (output exists), %d unreadable file(s) "
                     "in %.1f s; outputs in %s", len(all_paths), jax.process_count(),
                     jax.device_count(), n_videos - n_failed, n_failed, n_skipped, n_bad,
                     wall, out_dir.absolute())
    return 1 if n_failed or n_bad else 0


def run_demo(prior: Prior, config: ml_collections.ConfigDict, *,
             seed: int = 0) -> dict[str, Any]:
    """Aligns the embedded demo clips (held-out real climbing motion, Apache-2.0) after
    simulated occlusion and estimator noise; returns scores of the input's interpolation
    and of STRIDE against the ground truth, timing, and the arrays (``"arrays"``: clean,
    observed, valid, pseudo, refined ``[K,T,...]``, loss_curve, fps)."""
    world, fps = load_demo()
    clean = np.asarray(augment.world_to_camera(world))
    observed, valid = corrupt.simulate_estimator(jax.random.key(seed), clean, fps=fps,
                                                 **dict(config.simulator))
    observed, valid = np.asarray(observed), np.asarray(valid)
    videos = [Video(observed[i], valid[i], f"demo_{i}", fps=fps) for i in range(len(clean))]
    results, timing = align_videos(videos, prior, config.ttt, seed=seed,
                                   progress=logging.info)
    pseudo = np.stack([r.pseudo for r in results])
    refined = np.stack([r.refined for r in results])
    linear = np.stack([pseudo_labels(v.poses, v.valid, "linear") for v in videos])
    arrays = {"clean": clean, "observed": observed, "valid": valid, "pseudo": pseudo,
              "refined": refined, "loss_curve": np.stack([r.loss_curve for r in results]),
              "fps": np.float32(fps)}
    return {"interpolation": score(linear, clean, valid), "stride": score(refined, clean, valid),
            "timing": {"compile_s": timing.compile_s, "run_s": timing.run_s,
                       "videos": len(videos), "frames": int(clean.shape[1]),
                       "epochs": int(config.ttt.epochs),
                       "occluded_pct": 100.0 * float(1 - valid.mean())}, "arrays": arrays}


def format_demo(report: dict) -> str:
    """The demo's score table (mm) and timing line."""
    rows = ["demo: 2 held-out climbing clips (243 frames, 30 fps), "
            f"{report['timing']['occluded_pct']:.0f}% of frames undetected, estimator noise",
            f"{'method':<16}{'MPJPE':>8}{'occluded':>10}{'visible':>9}{'PA-MPJPE':>10}"
            f"{'Accel':>8}   (mm)"]
    for name in ("interpolation", "stride"):
        s = report[name]
        rows.append(f"{name:<16}{s['mpjpe']:>8.1f}{s['mpjpe_occ']:>10.1f}{s['mpjpe_vis']:>9.1f}"
                    f"{s['pa_mpjpe']:>10.1f}{s['accel']:>8.1f}")
    t = report["timing"]
    per_video = (f" ({t['run_s'] / t['videos']:.1f} s per {t['frames']}-frame video, "
                 f"{t['epochs']} epochs)" if t.get("videos") else "")
    rows.append(f"compile {t['compile_s']:.1f} s, test-time training {t['run_s']:.1f} s"
                + per_video)
    return "\n".join(rows)


def align_video_file(video_path: str | os.PathLike, output_dir: str | os.PathLike,
                     config: ml_collections.ConfigDict,
                     checkpoint_dir: str | os.PathLike = DEFAULT_PRIOR, *,
                     fps: float | None = None, seed: int = 0, resume: bool = True,
                     render: str = "auto") -> int:
    """Video -> per-frame estimate -> STRIDE alignment -> side-by-side rendering.

    Writes into ``output_dir``: ``estimates/<name>.npz`` (the estimator's pose file, see
    ``stride_jax.estimator``), ``<name>.npz`` (:func:`align_files` output: ``refined``
    etc.; one ``<name>__<k>.npz`` per track when the estimator's tracker switched person,
    see ``stride_jax.estimator.split_tracks``) and ``<name>_side_by_side.gif`` (``.mp4``
    beyond ``video.GIF_MAX_FRAMES`` frames when OpenCV is installed), whose 3D panel shows
    each track's refined poses on the frames from its first to its last detection.  With
    ``resume`` an existing estimate is reused and an existing alignment kept.

    Args:
      video_path: video file or directory of frame images.
      output_dir: output directory.
      config: a config with a ``ttt`` section (``configs/cpu.py``).
      checkpoint_dir: prior directory.
      fps: frame rate override (image directories default to 30).
      seed: alignment PRNG seed.
      resume: reuse existing outputs.
      render: ``"gif"``, ``"mp4"``, ``"auto"`` or ``"none"``.

    Returns:
      Exit code: 0 aligned and rendered, 1 the alignment failed, 2 nothing to align
      (no person detected in any frame).

    Raises:
      VideoError: unreadable input or missing estimator (exit code 2 in the CLI).
    """
    t_start = time.perf_counter()
    if render not in ("gif", "mp4", "auto", "none"):
        raise ValueError(f"render must be gif, mp4, auto or none, got {render!r}")
    reader = video.FrameReader(video_path, fps=fps)
    out = Path(output_dir)
    est_path = out / "estimates" / f"{reader.name}.npz"
    timings: list[str] = []
    if resume and est_path.exists():
        logging.info("reusing %s (delete it or pass --noresume to estimate again)", est_path)
    else:
        summary = estimator.estimate_video(video_path, est_path, fps=fps,
                                           progress=logging.info)
        logging.info("%s", summary.line())
        timings.append(f"estimator {summary.estimator_fps:.1f} frames/s "
                       f"({summary.frames / summary.total_fps:.1f} s with decoding)")
        if summary.detected == 0:
            logging.error("%s: no person detected in any of %d frames", video_path,
                          summary.frames)
            return 2
    t_align = time.perf_counter()
    code = align_files([str(est_path)], out, config, checkpoint_dir=checkpoint_dir,
                       units="m", seed=seed, resume=resume)
    t_align = time.perf_counter() - t_align
    if render == "none":
        return code
    with np.load(est_path) as est:
        stitched = _stitch_tracks(est, out, reader.name)
        if stitched is None:
            return code
        refined, raw, valid = stitched
        joints_2d, conf_2d = estimator.blazepose_to_h36m(est["landmarks_image"],
                                                         est["landmark_visibility"])
        rate = float(est["fps"])
    n = refined.shape[0]
    timings.append(f"alignment {t_align:.1f} s incl. prior loading and compilation "
                   f"({n / t_align:.1f} frames/s)")
    if render == "auto":
        render = "gif" if n <= video.GIF_MAX_FRAMES or not video.has_cv2() else "mp4"
    target = out / f"{reader.name}_side_by_side.{render}"
    t_render = time.perf_counter()
    video.render_side_by_side(reader, target, joints_2d=joints_2d, confidence_2d=conf_2d,
                              refined=refined, valid=valid, fps=rate, estimate_3d=raw)
    timings.append(f"rendering {time.perf_counter() - t_render:.1f} s")
    logging.info("rendering: %s", target.absolute())
    logging.info("%s: %d frames in %.1f s: %s", reader.name, n,
                 time.perf_counter() - t_start, "; ".join(timings))
    return code


def _stitch_tracks(est: Any, out: Path, name: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One ``(T, 17, 3)`` timeline of refined and raw poses from the aligned track files,
    and the ``(T,)`` frames with a detection: each track owns the frames from its first to
    its last detection (tracks of a single-person tracker do not overlap in time); frames
    owned by none are NaN.  None when an aligned file is missing or its alignment failed."""
    frame_track = np.asarray(est["frame_track"])
    n_tracks = int(frame_track.max()) + 1
    poses = np.asarray(est["poses"], np.float32)
    refined = np.full((frame_track.shape[0], skeleton.NUM_JOINTS, 3), np.nan, np.float32)
    raw = refined.copy()
    for k in range(n_tracks):
        path = io.output_path(out, name, str(k), multi=n_tracks > 1)
        if not path.exists():
            return None
        with np.load(path) as aligned:
            if not bool(aligned["ok"]):
                return None
            frames = np.flatnonzero(frame_track == k)
            span = slice(frames[0], frames[-1] + 1)
            refined[span] = aligned["refined"][span]
            raw[span] = (poses if n_tracks == 1 else poses[k])[span]
    return refined, raw, frame_track >= 0
