"""Where the time goes from a video to refined 3D motion: estimator vs alignment.

    python scripts/bench_video.py                      # the fetched Sports2D demo clip
    python scripts/bench_video.py --video clip.mp4 --K 1,4 --out runs/bench_video  # 4 copies too

Runs MediaPipe BlazePose (``stride_jax.estimate``) over the clip, then aligns its track(s)
with the shipped prior and ``configs/cpu.py`` as a batch of K copies (one compiled
``jit(vmap(scan))`` call), and prints frames per second of each stage, compile time apart.
Needs the video extra (``pip install -r requirements-video.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default=None, help="default: the fetched Sports2D demo clip")
    parser.add_argument("--K", default="1", help="comma-separated copies of the clip's tracks "
                        "aligned together (batch = K x tracks)")
    parser.add_argument("--epochs", type=int, default=None, help="default: configs/cpu.py")
    parser.add_argument("--out", type=Path, default=None, help="directory for results.json")
    args = parser.parse_args(argv)

    import jax

    from configs import cpu
    from stride_jax import DEFAULT_PRIOR, align_videos, estimator, io, load_prior
    from stride_jax.data import fetch

    source = Path(args.video) if args.video else fetch.demo_video()
    work = args.out or Path(os.environ.get("TMPDIR", "/tmp")) / "stride_bench_video"
    work.mkdir(parents=True, exist_ok=True)
    summary = estimator.estimate_video(source, work / "estimate.npz")
    print(summary.line())
    tracks = io.load_pose_file(summary.output, units="m")
    videos = io.to_videos(tracks)
    config = cpu.get_config()
    if args.epochs is not None:
        config.ttt.epochs = args.epochs
    prior = load_prior(DEFAULT_PRIOR)
    frames = sum(v.poses.shape[0] for v in videos)
    rows = [dict(stage="estimator (BlazePose full)", K=1, frames=summary.frames,
                 compile_s=0.0, run_s=summary.frames / summary.estimator_fps,
                 frames_per_s=summary.estimator_fps),
            dict(stage="decode + estimator", K=1, frames=summary.frames, compile_s=0.0,
                 run_s=summary.frames / summary.total_fps, frames_per_s=summary.total_fps)]
    for k in [int(x) for x in args.K.split(",") if x]:
        batch = [videos[i % len(videos)] for i in range(k * len(videos))]
        _, timing = align_videos(batch, prior, config.ttt, max_batch=len(batch))
        n = frames * k
        rows.append(dict(stage=f"alignment ({config.ttt.epochs} steps, cpu prior)", K=len(batch),
                         frames=n, compile_s=timing.compile_s, run_s=timing.run_s,
                         frames_per_s=n / timing.run_s))
    print(f"\n{source.name}: {summary.frames} frames, {len(videos)} track(s); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    print(f"{'stage':<38}{'K':>4}{'frames':>8}{'compile s':>11}{'run s':>9}{'frames/s':>10}")
    for r in rows:
        print(f"{r['stage']:<38}{r['K']:>4}{r['frames']:>8}{r['compile_s']:>11.1f}"
              f"{r['run_s']:>9.1f}{r['frames_per_s']:>10.1f}")
    est = rows[0]["frames_per_s"]
    for r in rows[2:]:
        print(f"alignment K={r['K']} runs at {r['frames_per_s'] / est:.2f}x the estimator's "
              "frame rate")
    if args.out:
        (args.out / "results.json").write_text(json.dumps(
            dict(video=str(source), rows=rows, tracks=len(videos)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
