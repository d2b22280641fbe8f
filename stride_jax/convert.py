"""Torch-free mapping between MotionBERT DSTformer state dicts and stride_jax Flax params.

A MotionBERT state dict (``ckpt['model_pos']``, often with ``module.`` prefixes from
``nn.DataParallel``) maps one-to-one onto ``stride_jax.model.DSTFormer`` params:

    joints_embed.weight            -> joints_embed/kernel  (transposed: torch Linear is (out, in))
    blocks_st.<i>.attn_s.qkv.bias  -> blocks_st_<i>/attn_s/qkv/bias
    blocks_ts.<i>.norm1_t.weight   -> blocks_ts_<i>/norm1_t/scale  (LayerNorm)
    ts_attn.<i>.weight             -> ts_attn_<i>/kernel
    pre_logits.fc.weight           -> pre_logits_fc/kernel
    pos_embed, temp_embed          -> same names, same shapes

The architecture (``dim_feat, dim_rep, depth, mlp_ratio, maxlen, num_joints``) is read from
the array shapes; ``num_heads`` cannot be recovered from shapes and must be given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from stride_jax import model as model_lib

_DP_PREFIX = "module."
_INDEXED = ("blocks_st", "blocks_ts", "ts_attn")
_BLOCK_KEY = re.compile(r"^(blocks_st|blocks_ts|ts_attn)\.(\d+)\.")
# Keys whose shapes determine the architecture.
_ARCH_KEYS = ("joints_embed.weight", "pos_embed", "temp_embed", "pre_logits.fc.weight",
              "head.weight", "blocks_st.0.mlp_s.fc1.weight")
_MAX_LISTED = 20


def strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Removes leading ``module.`` prefixes (``nn.DataParallel``) from every key."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(_DP_PREFIX):
            key = key[len(_DP_PREFIX):]
        out[key] = value
    return out


def _listing(keys: set[str]) -> str:
    shown = sorted(keys)[:_MAX_LISTED]
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f" ... (+{more} more)" if more > 0 else "")


def infer_model_config(state_dict: Mapping[str, np.ndarray], num_heads: int = 8) -> dict:
    """Reads the DSTformer architecture from the shapes of a (prefix-free) state dict.

    Returns:
      ``config.model``-style dict: ``dim_feat, dim_rep, depth, num_heads, mlp_ratio, maxlen,
      num_joints`` (plus ``dim_in``/``dim_out`` when not 3 and ``att_fuse`` when False).

    Raises:
      ValueError: when a key needed to read the architecture is missing or ``num_heads``
        does not divide ``dim_feat``.
    """
    missing = [k for k in _ARCH_KEYS if k not in state_dict]
    if missing:
        raise ValueError(
            "not a MotionBERT DSTformer state dict: missing keys needed to infer the "
            f"architecture: {', '.join(missing)}; found keys: {_listing(set(state_dict))}")
    dim_feat, dim_in = np.shape(state_dict["joints_embed.weight"])
    dim_rep = np.shape(state_dict["pre_logits.fc.weight"])[0]
    dim_out = np.shape(state_dict["head.weight"])[0]
    hidden = np.shape(state_dict["blocks_st.0.mlp_s.fc1.weight"])[0]
    mlp_ratio = hidden / dim_feat
    if int(dim_feat * mlp_ratio) != hidden:
        raise ValueError(f"MLP hidden size {hidden} is not int(dim_feat * ratio) for any ratio")
    if num_heads <= 0 or dim_feat % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide dim_feat={dim_feat}")
    indices = [int(m.group(2)) for m in map(_BLOCK_KEY.match, state_dict)
               if m and m.group(1) != "ts_attn"]
    config = dict(dim_feat=int(dim_feat), dim_rep=int(dim_rep), depth=max(indices) + 1,
                  num_heads=int(num_heads), mlp_ratio=float(mlp_ratio),
                  maxlen=int(np.shape(state_dict["temp_embed"])[1]),
                  num_joints=int(np.shape(state_dict["pos_embed"])[1]))
    if dim_in != 3:
        config["dim_in"] = int(dim_in)
    if dim_out != 3:
        config["dim_out"] = int(dim_out)
    if not any(k.startswith("ts_attn.") for k in state_dict):
        config["att_fuse"] = False
    return config


def expected_shapes(model_config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The MotionBERT state-dict keys and shapes of a DSTformer with ``model_config``."""
    c, r = model_config["dim_feat"], model_config["dim_rep"]
    hidden = int(c * model_config["mlp_ratio"])
    d_in, d_out = model_config.get("dim_in", 3), model_config.get("dim_out", 3)
    shapes: dict[str, tuple[int, ...]] = {
        "joints_embed.weight": (c, d_in), "joints_embed.bias": (c,),
        "pos_embed": (1, model_config.get("num_joints", 17), c),
        "temp_embed": (1, model_config["maxlen"], 1, c),
        "norm.weight": (c,), "norm.bias": (c,),
        "pre_logits.fc.weight": (r, c), "pre_logits.fc.bias": (r,),
        "head.weight": (d_out, r), "head.bias": (d_out,),
    }
    layer = {"norm1_{k}.weight": (c,), "norm1_{k}.bias": (c,),
             "attn_{k}.qkv.weight": (3 * c, c), "attn_{k}.qkv.bias": (3 * c,),
             "attn_{k}.proj.weight": (c, c), "attn_{k}.proj.bias": (c,),
             "norm2_{k}.weight": (c,), "norm2_{k}.bias": (c,),
             "mlp_{k}.fc1.weight": (hidden, c), "mlp_{k}.fc1.bias": (hidden,),
             "mlp_{k}.fc2.weight": (c, hidden), "mlp_{k}.fc2.bias": (c,)}
    for i in range(model_config["depth"]):
        for stream in ("blocks_st", "blocks_ts"):
            for kind in ("s", "t"):
                for name, shape in layer.items():
                    shapes[f"{stream}.{i}.{name.format(k=kind)}"] = shape
        if model_config.get("att_fuse", True):
            shapes[f"ts_attn.{i}.weight"] = (2, 2 * c)
            shapes[f"ts_attn.{i}.bias"] = (2,)
    return shapes


