"""Ship a campaign run's prior (params only) as the package's prior, with its history.

    python scripts/ship_prior.py runs/c10 --total_steps 4500 \
        --description "..." --command "nice -n 19 python -m stride_jax.pretrain ..." \
        [--step best|latest|N] [--dest stride_jax/assets/prior_cpu]

``--step best`` (default) takes the run's exported prior (``RUN/prior``: the step with
the lowest validation error on occluded input); ``latest`` or a step number restores
that step's params from the run's training checkpoints (``RUN/checkpoints``; only the
last few are kept), using the optimizer of the run's own config (recorded in
``RUN/prior/prior.json``) to read the state.  The validation numbers of that step come
from ``RUN/eval.csv`` (empty when the step was not evaluated).  The prior at ``--dest``
is replaced atomically; its metadata keeps the run's config and data hash, the
description, command and total steps given here, and the metadata of the prior it
replaces (all but its config, its own history included) under ``previous``.  With
``--dest`` a new directory it exports a step for a comparison without shipping it.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from stride_jax import checkpoint, pretrain
from stride_jax.model import build_model

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO / "stride_jax" / "assets" / "prior_cpu"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="the pretraining run's workdir")
    p.add_argument("--step", default="best", help="best, latest or a checkpointed step")
    p.add_argument("--total_steps", type=int, required=True,
                   help="pretraining steps behind the shipped params, over all runs")
    p.add_argument("--description", required=True)
    p.add_argument("--command", required=True, help="the command that trained the run")
    p.add_argument("--dest", default=str(DEFAULT_DEST), help="prior directory to write")
    args = p.parse_args(argv)
    if args.step not in ("best", "latest") and not args.step.isdigit():
        p.error(f"--step must be best, latest or a step number, got {args.step!r}")
    if args.total_steps < 1:
        p.error("--total_steps must be >= 1")
    return args


def eval_row(run: Path, step: int) -> dict[str, float]:
    """The validation numbers ``RUN/eval.csv`` holds for ``step`` ({} if not evaluated)."""
    path = run / "eval.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if int(row["step"]) == step:
                return {k: float(v) for k, v in row.items() if k.startswith("val_")}
    return {}


def checkpoint_params(run: Path, config: ml_collections.ConfigDict,
                      step: int | None) -> tuple[int, Any]:
    """``(step, params)`` from the run's training checkpoints (``None``: the newest)."""
    abstract = pretrain.abstract_state(build_model(config.model),
                                       pretrain.make_optimizer(config.pretrain))
    ckpts = checkpoint.TrainCheckpoints(run)
    try:
        if step is None:
            found = ckpts.restore_latest(abstract)
            if found is None:
                raise checkpoint.CheckpointError(f"no intact checkpoint in {run / 'checkpoints'}")
            step, state, _ = found
        else:
            state, _ = ckpts.restore(step, abstract)
    finally:
        ckpts.close()
    return step, state["params"]


def history(meta: dict) -> dict:
    """A prior's metadata as ``previous`` of the next one: everything but the full config
    (its command, description, steps, validation and its own ``previous``, so the chain
    of runs behind the shipped params stays readable)."""
    return {k: v for k, v in meta.items() if k != "config"}


def run(args: argparse.Namespace) -> Path:
    """Writes the prior; returns its directory."""
    run_dir = Path(args.run)
    exported = checkpoint.load_prior(run_dir / "prior")
    meta = dict(exported.meta)
    params = exported.params
    if args.step != "best":
        config = ml_collections.ConfigDict(meta["config"])
        step, params = checkpoint_params(run_dir, config,
                                         None if args.step == "latest" else int(args.step))
        meta.update(best_step=step, validation=eval_row(run_dir, step))
    dest = Path(args.dest)
    if (dest / checkpoint.PRIOR_JSON).is_file():
        meta["previous"] = history(checkpoint.read_prior_config(dest)[1])
    meta.update(total_steps=args.total_steps, description=args.description,
                command=args.command, exported_from=str(run_dir.absolute()))
    out = checkpoint.save_prior(dest, params, exported.model, meta)
    print(f"wrote {out}: step {meta['best_step']} of {run_dir}, "
          f"{args.total_steps} steps in total, validation "
          f"{json.dumps(meta['validation'])}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with the reason on a missing or damaged
    run, step or prior)."""
    args = parse_args(argv)
    try:
        run(args)
    except checkpoint.CheckpointError as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
