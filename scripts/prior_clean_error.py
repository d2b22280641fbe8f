"""How far the prior moves clean motion: MPJPE of the prior alone on clean input, per split.

    python scripts/prior_clean_error.py [--checkpoint stride_jax/assets/prior_cpu] \
        [--splits train,val,test] [--max_windows 0]

Every sequence of a split is cut into non-overlapping 243-frame windows (a shorter
sequence is one edge-padded window), each seen from the evaluation's random camera
(seed 1), and fed to the prior with every frame marked detected and no noise.  Printed per
split: MPJPE and PA-MPJPE (mm), the MPJPE per sequence and per joint group.  A split whose
error is far above the training split's is motion the prior has not learnt to reproduce,
not a prior that is undertrained everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stride_jax import metrics, skeleton

REPO = Path(__file__).resolve().parent.parent
_LIMBS = {"knees+elbows": ("r_knee", "l_knee", "l_elbow", "r_elbow"),
          "ankles+wrists": ("r_ankle", "l_ankle", "l_wrist", "r_wrist")}
# Joint indices per group; the torso and head are every joint not in a limb group.
GROUPS = {"torso+head": tuple(i for i, n in enumerate(skeleton.JOINT_NAMES)
                              if not any(n in names for names in _LIMBS.values())),
          **{g: tuple(skeleton.JOINT_INDEX[n] for n in names) for g, names in _LIMBS.items()}}


def clean_errors(predict: Callable[[np.ndarray], np.ndarray], clean: np.ndarray,
                 names: tuple[str, ...]) -> dict:
    """Scores ``predict`` (root-relative ``[N, T, 17, 3]`` -> same, metres) on clean windows.

    Returns ``{"mpjpe", "pa_mpjpe", "per_sequence", "per_group"}`` in mm; a sequence's
    windows are named ``"<sequence>@<start>"``.
    """
    clean = np.asarray(skeleton.root_relative(clean))
    out = np.asarray(predict(clean))
    if out.shape != clean.shape:
        raise ValueError(f"predict returned {out.shape}, expected {clean.shape}")
    out = np.asarray(skeleton.root_relative(out))  # the error of the pelvis-aligned pose
    err = np.asarray(metrics.mpjpe(out, clean))                    # [N, T] mm
    per_joint = np.linalg.norm(out - clean, axis=-1) * metrics.MM  # [N, T, J] mm
    seqs = [n.rsplit("@", 1)[0] for n in names]
    return {
        "mpjpe": float(err.mean()),
        "pa_mpjpe": float(np.asarray(metrics.pa_mpjpe(out, clean)).mean()),
        "per_sequence": {s: float(err[[q == s for q in seqs]].mean())
                         for s in dict.fromkeys(seqs)},
        "per_group": {g: float(per_joint[..., list(j)].mean()) for g, j in GROUPS.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    """CLI entry: prints and returns ``{split: clean_errors(...)}``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "stride_jax/assets/prior_cpu"))
    p.add_argument("--splits", default="train,val,test")
    p.add_argument("--max_windows", type=int, default=0,
                   help="windows per split, the first ones in sequence order (0 = all)")
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    if args.max_windows < 0 or args.batch < 1:
        p.error("--max_windows must be >= 0 and --batch >= 1")

    import jax
    import jax.numpy as jnp

    from configs.cpu import get_config
    from stride_jax import checkpoint, model_input, pretrain
    from stride_jax.data import dataset
    from stride_jax.evalset import make_eval_set
    from stride_jax.model import build_model

    config = get_config()
    prior = checkpoint.load_prior(args.checkpoint)
    model = build_model(prior.model)
    fwd = jax.jit(lambda params, x: model.apply({"params": params}, x))

    def predict(clean: np.ndarray) -> np.ndarray:
        x = model_input.make_input(jnp.asarray(clean), None, model.dim_in)
        return pretrain.forward_in_batches(fwd, prior.params, x, args.batch)

    report = {}
    for split in [s for s in args.splits.split(",") if s]:
        ev = make_eval_set(dataset.load_split(split), length=config.ttt.window,
                           stride=config.ttt.window, fps=config.fps, seed=1,
                           simulator=config.simulator)
        n = len(ev.names) if args.max_windows == 0 else min(args.max_windows, len(ev.names))
        r = clean_errors(predict, ev.clean[:n], ev.names[:n])
        report[split] = r
        print(f"{split}: {n} windows  MPJPE {r['mpjpe']:.1f}  PA-MPJPE {r['pa_mpjpe']:.1f}")
        print("  per sequence: " + ", ".join(f"{s} {v:.1f}" for s, v in r["per_sequence"].items()))
        print("  per joint group: " + ", ".join(f"{g} {v:.1f}" for g, v in r["per_group"].items()))
    return report


if __name__ == "__main__":
    main()
