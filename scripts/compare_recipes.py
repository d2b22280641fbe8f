"""Pretraining recipes compared at an equal step budget, scored on the validation split.

    python scripts/compare_recipes.py --steps 200 --out runs/recipes \
        --variants '{"control": [], "gaps": ["--config.pretrain.corrupt.gap_prob=0.4"]}'

Every variant is a list of ``python -m stride_jax.pretrain`` flags added to the common
ones (``--base``: ``configs/cpu.py``, warm-started from the shipped prior, batch 4,
lr 3e-4 cosine over ``--steps``).  Each runs in ``<out>/<name>`` (resumable: a finished
variant is not rerun), then ``python -m stride_jax.evaluate --split val`` scores its prior
alone and STRIDE over ``--seeds``.  Prints and writes ``<out>/comparison.md``: validation
MPJPE (mm) on all / occluded frames for interpolation, the prior alone and STRIDE, and
the pretraining validation's clean-input error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stride_jax import DEFAULT_PRIOR, files
from stride_jax.checkpoint import read_prior_config

BASE = ["--config", "configs/cpu.py", f"--config.pretrain.init_from={DEFAULT_PRIOR}",
        "--config.pretrain.batch_size=4", "--config.pretrain.lr=3e-4",
        "--config.pretrain.warmup_steps=20", "--config.pretrain.log_every_steps=10"]


def _run(cmd: list[str], log: Path, nice: bool) -> None:
    prefix = ["nice", "-n", "19"] if nice else []
    with open(log, "a") as f:
        subprocess.run(prefix + [sys.executable, "-m"] + cmd, stdout=f, stderr=subprocess.STDOUT,
                       check=True)


def _mean(report: dict, method: str, key: str) -> float:
    return float(np.mean(report["results"][method][key]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", required=True,
                        help='JSON {"name": ["--config.x=y", ...], ...}')
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default="runs/recipes")
    parser.add_argument("--base", default=json.dumps(BASE), help="JSON list of common flags")
    parser.add_argument("--nice", action="store_true", help="run under nice -n 19")
    args = parser.parse_args(argv)
    variants = json.loads(args.variants)
    base = json.loads(args.base)
    out = Path(args.out)
    rows = []
    for name, flags in variants.items():
        work = out / name
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        if not (work / "prior" / "prior.json").is_file():
            _run(["stride_jax.pretrain", "--workdir", str(work), *base, *flags,
                  f"--config.pretrain.num_steps={args.steps}",
                  f"--config.pretrain.eval_every_steps={args.steps}",
                  f"--config.pretrain.checkpoint_every_steps={args.steps}"],
                 work / "pretrain.log", args.nice)
        train_s = time.time() - t0
        if not (work / "eval" / "results.json").is_file():
            _run(["stride_jax.evaluate", "--split", "val", "--seeds", args.seeds,
                  "--ablation=false", "--checkpoint", str(work / "prior"),
                  "--out", str(work / "eval")], work / "evaluate.log", args.nice)
        report = json.loads((work / "eval" / "results.json").read_text())
        val = read_prior_config(work / "prior")[1].get("validation", {})
        row = {"name": name, "flags": " ".join(flags) or "(none)", "train_s": train_s,
               "clean": float(val.get("val_mpjpe_clean_input", float("nan")))}  # mm
        for method in ("interpolation", "prior", "stride"):
            row[method] = (_mean(report, method, "mpjpe"), _mean(report, method, "mpjpe_occ"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"{args.steps} steps per variant, validation split, seeds {args.seeds} "
             "(MPJPE mm, all / occluded frames)", "",
             "| variant | interpolation | prior alone | STRIDE | prior, clean input | flags |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        cells = [f"{r[m][0]:.1f} / {r[m][1]:.1f}" for m in ("interpolation", "prior", "stride")]
        lines.append(f"| {r['name']} | " + " | ".join(cells) +
                     f" | {r['clean']:.1f} | `{r['flags']}` |")
    table = "\n".join(lines)
    files.write_text_atomic(out / "comparison.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
