"""Human3.6M 17-joint skeleton: names, parents, bones and the left/right mirror.

This module is the only place skeleton constants live.  Poses elsewhere are
``[..., T, 17, 3]`` float32 arrays in metres, in the joint order below.
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",  # 0
    "r_hip",  # 1
    "r_knee",  # 2
    "r_ankle",  # 3
    "l_hip",  # 4
    "l_knee",  # 5
    "l_ankle",  # 6
    "spine",  # 7
    "thorax",  # 8
    "neck",  # 9  (neck / nose in Human3.6M)
    "head",  # 10 (head top)
    "l_shoulder",  # 11
    "l_elbow",  # 12
    "l_wrist",  # 13
    "r_shoulder",  # 14
    "r_elbow",  # 15
    "r_wrist",  # 16
)
NUM_JOINTS: int = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}
ROOT: int = 0

# Kinematic parent of every joint (-1 for the root).
PARENTS: np.ndarray = np.array(
    [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15], dtype=np.int32
)

# The 16 bones as (parent, child) index pairs, one per non-root joint.
BONES: np.ndarray = np.array(
    [(int(PARENTS[j]), j) for j in range(1, NUM_JOINTS)], dtype=np.int32
)
NUM_BONES: int = len(BONES)

# Index permutation that swaps left and right joints (apply together with x -> -x).
MIRROR: np.ndarray = np.array(
    [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13], dtype=np.int32
)

LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)


def bone_side(child: int) -> str:
    """``"left"``, ``"right"`` or ``"mid"``: the side of the bone ending at joint ``child``."""
    return "left" if child in LEFT else "right" if child in RIGHT else "mid"


def check_poses(x, name: str = "poses", *, like=None, joints: int | None = NUM_JOINTS,
                min_frames: int = 0) -> None:
    """Raises ``ValueError`` unless ``x`` (any array) is ``[..., T, J, 3]`` with
    ``J == joints`` (any J when None), ``T >= min_frames`` and, given ``like``, the same
    shape as ``like``."""
    shape = tuple(x.shape)
    want = f"[..., T, {'J' if joints is None else joints}, 3]"
    if len(shape) < 3 or shape[-1] != 3 or (joints is not None and shape[-2] != joints):
        raise ValueError(f"{name} must be {want}, got {shape}")
    if shape[-3] < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} frame(s), got {shape}")
    if like is not None and tuple(like.shape) != shape:
        raise ValueError(f"{name} {shape} and {tuple(like.shape)} shapes differ")


def root_relative(poses):
    """Subtracts the root joint (pelvis) of every frame: ``[..., J, 3]`` numpy or JAX."""
    return poses - poses[..., ROOT : ROOT + 1, :]


def _check() -> None:
    assert PARENTS.shape == (NUM_JOINTS,)
    assert np.all(PARENTS[1:] < np.arange(1, NUM_JOINTS)), "parents precede children"
    assert np.array_equal(MIRROR[MIRROR], np.arange(NUM_JOINTS)), "mirror is an involution"
    for left, right in zip(LEFT, RIGHT):
        assert MIRROR[left] == right and MIRROR[right] == left


_check()
