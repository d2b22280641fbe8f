"""Pose-sequence augmentation and the world -> camera view.

JAX functions are keyed, jit-able and work on any leading batch axes
``[..., T, 17, 3]`` (one random draw per sequence, i.e. per leading index).
World coordinates are Y-up metres (floor near y=0); camera coordinates have
x right, y down, z forward (away from the camera), like Human3.6M cameras.
:func:`speed_change` is numpy, used on the host when cutting clips.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stride_jax import skeleton

# _ANCESTORS[j, k] = 1 if bone k (the bone ending at joint k, k >= 1) lies on the
# path from the root to joint j.
_ANCESTORS = np.zeros((skeleton.NUM_JOINTS, skeleton.NUM_JOINTS), np.float32)
for _j in range(1, skeleton.NUM_JOINTS):
    _k = _j
    while _k > 0:
        _ANCESTORS[_j, _k] = 1.0
        _k = int(skeleton.PARENTS[_k])
# Bones indexed by child joint 1..16; a left bone and its mirror share a factor.
_BONE_GROUP = np.minimum(skeleton.BONES[:, 1], skeleton.MIRROR[skeleton.BONES[:, 1]])
_GROUPS, _GROUP_OF_BONE = np.unique(_BONE_GROUP, return_inverse=True)


def root_relative(poses: jax.Array) -> jax.Array:
    """Subtracts the root joint (pelvis, joint 0) of every frame: ``[..., T, 17, 3]``."""
    poses = jnp.asarray(poses)
    skeleton.check_poses(poses)
    return skeleton.root_relative(poses)


def mirror(poses: jax.Array) -> jax.Array:
    """Left/right mirror: x -> -x and left/right joints swapped (skeleton.MIRROR).

    Valid in world and camera coordinates (x is lateral in both); an involution.
    """
    poses = jnp.asarray(poses)
    skeleton.check_poses(poses)
    flipped = poses.at[..., 0].multiply(-1.0)
    return flipped[..., skeleton.MIRROR, :]


def rotate_yaw(world: jax.Array, angle: jax.Array) -> jax.Array:
    """Rotates Y-up world poses about the vertical axis through frame 0's pelvis.

    Args:
      world: ``[..., T, 17, 3]`` Y-up metres.
      angle: ``[...]`` (or scalar) radians; positive turns +z towards +x.

    Returns:
      ``[..., T, 17, 3]`` rotated poses; y is unchanged.
    """
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    angle = jnp.broadcast_to(jnp.asarray(angle, world.dtype), world.shape[:-3])
    c, s = jnp.cos(angle)[..., None, None], jnp.sin(angle)[..., None, None]
    pivot = world[..., :1, :1, :].at[..., 1].set(0.0)
    x, y, z = jnp.moveaxis(world - pivot, -1, 0)
    rotated = jnp.stack([c * x + s * z, y, -s * x + c * z], axis=-1)
    return rotated + pivot


def random_yaw(key: jax.Array, world: jax.Array) -> jax.Array:
    """:func:`rotate_yaw` by a uniform angle in [-pi, pi) per sequence."""
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    angle = jax.random.uniform(key, world.shape[:-3], world.dtype, -jnp.pi, jnp.pi)
    return rotate_yaw(world, angle)


def draw_bone_factors(key: jax.Array, batch_shape: tuple[int, ...], *, std: float) -> jax.Array:
    """Per-sequence bone length factors ``1 + std * N(0, 1)`` truncated at 2 std.

    Left and right bones (skeleton.MIRROR) share a factor.

    Returns:
      ``batch_shape + (skeleton.NUM_BONES,)`` factors in the order of skeleton.BONES.
    """
    if not 0.0 <= std < 0.5:
        raise ValueError(f"std must be in [0, 0.5), got {std}")
    shape = tuple(batch_shape) + (len(_GROUPS),)
    per_group = 1.0 + std * jax.random.truncated_normal(key, -2.0, 2.0, shape)
    return jnp.take(per_group, jnp.asarray(_GROUP_OF_BONE), axis=-1)


def apply_bone_factors(poses: jax.Array, factors: jax.Array) -> jax.Array:
    """Scales each bone by its factor, rebuilding joints from the root outwards.

    Args:
      poses: ``[..., T, 17, 3]``.
      factors: ``[..., 16]`` per-sequence factors in the order of skeleton.BONES.

    Returns:
      ``[..., T, 17, 3]``: same root and bone directions, bone lengths scaled.
    """
    poses = jnp.asarray(poses)
    skeleton.check_poses(poses)
    if factors.shape != poses.shape[:-3] + (skeleton.NUM_BONES,):
        raise ValueError(
            f"factors must be {poses.shape[:-3] + (skeleton.NUM_BONES,)}, got {factors.shape}")
    parents = np.maximum(skeleton.PARENTS, 0)
    bones = poses - poses[..., parents, :]  # bone k ends at joint k; bone 0 is zero
    per_joint = jnp.concatenate([jnp.ones_like(factors[..., :1]), factors], axis=-1)
    scaled = bones * per_joint[..., None, :, None].astype(poses.dtype)
    offsets = jnp.einsum("jk,...tkc->...tjc", jnp.asarray(_ANCESTORS, poses.dtype), scaled)
    return poses[..., :1, :] + offsets


def scale_bones(key: jax.Array, world: jax.Array, *, std: float = 0.05) -> jax.Array:
    """Random per-sequence, left/right symmetric bone length scaling (directions kept).

    Uses :func:`draw_bone_factors` then :func:`apply_bone_factors`; ``world`` is
    ``[..., T, 17, 3]`` (any axes convention).
    """
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    return apply_bone_factors(world, draw_bone_factors(key, world.shape[:-3], std=std))


def world_to_camera(
    world: jax.Array, *, pitch_rad: float | jax.Array = 0.0, distance: float = 5.0
) -> jax.Array:
    """Maps Y-up world poses to camera axes (x right, y down, z forward).

    The camera looks along world +z from ``distance`` metres in front of (i.e.
    at lower z than) frame 0's pelvis, at pelvis height, so frame 0's pelvis
    lands at ``(0, 0, distance)``.  At zero pitch camera = ``(-x, -y, z)`` of
    the pelvis-centred world (a proper rotation: world +x is camera left).
    ``pitch_rad > 0`` orbits the camera upward about frame 0's pelvis so that it
    looks down on the person.

    Args:
      world: ``[..., T, 17, 3]`` Y-up metres.
      pitch_rad: scalar or ``[...]`` camera elevation (radians).
      distance: camera-to-pelvis distance at frame 0 (metres).

    Returns:
      ``[..., T, 17, 3]`` camera-space metres.
    """
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    pitch = jnp.broadcast_to(jnp.asarray(pitch_rad, world.dtype), world.shape[:-3])
    c, s = jnp.cos(pitch)[..., None, None], jnp.sin(pitch)[..., None, None]
    x, y, z = jnp.moveaxis(world - world[..., :1, :1, :], -1, 0)
    # Camera down = (0, -c, -s), forward = (0, -s, c), right = (-1, 0, 0) in world.
    return jnp.stack([-x, -c * y - s * z, -s * y + c * z + distance], axis=-1)


def random_view(
    key: jax.Array, world: jax.Array, *, pitch_max_rad: float = 0.26, distance: float = 5.0
) -> jax.Array:
    """Random yaw in [-pi, pi), pitch uniform in [-pitch_max_rad, pitch_max_rad], camera view.

    Args:
      key: PRNG key.
      world: ``[..., T, 17, 3]`` Y-up metres.
      pitch_max_rad: largest camera elevation magnitude (radians).
      distance: see :func:`world_to_camera`.

    Returns:
      ``[..., T, 17, 3]`` camera-space metres.
    """
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    if pitch_max_rad < 0:
        raise ValueError(f"pitch_max_rad must be >= 0, got {pitch_max_rad}")
    k_yaw, k_pitch = jax.random.split(key)
    pitch = jax.random.uniform(
        k_pitch, world.shape[:-3], world.dtype, -pitch_max_rad, pitch_max_rad)
    return world_to_camera(random_yaw(k_yaw, world), pitch_rad=pitch, distance=distance)


# Body-part mixing: the lower body (pelvis, hips, knees, ankles) of one clip, the rest
# (spine, thorax, neck, head, arms) of another.
LOWER_BODY: tuple[int, ...] = tuple(skeleton.JOINT_INDEX[n] for n in (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle"))
_UPPER = np.array([j not in LOWER_BODY for j in range(skeleton.NUM_JOINTS)])


def _per_sequence_choice(key: jax.Array, prob: float, batch_shape: tuple[int, ...]) -> jax.Array:
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {prob}")
    return jax.random.bernoulli(key, prob, batch_shape)[..., None, None, None]


def reverse_time(poses: jax.Array) -> jax.Array:
    """Plays ``[..., T, 17, 3]`` backwards (frame ``t`` becomes ``T - 1 - t``)."""
    poses = jnp.asarray(poses)
    skeleton.check_poses(poses)
    return jnp.flip(poses, axis=-3)


def random_reverse(key: jax.Array, poses: jax.Array, prob: float) -> jax.Array:
    """:func:`reverse_time` of each sequence with probability ``prob``."""
    poses = jnp.asarray(poses)
    skeleton.check_poses(poses)
    return jnp.where(_per_sequence_choice(key, prob, poses.shape[:-3]), reverse_time(poses),
                     poses)


def _facing(world: jax.Array) -> jax.Array:
    """Per-frame heading (radians, about the vertical axis) of the left-minus-right hip."""
    hips = world[..., skeleton.JOINT_INDEX["l_hip"], :] - world[..., skeleton.JOINT_INDEX[
        "r_hip"], :]
    return jnp.arctan2(hips[..., 0], hips[..., 2])


def mix_body_parts(lower: jax.Array, upper: jax.Array) -> jax.Array:
    """A clip with the lower body of ``lower`` and the upper body of ``upper``.

    Both are ``[..., T, 17, 3]`` Y-up world poses of the same shape.  Pelvis, hips, knees
    and ankles (``LOWER_BODY``) are ``lower``'s unchanged; the spine, thorax, neck, head
    and arms are ``upper``'s, re-rooted at ``lower``'s pelvis (so ``upper``'s
    pelvis-to-spine bone attaches there) and turned per frame about the vertical axis
    by the difference of the two clips' hip headings, so the torso keeps its twist
    relative to the hips.  Every bone of ``upper``'s upper body keeps its length.
    """
    lower, upper = jnp.asarray(lower), jnp.asarray(upper)
    skeleton.check_poses(lower, "lower")
    skeleton.check_poses(upper, "upper", like=lower)
    turn = (_facing(lower) - _facing(upper))[..., None]  # [..., T, 1]
    c, s = jnp.cos(turn), jnp.sin(turn)
    x, y, z = jnp.moveaxis(upper - upper[..., :1, :], -1, 0)
    rel = jnp.stack([c * x + s * z, y, -s * x + c * z], axis=-1)  # rotate_yaw's convention
    moved = lower[..., :1, :] + rel
    return jnp.where(jnp.asarray(_UPPER)[:, None], moved, lower)


def random_mix(key: jax.Array, world: jax.Array, prob: float) -> jax.Array:
    """Body-part mixing within a batch ``[B, T, 17, 3]``: with probability ``prob`` clip
    ``i`` gets the upper body of clip ``perm[i]`` (a random permutation of the batch;
    :func:`mix_body_parts`), otherwise it is unchanged."""
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    if world.ndim != 4:
        raise ValueError(f"world must be a batch [B, T, 17, 3], got {world.shape}")
    k_pick, k_perm = jax.random.split(key)
    partner = world[jax.random.permutation(k_perm, world.shape[0])]
    return jnp.where(_per_sequence_choice(k_pick, prob, world.shape[:1]),
                     mix_body_parts(world, partner), world)


def speed_change(positions: np.ndarray, factor: float) -> np.ndarray:
    """Resamples a sequence in time by linear interpolation (numpy, host side).

    Output frame ``k`` is the input at time ``k * factor`` (frames), for all
    ``k`` with ``k * factor <= T - 1``: ``factor > 1`` plays faster (fewer
    frames), ``factor < 1`` slower.

    Args:
      positions: ``[T, ...]`` array, e.g. ``[T, 17, 3]`` poses.
      factor: playback speed factor, > 0.

    Returns:
      ``[floor((T - 1) / factor) + 1, ...]`` array of the input dtype.
    """
    positions = np.asarray(positions)
    if positions.ndim < 1 or positions.shape[0] < 1:
        raise ValueError(f"positions must be [T, ...] with T >= 1, got {positions.shape}")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    n_in = positions.shape[0]
    n_out = int(np.floor((n_in - 1) / factor + 1e-9)) + 1
    t = np.minimum(np.arange(n_out) * float(factor), n_in - 1)
    lo = np.floor(t).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (t - lo).reshape((-1,) + (1,) * (positions.ndim - 1))
    out = positions[lo] * (1.0 - w) + positions[hi] * w
    return out.astype(positions.dtype)


# Axes of :func:`spin` in Y-up world coordinates: "yaw" turns about the vertical (spins,
# pirouettes), "pitch" about the lateral x axis (flips), "roll" about the z axis
# (cartwheels, rolls); which of pitch and roll a clip shows depends on its heading.
SPIN_AXES: tuple[str, ...] = ("yaw", "pitch", "roll")


def _axis_rotation(axis: jax.Array, angle: jax.Array) -> jax.Array:
    """``[..., 3, 3]`` rotation matrices by ``angle`` about world axis ``axis`` (0 = y,
    1 = x, 2 = z: the order of :data:`SPIN_AXES`)."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    one, zero = jnp.ones_like(c), jnp.zeros_like(c)
    yaw = jnp.stack([c, zero, s, zero, one, zero, -s, zero, c], -1)  # rotate_yaw's sense
    pitch = jnp.stack([one, zero, zero, zero, c, -s, zero, s, c], -1)
    roll = jnp.stack([c, -s, zero, s, c, zero, zero, zero, one], -1)
    axis = jnp.broadcast_to(axis, angle.shape)[..., None]
    mats = jnp.where(axis == 0, yaw, jnp.where(axis == 1, pitch, roll))
    return mats.reshape(angle.shape + (3, 3))


