"""Compare test-time-training settings on a held-out split, on the plain and fast views.

    python scripts/tune_ttt.py --split val --seeds 0,1,2,3 \
        --variants '{"prior": {"epochs": 0}, "shipped": {}, "cos8": {"epochs": 8,
                     "schedule": "cosine"}}'

Each variant is a set of overrides of ``configs/cpu.py``'s ``ttt`` section (``loss`` is
merged term by term; ``{}`` = the config as is; ``--config_arg`` picks a preset, e.g.
``paper``).  Videos and corruption are those of ``stride_jax.evaluate`` on each view
(``stride_jax.evalset``: ``plain`` as recorded, ``fast`` 1.5-2x faster and spinning);
linear interpolation and the Savitzky-Golay smoother are scored alongside.  Prints one
line per (seed, view, method), then a table of the means per view and over both views
(mm), with seconds per video.  Tune on ``val``; ``test`` is for reporting.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--views", default="plain,fast")
    parser.add_argument("--variants", required=True,
                        help='JSON: {"name": {ttt overrides}, ...}; {} = the config as is')
    parser.add_argument("--config_arg", default=None, help="configs/cpu.py preset")
    parser.add_argument("--max_videos", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped prior")
    parser.add_argument("--json_out", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    from configs import cpu
    from stride_jax import DEFAULT_PRIOR, load_prior, tuning
    from stride_jax.data import dataset

    variants = json.loads(args.variants)
    views = args.views.split(",")
    config = cpu.get_config(args.config_arg)
    prior = load_prior(args.checkpoint or DEFAULT_PRIOR)

    def show(row: dict) -> None:
        print(f"seed {row['seed']} {row['view']:<5} {row['method']:<16}"
              + "".join(f" {k} {row[k]:.1f}" for k in tuning.KEYS)
              + (f" (TTT {row['run_s']:.1f} s + compile {row['compile_s']:.1f} s, "
                 f"{row['videos']} videos)" if row["method"] not in tuning.BASELINES else ""),
              flush=True)

    rows = tuning.sweep(variants, prior, config, dataset.load_split(args.split),
                        seeds=[int(s) for s in args.seeds.split(",")], views=views,
                        max_videos=args.max_videos, on_row=show)
    print(f"\nmean over seeds {args.seeds}, split {args.split} (mm)")
    print(tuning.to_table(tuning.summarize(rows), views))
    if args.json_out:
        from stride_jax.files import write_text_atomic
        write_text_atomic(args.json_out, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
