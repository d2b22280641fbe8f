"""Plots the pretraining campaign's validation curve from its log.

    python scripts/plot_campaign.py [--csv stride_jax/assets/campaign_validation.csv] \
        [--out docs/prior/campaign_validation.png]

The CSV holds pretraining's own validation (MPJPE mm; occlusion + estimator noise, seed
1) of every prior the campaign exported: ``total_steps, occluded_input, occluded_frames,
clean_input, shipped, note``; linear interpolation is drawn for reference.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

INTERP = {"occluded_input": 76.1, "occluded_frames": 107.6}  # pretraining validation
REPO = Path(__file__).resolve().parent.parent


def read_rows(path: Path) -> list[dict]:
    """The CSV's rows with numbers parsed; a clear error for a missing column."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = ("total_steps", "occluded_input", "occluded_frames", "clean_input", "shipped")
    for i, row in enumerate(rows, start=2):
        missing = [k for k in need if not row.get(k)]
        if missing:
            raise ValueError(f"{path} line {i}: missing {', '.join(missing)}")
    return [{**r, "total_steps": int(r["total_steps"]),
             **{k: float(r[k]) for k in need[1:4]}} for r in rows]


def plot(rows: list[dict], out: Path) -> Path:
    """Writes the curve: one line per validation number through the shipped priors;
    evaluations of runs that were not shipped as open circles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (key, label) in enumerate((("occluded_input", "occluded input, all frames"),
                                      ("occluded_frames", "occluded frames"),
                                      ("clean_input", "clean input"))):
        colour = f"C{i}"
        # side runs that were not shipped branch off the shipped line: markers only
        shipped = [(r["total_steps"], r[key]) for r in rows if r["shipped"] == "yes"]
        ax.plot(*zip(*shipped), "o-", color=colour, label=label)
        others = [(r["total_steps"], r[key]) for r in rows if r["shipped"] != "yes"]
        if others:
            ax.plot(*zip(*others), "o", color=colour, mfc="none", ms=5)
        if key in INTERP:
            ax.axhline(INTERP[key], color=colour, ls=":", lw=1)
    ax.axhline(25.0, color="k", ls="--", lw=0.8, label="target, clean input")
    ax.set(xlabel="pretraining steps in total (batch 4 x 243 frames)",
           ylabel="validation MPJPE (mm)",
           title="prior_cpu campaign (dots: shipped; circles: not shipped;\n"
                 "dotted: interpolation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", default=str(REPO / "stride_jax/assets/campaign_validation.csv"))
    p.add_argument("--out", default=str(REPO / "docs/prior/campaign_validation.png"))
    args = p.parse_args(argv)
    print(f"wrote {plot(read_rows(Path(args.csv)), Path(args.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
