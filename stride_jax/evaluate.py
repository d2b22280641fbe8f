"""Accuracy protocol on held-out real mocap: ``python -m stride_jax.evaluate``.

    python -m stride_jax.evaluate [--checkpoint PRIOR] [--seeds 0,1,2] [--max_videos 8]
                                  [--split test] [--out runs/eval]

The test split (performers never seen in training) is cut into videos of
``--video_len`` frames, each seen from a seeded random camera yaw and passed through the
occlusion / estimator simulator (``config.simulator``: in every 3.2 s a 1.6 s span
undetected, jitter, depth and scale errors, swaps, outliers).  Methods compared, each
scored with MPJPE, PA-MPJPE and acceleration error (mm) on all / occluded / visible
frames, mean and spread over seeds:

- ``input``: the simulated estimate, on the frames where it exists;
- ``interpolation``: linear in-filling (= STRIDE's pseudo-labels);
- ``savgol``: a Savitzky-Golay smoother on the interpolation (classical baseline);
- ``prior``: the pretrained prior alone, no test-time training;
- the loss ablation of the paper's Table 5, ending in full STRIDE:
  ``+mpjpe`` -> ``+velocity`` -> ``+limb_var`` -> ``stride`` (``+n_mpjpe``).

Writes ``results.json`` and ``results.md`` under ``--out``.  The protocol itself is
``stride_jax.evaluation``; ``--config.model.*`` is an error (the model is the prior's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from stride_jax import config_util, evaluation, files, logs
from stride_jax.checkpoint import load_prior
from stride_jax.data import dataset

_DEFAULT_CONFIG = str(Path(__file__).parent.parent / "configs" / "cpu.py")
FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so modules can be
    imported together)."""
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                    "Config (ttt and simulator sections).",
                                    lock_config=True)
    flags.DEFINE_string("checkpoint", str(Path(__file__).parent / "assets" /
                                          "prior_cpu"), "Prior directory.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Simulator / camera seeds.")
    flags.DEFINE_enum("split", "test", ["val", "test"], "Held-out split to score.")
    flags.DEFINE_integer("video_len", 243, "Frames per evaluation video.")
    flags.DEFINE_integer("max_videos", 0, "Use at most this many videos (0: all), "
                         "taken evenly across the split.")
    flags.DEFINE_bool("ablation", True, "Also run the loss ablation rows.")
    flags.DEFINE_string("out", "runs/eval", "Output directory.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logs.setup()
    config = FLAGS.config
    try:
        config_util.reject_model_overrides(sys.argv, FLAGS.checkpoint)
        prior = load_prior(FLAGS.checkpoint)
    except ValueError as err:  # CheckpointError included
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sequences = dataset.load_split(FLAGS.split)
    report = evaluation.evaluate(config, prior, sequences,
                                 seeds=[int(s) for s in FLAGS.seeds],
                                 video_len=FLAGS.video_len, max_videos=FLAGS.max_videos,
                                 ablation=FLAGS.ablation)
    report.update(split=FLAGS.split, checkpoint=FLAGS.checkpoint, video_len=FLAGS.video_len,
                  max_videos=FLAGS.max_videos, simulator=dict(config.simulator),
                  ttt=config.ttt.to_dict(), savgol=evaluation.SAVGOL)
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    table = evaluation.to_markdown(report)
    files.write_text_atomic(out / "results.json", json.dumps(report, indent=2))
    files.write_text_atomic(out / "results.md", table + "\n")
    print(table)
    logging.info("wrote %s and %s", out / "results.json", out / "results.md")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