def spin(world: jax.Array, turns_per_frame: jax.Array, axis: jax.Array,
         phase: jax.Array | float = 0.0) -> jax.Array:
    """Whole-body rotation that grows over time about each frame's pelvis.

    Frame ``t`` is turned by ``phase + 2 pi turns_per_frame t`` radians about world axis
    ``axis`` through that frame's pelvis (the pelvis path is kept; bone lengths too).

    Args:
      world: ``[..., T, 17, 3]`` Y-up metres.
      turns_per_frame: ``[...]`` or scalar rotation rate (turns per frame; 1/fps is one
        turn per second).
      axis: ``[...]`` or scalar int index into :data:`SPIN_AXES`.
      phase: ``[...]`` or scalar starting angle (radians).

    Returns:
      ``[..., T, 17, 3]`` rotated poses.
    """
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    batch, frames = world.shape[:-3], world.shape[-3]
    rate = jnp.broadcast_to(jnp.asarray(turns_per_frame, world.dtype), batch)
    start = jnp.broadcast_to(jnp.asarray(phase, world.dtype), batch)
    angle = start[..., None] + 2 * jnp.pi * rate[..., None] * jnp.arange(frames,
                                                                         dtype=world.dtype)
    axis = jnp.broadcast_to(jnp.asarray(axis, jnp.int32), batch)[..., None]
    rot = _axis_rotation(axis, angle)  # [..., T, 3, 3]
    pelvis = world[..., :1, :]
    return jnp.einsum("...tij,...tkj->...tki", rot, world - pelvis) + pelvis


def random_spin(key: jax.Array, world: jax.Array, prob: float, *,
                max_turns_per_frame: float) -> jax.Array:
    """:func:`spin` of each sequence with probability ``prob``: a uniform axis, a rate
    uniform in ``[-max, max]`` turns per frame and a uniform starting phase."""
    world = jnp.asarray(world)
    skeleton.check_poses(world, "world")
    if max_turns_per_frame < 0:
        raise ValueError(f"max_turns_per_frame must be >= 0, got {max_turns_per_frame}")
    k_pick, k_axis, k_rate, k_phase = jax.random.split(key, 4)
    batch = world.shape[:-3]
    axis = jax.random.randint(k_axis, batch, 0, len(SPIN_AXES))
    rate = jax.random.uniform(k_rate, batch, world.dtype, -max_turns_per_frame,
                              max_turns_per_frame)
    phase = jax.random.uniform(k_phase, batch, world.dtype, -jnp.pi, jnp.pi)
    return jnp.where(_per_sequence_choice(k_pick, prob, batch),
                     spin(world, rate, axis, phase), world)
