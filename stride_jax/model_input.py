"""What the DSTFormer sees: root-relative poses and, optionally, a validity channel.

``config.model.dim_in`` is 3 (poses only, MotionBERT's layout for 3D input) or 4 (poses
plus a fourth channel that is 1 where the joint was detected and 0 where it was hidden /
in-filled by interpolation, or is padding).  MotionBERT feeds ``(x, y, confidence)`` of
2D keypoints to the same joint embedding; here the prior learns which frames it must
in-fill instead of trust.  This module is the one place that builds, mirrors and masks
model inputs, and that widens a 3-channel prior's params to 4 channels (a zero row in
``joints_embed/kernel``: the widened model computes exactly what the prior did).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stride_jax import skeleton
from stride_jax.data import augment

POSE_CHANNELS = 3
DIM_IN_CHOICES = (3, 4)
_EMBED = ("joints_embed", "kernel")


def check_dim_in(dim_in: int) -> int:
    """Returns ``dim_in`` or raises ``ValueError`` unless it is 3 or 4."""
    if dim_in not in DIM_IN_CHOICES:
        raise ValueError(f"model.dim_in must be 3 (poses) or 4 (poses + validity channel), "
                         f"got {dim_in}")
    return int(dim_in)


def make_input(poses: jax.Array, valid: jax.Array | None, dim_in: int) -> jax.Array:
    """Model input ``[..., T, J, dim_in]`` from poses and their validity.

    Args:
      poses: ``[..., T, J, 3]`` root-relative poses.
      valid: 1/True where detected, 0/False where hidden, in-filled or padding: per frame
        ``[..., T]`` or per joint ``[..., T, J]`` (bool or float); None: everything valid.
        Ignored when ``dim_in == 3``.
      dim_in: ``config.model.dim_in``.

    Returns:
      ``poses`` itself for ``dim_in == 3``, else poses with the validity channel appended.
    """
    check_dim_in(dim_in)
    if dim_in == POSE_CHANNELS:
        return poses
    poses = jnp.asarray(poses)
    if valid is None:
        channel = jnp.ones(poses.shape[:-1], poses.dtype)
    else:
        valid = jnp.asarray(valid)
        if valid.shape == poses.shape[:-2]:
            valid = valid[..., None]
        if valid.ndim != poses.ndim - 1 or valid.shape[-1] not in (1, poses.shape[-2]):
            raise ValueError(f"validity {valid.shape} fits neither frames "
                             f"{poses.shape[:-2]} nor joints {poses.shape[:-1]}")
        channel = jnp.broadcast_to(valid.astype(poses.dtype), poses.shape[:-1])
    return jnp.concatenate([poses, channel[..., None]], axis=-1)


def poses_of(inputs: jax.Array) -> jax.Array:
    """The pose channels ``[..., 3]`` of a model input."""
    return inputs[..., :POSE_CHANNELS]


def validity_of(inputs: jax.Array) -> jax.Array:
    """The validity channel ``[..., J]`` of a 4-channel model input (1 detected, 0 not)."""
    if inputs.shape[-1] == POSE_CHANNELS:
        raise ValueError("a 3-channel model input has no validity channel")
    return inputs[..., POSE_CHANNELS]


def hide(inputs: jax.Array, poses: jax.Array, hidden: jax.Array) -> jax.Array:
    """``inputs`` with its poses replaced by ``poses`` (e.g. re-interpolated) and its
    validity channel (if any) set to 0 on ``hidden`` frames ``[..., T]``."""
    if inputs.shape[-1] == POSE_CHANNELS:
        return poses
    channel = inputs[..., POSE_CHANNELS:] * (~hidden)[..., None, None].astype(inputs.dtype)
    return jnp.concatenate([poses, channel], axis=-1)


def mirror_input(inputs: jax.Array) -> jax.Array:
    """Left/right mirror of a model input: poses by ``augment.mirror``, extra channels
    follow their joints."""
    if inputs.shape[-1] == POSE_CHANNELS:
        return augment.mirror(inputs)
    mirrored = augment.mirror(poses_of(inputs))
    extra = inputs[..., POSE_CHANNELS:][..., np.asarray(skeleton.MIRROR), :]
    return jnp.concatenate([mirrored, extra], axis=-1)


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def adapt_params(params: Any, target: Any, *, source: str = "the prior") -> Any:
    """Fits ``params`` to the tree and shapes of ``target`` (numpy arrays out).

    Identical shapes are copied; a 3-channel ``joints_embed/kernel [3, C]`` going into a
    4-channel model ``[4, C]`` gets a zero row for the validity channel, so the widened
    model's output equals the 3-channel one's for any validity.  Anything else raises.

    Args:
      params: parameter tree to copy (e.g. a loaded prior's).
      target: parameter tree (arrays or ``ShapeDtypeStruct``) of the model to fill.
      source: what ``params`` is, for error messages.

    Raises:
      ValueError: the trees differ in structure or a leaf in shape (both named).
    """
    got = {_path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
    want = jax.tree_util.tree_leaves_with_path(target)
    want_names = {_path_name(p) for p, _ in want}
    missing, extra = sorted(want_names - set(got)), sorted(set(got) - want_names)
    if missing or extra:
        raise ValueError(f"{source} does not match the model: parameters missing from "
                         f"{source}: {missing[:5]}, not in the model: {extra[:5]} "
                         "(different depth or architecture?)")
    out = []
    for path, leaf in want:
        name = _path_name(path)
        value = np.asarray(got[name], np.float32)
        shape = tuple(leaf.shape)
        if value.shape != shape:
            widen = (name == "/".join(_EMBED) and value.ndim == 2
                     and value.shape[0] == POSE_CHANNELS and shape[0] > POSE_CHANNELS
                     and value.shape[1:] == shape[1:])
            if not widen:
                raise ValueError(f"{source} parameter {name} has shape {value.shape}, the "
                                 f"model expects {shape} (check config.model against the "
                                 "prior's prior.json)")
            pad = np.zeros((shape[0] - value.shape[0],) + shape[1:], np.float32)
            value = np.concatenate([value, pad])
        out.append(value.astype(np.dtype(leaf.dtype)))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), out)


def widen_params(params: Any, dim_in: int) -> Any:
    """A 3-channel prior's params for a ``dim_in``-channel model (zero validity rows)."""
    check_dim_in(dim_in)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), params)
    kernel = params[_EMBED[0]][_EMBED[1]]
    target[_EMBED[0]][_EMBED[1]] = jax.ShapeDtypeStruct(
        (dim_in,) + tuple(np.shape(kernel))[1:], np.asarray(kernel).dtype)
    return adapt_params(params, target)
