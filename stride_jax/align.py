"""Test-time alignment of many videos at once: ``python -m stride_jax.align``.

    python -m stride_jax.align                        # embedded demo (real motion, simulated occlusion)
    python -m stride_jax.align --video IN.mp4 --output OUT_DIR   # needs requirements-video.txt
    python -m stride_jax.align --input DIR_OR_FILES --output OUT_DIR [--checkpoint PRIOR_DIR]
                               [--units auto|m|mm] [--config.ttt.epochs=30]

Inputs (``stride_jax.io``): ``.npz`` (``poses`` (T,17,3) or (P,T,17,3) Human3.6M-17 in
metres or millimetres, optional ``valid``, ``confidence``, ``track_ids``, ``fps``), ``.npy``
(NaN frames = no detection) and ``.json``.  Each person track is one more video in the
batch.  Outputs: one ``.npz`` per input track (``refined``, ``pseudo``, ``valid``,
``loss_curve``, ``ok``, ``error``), written atomically; rerunning skips inputs whose
outputs exist, so a killed run resumes where it stopped.

Exit codes: 0 every video aligned; 1 some videos failed (their outputs say why; the others
are written); 2 nothing could be run (bad flags, unreadable inputs, missing prior).

Library: ``align_videos`` (re-exported from ``stride_jax.aligner``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from stride_jax import checkpoint, corrupt, logs
from stride_jax.aligner import AlignResult, AlignTiming, Video, align_videos
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.scoring import score

__all__ = ["AlignResult", "AlignTiming", "Video", "align_videos", "DEFAULT_PRIOR", "run_demo"]

DEFAULT_PRIOR = Path(__file__).parent / "assets" / "prior_cpu"
_DEFAULT_CONFIG = str(Path(__file__).parent.parent / "configs" / "cpu.py")

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so modules can be
    imported together)."""
    config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG, "Config file whose `ttt` section sets the test-time training "
        "(window, stride, epochs, lr, loss weights); the model comes from --checkpoint.",
        lock_config=True)
    flags.DEFINE_list("input", [], "Pose files or directories (.npz/.npy/.json). Empty: "
                      "run the embedded demo.")
    flags.DEFINE_string("output", "runs/align", "Directory for the refined .npz files.")
    flags.DEFINE_string("checkpoint", str(DEFAULT_PRIOR),
                        "Prior directory (from pretrain or the MotionBERT converter).")
    flags.DEFINE_enum("units", "auto", ["auto", "m", "mm"],
                      "Units of input poses; auto detects metres vs millimetres.")
    flags.DEFINE_float("min_confidence", 0.0, "Frames whose mean joint confidence "
                       "(0..1) is below this count as undetected.")
    flags.DEFINE_integer("seed", 0, "PRNG seed (results are deterministic given it).")
    flags.DEFINE_bool("resume", True, "Skip inputs whose outputs already exist.")
    flags.DEFINE_string("video", None, "A video file or a directory of frame images: "
                        "estimate 3D poses (MediaPipe, requirements-video.txt), align "
                        "them and render a side-by-side video into --output.")
    flags.DEFINE_enum("render", "auto", ["auto", "gif", "mp4", "none"],
                      "With --video: the side-by-side rendering's format; auto is a GIF "
                      "up to 120 frames and an MP4 beyond.")


