"""Per-gap error of the pseudo-labels' in-fill, linear against rotation-aware.

    python scripts/infill_gaps.py --split val --seeds 0,1,2,3 [--worse_mm 10]

For every run of undetected frames in the evaluation videos of both views, the mean
root-relative joint error (mm) of linear interpolation and of
:func:`stride_jax.rotation_infill.fill_rotating` against the ground truth; prints the
mean over gaps per view and every gap where the rotation in-fill is worse than linear by
more than ``--worse_mm`` (how its robustness rules were found).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from configs import cpu
from stride_jax.data import dataset
from stride_jax.evalset import VIEWS, make_videos
from stride_jax.rotation_infill import pseudo_labels
from stride_jax.skeleton import root_relative


def gap_errors(poses: np.ndarray, valid: np.ndarray, truth: np.ndarray) -> list[tuple]:
    """``[(first, last, linear_mm, rotation_mm)]`` per run of undetected frames between
    two detections of one video."""
    filled = {k: root_relative(pseudo_labels(poses, valid, k)) for k in ("linear", "rotation")}
    truth = root_relative(truth)
    det = np.flatnonzero(valid)
    out = []
    for a, b in zip(det[:-1], det[1:]):
        if b - a < 2:
            continue
        gap = slice(a + 1, b)
        err = [1000 * float(np.linalg.norm(filled[k][gap] - truth[gap], axis=-1).mean())
               for k in ("linear", "rotation")]
        out.append((int(a) + 1, int(b) - 1, *err))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--views", default=",".join(VIEWS))
    p.add_argument("--max_videos", type=int, default=0)
    p.add_argument("--worse_mm", type=float, default=10.0)
    args = p.parse_args(argv)
    config = cpu.get_config()
    sequences = dataset.load_split(args.split)
    for view in args.views.split(","):
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            videos, truths = make_videos(sequences, video_len=243, fps=config.fps, seed=seed,
                                         simulator=dict(config.simulator),
                                         max_videos=args.max_videos, view=view)
            for video, truth in zip(videos, truths):
                for first, last, lin, rot in gap_errors(video.poses, video.valid, truth):
                    rows.append((lin, rot))
                    if rot - lin > args.worse_mm:
                        print(f"{view} seed {seed} {video.name} frames {first}-{last}: "
                              f"linear {lin:.0f} mm, rotation {rot:.0f} mm")
        lin, rot = np.mean(rows, axis=0) if rows else (float("nan"), float("nan"))
        print(f"{args.split} {view}: {len(rows)} gaps, mean error linear {lin:.1f} mm, "
              f"rotation {rot:.1f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
