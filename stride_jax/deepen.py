"""Warm-starting a deeper DSTFormer from a shallower prior.

A prior of depth ``d`` goes into a model of depth ``D > d``: block pairs ``0..d-1`` (and
every other parameter) are copied, and the new pairs ``d..D-1`` sit on top with their
residual branches' output layers zeroed (``attn_*/proj`` and ``mlp_*/fc2``, kernel and
bias).  Each new stream then returns its input, the fusion of two equal streams is that
input, and the deeper model starts with exactly the prior's output; training grows the
new blocks from there (the zeroed output layers get gradients at once, the rest after).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from stride_jax.model import block_index

# the output layer of each residual branch of a Block (see model.Block)
_BRANCH_OUT = (("attn_s", "proj"), ("attn_t", "proj"), ("mlp_s", "fc2"), ("mlp_t", "fc2"))


def block_depth(params: Any) -> int:
    """Number of block pairs in a DSTFormer parameter tree (``blocks_st_<i>`` count)."""
    return sum(1 for name in params if name.startswith("blocks_st_"))


def deepen_params(prior: Any, fresh: Any) -> Any:
    """``prior``'s params in the tree of the deeper ``fresh`` one, new blocks the identity.

    Args:
      prior: parameter tree of the shallower prior (depth ``d``).
      fresh: a freshly initialised parameter tree of the deeper model (depth ``D > d``),
        same widths; it supplies the new blocks' remaining (random) parameters.

    Returns:
      A tree shaped like ``fresh`` (numpy arrays): ``prior``'s values wherever it has the
      parameter, the new block pairs as described in the module docstring.

    Raises:
      ValueError: ``fresh`` is not deeper than ``prior``, or the two differ in anything
        but the extra blocks (the message names the parameter).
    """
    d, big = block_depth(prior), block_depth(fresh)
    if big <= d:
        raise ValueError(f"deepening needs a deeper model: the prior has {d} block pairs, "
                         f"the model {big}")
    out = {}
    for name, sub in fresh.items():
        block = block_index(name)
        if block is not None and block >= d:
            out[name] = _copy(sub) if name.startswith("ts_attn_") else _identity_branch(sub)
            continue
        if name not in prior:
            raise ValueError(f"the prior has no parameter {name!r} (different architecture?)")
        out[name] = _copy(prior[name])
    extra = sorted(set(prior) - set(out))
    if extra:
        raise ValueError(f"prior parameters not in the model: {extra[:5]}")
    return out


def _copy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.array(x, np.float32), tree)


def _identity_branch(block: Any) -> Any:
    out = _copy(block)
    for module, layer in _BRANCH_OUT:
        for leaf in out[module][layer].values():
            leaf[...] = 0.0
    return out