def run_demo(params, model_config: dict, config: ml_collections.ConfigDict, *,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Aligns the embedded demo clips (held-out real climbing motion, Apache-2.0) after
    simulated occlusion and estimator noise; returns scores of the input's interpolation
    and of STRIDE against the ground truth, timing, and the arrays (``"arrays"``: clean,
    observed, valid, pseudo, refined ``[K,T,...]``, loss_curve, fps)."""
    world, fps = load_demo()
    clean = np.asarray(augment.world_to_camera(world))
    observed, valid = corrupt.simulate_estimator(jax.random.key(seed), clean, fps=fps,
                                                 **dict(config.simulator))
    observed, valid = np.asarray(observed), np.asarray(valid)
    videos = [Video(observed[i], valid[i], f"demo_{i}") for i in range(len(clean))]
    results, timing = align_videos(videos, params, model_config, config.ttt, seed=seed,
                                   progress=logging.info)
    pseudo = np.stack([r.pseudo for r in results])
    refined = np.stack([r.refined for r in results])
    arrays = {"clean": clean, "observed": observed, "valid": valid, "pseudo": pseudo,
              "refined": refined, "loss_curve": np.stack([r.loss_curve for r in results]),
              "fps": np.float32(fps)}
    return {"interpolation": score(pseudo, clean, valid), "stride": score(refined, clean, valid),
            "timing": {"compile_s": timing.compile_s, "run_s": timing.run_s,
                       "occluded_pct": 100.0 * float(1 - valid.mean())}, "arrays": arrays}


def _summary_line(result: AlignResult, elapsed: float) -> str:
    occ = 100.0 * (1.0 - result.valid.mean()) if result.valid.size else 0.0
    if not result.ok:
        return f"{result.name}: FAILED ({result.error})"
    curve = result.loss_curve
    drop = f"loss {curve[0]:.4f} -> {curve[-1]:.4f}" if curve.size else "no TTT steps"
    track = f" [track {result.track}]" if result.track is not None else ""
    return (f"{result.name}{track}: {result.refined.shape[0]} frames, {occ:.0f}% undetected, "
            f"{drop}, done at {elapsed:.1f} s")


def align_files(inputs: list[str], output: str | Path, config: ml_collections.ConfigDict, *,
                checkpoint_dir: str | Path = DEFAULT_PRIOR, units: str = "auto",
                min_confidence: float = 0.0, seed: int = 0, resume: bool = True) -> int:
    """Aligns pose files into ``output``; returns the exit code (0 ok, 1 some failed)."""
    from stride_jax import io  # the file layer (validation, atomic writes)

    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    params, model_config, _ = checkpoint.load_prior(checkpoint_dir)
    videos, targets, bad_files = [], [], 0
    for path in io.list_inputs(inputs):
        try:
            tracks = io.load_pose_file(path, units=units, min_confidence=min_confidence)
        except io.InputError as err:  # one bad file does not stop the others
            logging.error("%s", err)
            bad_files += 1
            continue
        multi = len(tracks) > 1
        for video in io.to_videos(tracks):
            target = io.output_path(out_dir, video.name, video.track, multi)
            if resume and target.exists():
                logging.info("skip %s: %s exists (use --noresume to redo)", path, target)
                continue
            videos.append(video)
            targets.append(target)
    if not videos:
        if bad_files:
            raise io.InputError(f"none of the {bad_files} input file(s) could be read")
        logging.info("nothing to do: every output exists in %s", out_dir)
        return 0
    t0 = time.perf_counter()
    failed = 0

    def write(index: int, result: AlignResult) -> None:
        nonlocal failed
        io.save_npz_atomic(targets[index], refined=result.refined, pseudo=result.pseudo,
                           valid=result.valid, loss_curve=result.loss_curve,
                           ok=np.bool_(result.ok), error=np.str_(result.error or ""),
                           track=np.str_(result.track or ""))
        failed += not result.ok
        logging.info("%s -> %s", _summary_line(result, time.perf_counter() - t0),
                     targets[index])

    _, timing = align_videos(videos, params, model_config, config.ttt, seed=seed,
                             max_batch=config.ttt.max_batch, progress=logging.info,
                             on_result=write)
    logging.info("%d video(s) in %.1f s (compile %.1f s, run %.1f s); outputs in %s",
                 len(videos), time.perf_counter() - t0, timing.compile_s, timing.run_s,
                 out_dir.absolute())
    return 1 if failed or bad_files else 0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: pass inputs with --input")
    logs.setup()
    config = FLAGS.config
    try:
        if FLAGS.video:
            if FLAGS.input:
                raise app.UsageError("pass either --video or --input, not both")
            from stride_jax.video import align_video_file
            sys.exit(align_video_file(FLAGS.video, FLAGS.output, config, FLAGS.checkpoint,
                                      seed=FLAGS.seed, resume=FLAGS.resume,
                                      render=FLAGS.render, align_files=align_files))
        if not FLAGS.input:
            params, model_config, meta = checkpoint.load_prior(FLAGS.checkpoint)
            logging.info("demo: prior %s (%s)", FLAGS.checkpoint, meta.get("description", ""))
            report = run_demo(params, model_config, config, seed=FLAGS.seed)
            print(_format_demo(report))
            out = Path(FLAGS.output)
            out.mkdir(parents=True, exist_ok=True)
            from stride_jax import io

            io.save_npz_atomic(out / "demo_results.npz", **report.pop("arrays"))
            (out / "demo_scores.json").write_text(json.dumps(report, indent=2))
            logging.info("demo arrays in %s (plot: python scripts/visualize.py %s)",
                         out / "demo_results.npz", out / "demo_results.npz")
            sys.exit(0)
        sys.exit(align_files(FLAGS.input, FLAGS.output, config,
                             checkpoint_dir=FLAGS.checkpoint, units=FLAGS.units,
                             min_confidence=FLAGS.min_confidence, seed=FLAGS.seed,
                             resume=FLAGS.resume))
    except (ValueError, FileNotFoundError) as err:  # InputError and CheckpointError included
        logging.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _format_demo(report: dict) -> str:
    rows = ["demo: 2 held-out climbing clips (243 frames, 30 fps), "
            f"{report['timing']['occluded_pct']:.0f}% of frames undetected, estimator noise",
            f"{'method':<16}{'MPJPE':>8}{'occluded':>10}{'visible':>9}{'PA-MPJPE':>10}"
            f"{'Accel':>8}   (mm)"]
    for name in ("interpolation", "stride"):
        s = report[name]
        rows.append(f"{name:<16}{s['mpjpe']:>8.1f}{s['mpjpe_occ']:>10.1f}{s['mpjpe_vis']:>9.1f}"
                    f"{s['pa_mpjpe']:>10.1f}{s['accel']:>8.1f}")
    t = report["timing"]
    rows.append(f"compile {t['compile_s']:.1f} s, test-time training {t['run_s']:.1f} s")
    return "\n".join(rows)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
