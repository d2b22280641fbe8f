"""Compare test-time-training settings on a held-out split (tune on val, report on test).

    python scripts/tune_ttt.py --split val --seeds 0,1 \
        --variants '{"paper_lr": {"lr": 2e-4, "interp_weight": 1.0}, "shipped": {}}'

Each variant is a set of overrides of ``configs/cpu.py``'s ``ttt`` section (``loss`` is
merged term by term).  Videos and corruption are those of ``stride_jax.evaluate``
(``stride_jax.evalset.make_videos``: same seeds, same simulator); linear interpolation
and the Savitzky-Golay smoother are scored alongside.  Prints one line per (seed,
variant) and the mean over seeds (mm).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import ml_collections
import numpy as np
from scipy.signal import savgol_filter

KEYS = ("mpjpe", "mpjpe_occ", "mpjpe_vis", "pa_mpjpe", "accel")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", required=True,
                        help='JSON: {"name": {ttt overrides}, ...}; {} = configs/cpu.py as is')
    parser.add_argument("--max_videos", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped prior")
    args = parser.parse_args(argv)

    from configs import cpu
    from stride_jax import DEFAULT_PRIOR, align_videos, load_prior
    from stride_jax.data import dataset
    from stride_jax.evalset import make_videos
    from stride_jax.evaluation import SAVGOL, score_videos

    variants = json.loads(args.variants)
    config = cpu.get_config()
    prior = load_prior(args.checkpoint or DEFAULT_PRIOR)
    sequences = dataset.load_split(args.split)
    results: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        videos, truths = make_videos(sequences, video_len=243, fps=config.fps, seed=seed,
                                     simulator=dict(config.simulator),
                                     max_videos=args.max_videos)
        for i, (name, overrides) in enumerate(variants.items()):
            ttt = copy.deepcopy(config.ttt.to_dict())
            for key, value in overrides.items():
                if key == "loss":
                    ttt["loss"].update(value)
                else:
                    ttt[key] = value
            t0 = time.perf_counter()
            out, timing = align_videos(videos, prior, ml_collections.ConfigDict(ttt),
                                       seed=seed, max_batch=config.ttt.max_batch)
            scores = score_videos([r.refined for r in out], truths, videos)
            results.setdefault(name, []).append(scores)
            if i == 0:
                pseudo = [r.pseudo for r in out]
                results.setdefault("interpolation", []).append(
                    score_videos(pseudo, truths, videos))
                results.setdefault("savgol", []).append(score_videos(
                    [savgol_filter(p, axis=0, **SAVGOL) for p in pseudo], truths, videos))
            print(f"seed {seed} {name:<18}" + "".join(f" {k} {scores[k]:.1f}" for k in KEYS)
                  + f" ({time.perf_counter() - t0:.0f} s: TTT {timing.run_s:.1f} s + compile "
                  f"{timing.compile_s:.1f} s)", flush=True)
    print(f"mean over seeds {args.seeds}, split {args.split} (mm)")
    print(f"{'variant':<18}" + "".join(f"{k:>11}" for k in KEYS))
    for name, rows in results.items():
        print(f"{name:<18}" + "".join(f"{np.mean([r[k] for r in rows]):>11.1f}" for k in KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
