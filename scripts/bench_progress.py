"""Cost of the in-loop progress report: the same compiled TTT with and without it.

    python scripts/bench_progress.py [--K 2] [--T 243] [--epochs 10] [--repeats 5]

Compiles the batched TTT of ``configs/cpu.py`` (shipped prior's model) twice, with
``ttt.progress`` True (a ``jax.debug.callback`` per epoch inside the ``lax.scan``, feeding
an ``EpochProgress`` bar) and False, on K copies of a real T-frame clip, then times the
two alternately (``--repeats`` each) and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import jax
import numpy as np

from configs import cpu
from stride_jax import DEFAULT_PRIOR, load_prior, progress
from stride_jax import ttt as ttt_lib
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.model import build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--K", type=int, default=2, help="videos in the batch")
    parser.add_argument("--T", type=int, default=243, help="frames per video (one window)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    prior = load_prior(DEFAULT_PRIOR)
    model = build_model(prior.model)
    world, _ = load_demo()
    clip = np.asarray(augment.root_relative(augment.world_to_camera(world)))[0, : args.T]
    inputs = np.stack([clip[None]] * args.K).astype(np.float32)  # [K, 1, T, 17, 3]
    weights = np.ones(inputs.shape[:3], np.float32)
    mask = np.ones(inputs.shape[:3], bool)
    keys = jax.random.split(jax.random.key(0), args.K)
    compiled, times = {}, {True: [], False: []}
    for report in (True, False):
        cfg = cpu.get_config().ttt
        cfg.epochs, cfg.window, cfg.progress = args.epochs, args.T, report
        compiled[report] = ttt_lib.compile_ttt(model, cfg, prior.params, inputs.shape[:3])
    sink = io.StringIO()  # a non-TTY stream: the bar logs through `log`, here a no-op
    for _ in range(args.repeats):
        for report in (True, False):
            bar = progress.EpochProgress(args.epochs, stream=sink, log=lambda _: None)
            t0 = time.perf_counter()
            ttt_lib.run_compiled(compiled[report], prior.params, inputs, weights, mask, keys,
                                 on_epoch=bar if report else None)
            times[report].append(time.perf_counter() - t0)
            if report:
                assert bar.done == args.epochs, bar.done  # every epoch was reported
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"K={args.K} T={args.T} epochs={args.epochs} repeats={args.repeats} "
          f"({jax.default_backend()}, {jax.device_count()} device(s))")
    print(f"with progress    median {on:.3f} s  runs {[round(t, 3) for t in times[True]]}")
    print(f"without progress median {off:.3f} s  runs {[round(t, 3) for t in times[False]]}")
    print(f"ratio {on / off:.4f}  ({1000 * (on - off) / args.epochs:+.2f} ms per epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