def _flax_path(key: str, ndim: int) -> tuple[str, ...]:
    """``blocks_st.0.attn_s.qkv.weight`` -> ``('blocks_st_0', 'attn_s', 'qkv', 'kernel')``."""
    parts = key.split(".")
    if parts[0] in _INDEXED:
        parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
    elif parts[:2] == ["pre_logits", "fc"]:
        parts = ["pre_logits_fc"] + parts[2:]
    if parts[-1] == "weight":
        parts[-1] = "kernel" if ndim == 2 else "scale"
    return tuple(parts)


def _torch_key(path: tuple[str, ...]) -> str:
    """Inverse of ``_flax_path``."""
    parts = list(path)
    head = re.fullmatch(r"(blocks_st|blocks_ts|ts_attn)_(\d+)", parts[0])
    if head:
        parts = [head.group(1), head.group(2)] + parts[1:]
    elif parts[0] == "pre_logits_fc":
        parts = ["pre_logits", "fc"] + parts[1:]
    if parts[-1] in ("kernel", "scale"):
        parts[-1] = "weight"
    return ".".join(parts)


def _flatten(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update({(key,) + sub: v for sub, v in _flatten(value).items()})
        else:
            flat[(key,)] = value
    return flat


def state_dict_to_params(state_dict: Mapping[str, np.ndarray],
                         num_heads: int = 8) -> tuple[dict, dict]:
    """Converts a MotionBERT DSTformer state dict to ``stride_jax`` DSTFormer params.

    Args:
      state_dict: key -> float array (numpy or anything ``np.asarray`` accepts), torch
        layout; ``module.`` prefixes are stripped.
      num_heads: attention heads of the checkpoint (not recoverable from shapes).

    Returns:
      ``(params, model_config)``: a nested dict of float32 numpy arrays matching
      ``model.init_params(model.build_model(model_config), key)``, and the config.

    Raises:
      ValueError: listing missing, unexpected and wrongly shaped keys.
    """
    sd = {k: np.asarray(v, dtype=np.float32) for k, v in strip_prefix(state_dict).items()}
    config = infer_model_config(sd, num_heads)
    expected = expected_shapes(config)
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    wrong = {f"{k} {sd[k].shape} (expected {expected[k]})"
             for k in set(expected) & set(sd) if sd[k].shape != expected[k]}
    if missing or unexpected or wrong:
        problems = [f"{label} ({len(keys)}): {_listing(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("wrong shapes", wrong)) if keys]
        raise ValueError("state dict does not match a MotionBERT DSTformer with inferred "
                         f"config {config}: " + "; ".join(problems))
    params: dict = {}
    for key, value in sd.items():
        *parents, leaf = _flax_path(key, value.ndim)
        node = params
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = np.ascontiguousarray(value.T) if leaf == "kernel" else value
    _check_against_model(params, config)
    return params, config


def _check_against_model(params: dict, config: dict) -> None:
    """Raises ValueError unless ``params`` has exactly the Flax model's paths and shapes."""
    model = model_lib.build_model(config)
    abstract = jax.eval_shape(lambda: model_lib.init_params(model, jax.random.key(0)))
    want = {p: tuple(s.shape) for p, s in _flatten(abstract).items()}
    got = {p: tuple(v.shape) for p, v in _flatten(params).items()}
    if want != got:
        diff = {"/".join(p) for p in set(want) ^ set(got)}
        diff |= {f"{'/'.join(p)} {got[p]} vs {want[p]}"
                 for p in set(want) & set(got) if want[p] != got[p]}
        raise ValueError(f"converted params do not match the Flax DSTFormer: {_listing(diff)}")


def params_to_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of ``state_dict_to_params``: Flax params -> MotionBERT keys (no prefix)."""
    out = {}
    for path, value in _flatten(params).items():
        value = np.asarray(value, dtype=np.float32)
        out[_torch_key(path)] = np.ascontiguousarray(value.T) if path[-1] == "kernel" else value
    return out
