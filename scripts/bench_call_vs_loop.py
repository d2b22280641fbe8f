"""Paired timing of the K-video TTT call against the loop of one-video calls.

    python scripts/bench_call_vs_loop.py --sizes small --K 4 --repeats 4

Both are compiled first (untimed); then the call (``stride_jax.ttt.compile_ttt`` with the
default ``ttt.vmap_width``) and the loop (``make_looped_ttt``) alternate ``--repeats``
times on the same random inputs, so slow drifts of a shared machine hit both alike.
Prints every time, the medians per video and their ratio (call / loop).
"""

from __future__ import annotations

import argparse
import time

import bench_common as bc
import jax
import numpy as np

from stride_jax import ttt as ttt_lib
from stride_jax.model import build_model, init_params


def main(argv: list[str] | None = None) -> dict:
    """Runs the paired benchmark and returns ``{"call": [...], "loop": [...], "ratio": r}``
    (seconds per video)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=bc.DEFAULT_CONFIG)
    p.add_argument("--sizes", default="small", choices=tuple(bc.SIZES))
    p.add_argument("--K", type=int, default=4, help="videos per call")
    p.add_argument("--epochs", type=int, default=30, help="TTT steps")
    p.add_argument("--repeats", type=int, default=4, help="timed runs of each")
    args = p.parse_args(argv)
    if args.K < 1 or args.repeats < 1 or args.epochs < 1:
        p.error("--K, --repeats and --epochs must be >= 1")
    config = bc.load_config(args.config)
    config.model.update(bc.SIZES[args.sizes]["model"])
    frames = bc.SIZES[args.sizes]["frames"]
    config.ttt.epochs, config.ttt.progress = args.epochs, False
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 0.1, (args.K, 1, frames, 17, model.dim_in)).astype(np.float32)
    weights, mask = np.ones((args.K, 1, frames), np.float32), np.ones((args.K, 1, frames), bool)
    keys = jax.random.split(jax.random.key(0), args.K)
    compiled = ttt_lib.compile_ttt(model, config.ttt, params, (args.K, 1, frames))
    loop = ttt_lib.make_looped_ttt(model, config.ttt)
    runs = {"call": lambda x: compiled.fn(params, x, weights, mask, keys),
            "loop": lambda x: loop(params, x, weights, mask, keys)}
    for fn in runs.values():  # compile / warm up, untimed
        jax.block_until_ready(fn(inputs.copy()))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            x = inputs.copy()  # the call donates its inputs
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x))
            times[name].append((time.perf_counter() - t0) / args.K)
    ratio = float(np.median(times["call"]) / np.median(times["loop"]))
    print(f"{args.sizes} size, K={args.K}, vmap width {compiled.width}, {args.epochs} steps, "
          f"{args.repeats} paired runs (s/video):")
    for name, ts in times.items():
        print(f"  {name}: " + " ".join(f"{t:.3f}" for t in ts) + f"  median {np.median(ts):.3f}")
    print(f"call / loop (medians): {ratio:.3f}")
    return {**times, "ratio": ratio}


if __name__ == "__main__":
    main()
