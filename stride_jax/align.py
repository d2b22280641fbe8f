"""Test-time alignment of many videos at once: ``python -m stride_jax.align``.

    python -m stride_jax.align            # embedded demo (real motion, simulated occlusion)
    python -m stride_jax.align --video IN.mp4 --output OUT_DIR   # needs requirements-video.txt
    python -m stride_jax.align --input DIR_OR_FILES --output OUT_DIR [--checkpoint PRIOR_DIR]
                               [--units auto|m|mm] [--config.ttt.epochs=30]

Inputs (``stride_jax.io``): ``.npz`` (``poses`` (T,17,3) or (P,T,17,3) Human3.6M-17 in
metres or millimetres, optional ``valid``, ``confidence``, ``track_ids``, ``fps``), ``.npy``
(NaN frames = no detection) and ``.json``.  Each person track is one more video in the
batch.  Outputs: one ``.npz`` per input track (``refined``, ``pseudo``, ``valid``,
``loss_curve``, ``ok``, ``error``, ``fps``), written atomically; rerunning skips inputs whose
outputs exist, so a killed run resumes where it stopped.

Exit codes: 0 every video aligned; 1 some videos failed (their outputs say why; the others
are written); 2 nothing could be run (bad flags, unreadable inputs, missing prior).

A thin absl main: the pipelines are in ``stride_jax.pipeline``, the library face is
``from stride_jax import align_videos, load_prior, Video, AlignResult``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from stride_jax import config_util, distributed, files, logs, pipeline
from stride_jax.checkpoint import load_prior

_DEFAULT_CONFIG = str(Path(__file__).parent.parent / "configs" / "cpu.py")

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so modules can be
    imported together)."""
    config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG, "Config file whose `ttt` section sets the test-time training "
        "(window, stride, epochs, lr, loss weights); the model comes from --checkpoint "
        "(--config.model.* is an error).",
        lock_config=True)
    flags.DEFINE_list("input", [], "Pose files or directories (.npz/.npy/.json). Empty: "
                      "run the embedded demo.")
    flags.DEFINE_string("output", "runs/align", "Directory for the refined .npz files.")
    flags.DEFINE_string("checkpoint", str(pipeline.DEFAULT_PRIOR),
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
    distributed.define_flags()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: pass inputs with --input")
    logs.setup()
    config = FLAGS.config
    try:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id, heartbeat_timeout_s=FLAGS.heartbeat_timeout_s)
        config_util.reject_model_overrides(sys.argv, FLAGS.checkpoint)
        if FLAGS.video:
            if FLAGS.input:
                raise app.UsageError("pass either --video or --input, not both")
            sys.exit(pipeline.align_video_file(FLAGS.video, FLAGS.output, config,
                                               FLAGS.checkpoint, seed=FLAGS.seed,
                                               resume=FLAGS.resume, render=FLAGS.render))
        if not FLAGS.input:
            prior = load_prior(FLAGS.checkpoint)
            logging.info("demo: prior %s (%s)", FLAGS.checkpoint,
                         prior.meta.get("description", ""))
            report = pipeline.run_demo(prior, config, seed=FLAGS.seed)
            print(pipeline.format_demo(report))
            out = Path(FLAGS.output)
            files.save_npz_atomic(out / "demo_results.npz", **report.pop("arrays"))
            files.write_text_atomic(out / "demo_scores.json", json.dumps(report, indent=2))
            logging.info("demo arrays in %s (plot: python scripts/visualize.py %s)",
                         out / "demo_results.npz", out / "demo_results.npz")
            sys.exit(0)
        sys.exit(pipeline.align_files(FLAGS.input, FLAGS.output, config,
                                      checkpoint_dir=FLAGS.checkpoint, units=FLAGS.units,
                                      min_confidence=FLAGS.min_confidence, seed=FLAGS.seed,
                                      resume=FLAGS.resume))
    except (ValueError, FileNotFoundError) as err:  # InputError and CheckpointError included
        logging.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
