"""Converts a MotionBERT PyTorch checkpoint (``.bin``) into a stride_jax prior directory.

Usage::

    python scripts/convert_motionbert_checkpoint.py IN.bin OUT_DIR [--num_heads 8]

Reads ``ckpt['model_pos']`` (or the file itself when it is a bare state dict), maps it with
``stride_jax.convert.state_dict_to_params`` and writes it with
``stride_jax.checkpoint.save_prior``.  ``num_heads`` is not stored in the weights'
shapes: pass the value the checkpoint was trained with (MotionBERT: 8).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stride_jax import checkpoint, convert, files

_STATE_DICT_KEYS = ("model_pos",)


def load_state_dict(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads a MotionBERT checkpoint; returns ``(numpy state dict, extra meta)``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not a PyTorch checkpoint or holds no DSTformer state dict.
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # MotionBERT checkpoints are trusted files that pickle a numpy scalar (the epoch),
        # which torch>=2.6's default weights_only=True refuses; hence weights_only=False.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch/pickle raise many types for a non-checkpoint file
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    meta: dict[str, Any] = {}
    key = next((k for k in _STATE_DICT_KEYS if k in ckpt), None)
    if key is not None:
        state_dict = ckpt[key]
        if "epoch" in ckpt and np.ndim(ckpt["epoch"]) == 0:
            meta["epoch"] = int(ckpt["epoch"])
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state_dict = ckpt
    else:
        raise ValueError(f"{path} has no 'model_pos' state dict and is not a state dict "
                         f"itself; top-level keys: {sorted(map(str, ckpt))[:20]}")
    if not isinstance(state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: '{key}' is not a state dict of tensors")
    arrays = {k: v.detach().cpu().float().numpy() for k, v in state_dict.items()}
    return arrays, meta


def convert_checkpoint(in_path: str | Path, out_dir: str | Path, num_heads: int = 8) -> Path:
    """Converts ``in_path`` (MotionBERT ``.bin``) into a prior at ``out_dir``; returns it."""
    in_path = Path(in_path)
    state_dict, meta = load_state_dict(in_path)
    params, model_config = convert.state_dict_to_params(state_dict, num_heads=num_heads)
    meta.update(source=str(in_path.resolve()), sha256=files.sha256_file(in_path),
                format="motionbert")
    return checkpoint.save_prior(out_dir, params, model_config, meta=meta)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (0 ok, 1 error)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="MotionBERT checkpoint (.bin)")
    parser.add_argument("out_dir", type=Path, help="prior directory to write")
    parser.add_argument("--num_heads", type=int, default=8,
                        help="attention heads of the checkpoint (default 8)")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.checkpoint, args.out_dir, num_heads=args.num_heads)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    model_config, _ = checkpoint.read_prior_config(out)
    print(f"wrote prior {out} with model config {model_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
