"""Per-frame 3D poses from a video with MediaPipe BlazePose: ``python -m stride_jax.estimate``.

    python -m stride_jax.estimate --video IN.mp4 --output OUT.npz
    python -m stride_jax.estimate --video DIR_OF_IMAGES --output OUT.npz --fps 25

The estimator, the BlazePose-33 -> Human3.6M-17 mapping and the output fields are in
``stride_jax.estimator``; this module only parses flags.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from stride_jax.estimator import estimate_video
from stride_jax.video import DEFAULT_FPS


def _define_flags() -> None:
    """CLI flags, defined only when this module is the program (``stride_jax.align`` has
    flags of the same names)."""
    flags.DEFINE_string("video", None, "Video file or directory of frame images.")
    flags.DEFINE_string("output", None, "Output pose file (.npz).")
    flags.DEFINE_float("fps", None, f"Frame rate; default the video's own, or {DEFAULT_FPS:g} "
                       "for an image directory.")
    flags.DEFINE_bool("static_image_mode", False, "Detect the person in every frame "
                      "independently instead of tracking (slower).")
    flags.DEFINE_float("min_detection_confidence", 0.5, "BlazePose person-detection "
                       "threshold in [0, 1].")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: use --video and --output")
    args = flags.FLAGS
    if not args.video or not args.output:
        raise app.UsageError("--video and --output are required")
    logging.set_verbosity(logging.INFO)
    try:
        summary = estimate_video(args.video, args.output, fps=args.fps,
                                 static_image_mode=args.static_image_mode,
                                 min_detection_confidence=args.min_detection_confidence,
                                 progress=logging.info)
    except ValueError as err:  # VideoError included
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(summary.line())
    if summary.detected == 0:
        print(f"error: no person detected in any of the {summary.frames} frames",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
