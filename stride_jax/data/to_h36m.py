"""Map every motion source to Human3.6M-17 joints in one world frame.

World convention (all prepared data, the demo asset and :func:`to_h36m` output):
metres; right-handed; **+Y up**; the floor at y ~ 0 (each source's own floor is kept, no
shift); X and Z horizontal, heading arbitrary. Y-up sources (BVH) keep their axes. Z-up
sources (climb, OMOMO) are rotated by -90 deg about X: ``(x, y, z) -> (x, z, -y)``.

Joint mapping per rig (``mid(a, b)`` is the midpoint; left/right as labelled in the files):

==========  ============  =================  ===============  ===================
H36M        lafan1        climb              omomo            blender (test3)
==========  ============  =================  ===============  ===================
0 pelvis    Hips          Hips               mid(L/R_Hip)     pelvis
1-3 R leg   RightUpLeg,   same               R_Hip, R_Knee,   thigh.R, shin.R,
            RightLeg,                        R_Ankle          foot.R
            RightFoot
4-6 L leg   Left...       same               L_...            ... .L
7 spine     Spine1        mid(Spine,Spine1)  Torso            spine.001
8 thorax    Neck          Neck               Neck             neck
9 neck      Head          Head               Head             face
10 head     extrapolated (all rigs, see :func:`head_top`)
11-13 L     LeftArm,      same               L_Shoulder,      upper_arm.L,
arm         LeftForeArm,                     L_Elbow,         forearm.L,
            LeftHand                         L_Wrist          forearm.L_end
14-16 R     Right...      same               R_...            ... .R
==========  ============  =================  ===============  ===================

The ``lafan1`` names also fit Mixamo and CMU-style BVH rigs (a ``prefix:`` namespace is
ignored), so :func:`detect_rig` maps user BVH files with those names.

OMOMO (SMPL-H): the ``Pelvis`` joint sits 9-11 cm above the hips, hence the hip midpoint. The
spine is ``Torso`` (SMPL spine1, 0.20-0.24 m above the hip midpoint), a child of ``Pelvis``, so
pelvis->spine stays rigid; ``Spine`` (spine2, 0.32-0.38 m) would make that bone vary by
7-11 cm in the box-lifting clips.

Bones through the spine and the clavicles are not rigid in any source (the mapped joints
skip intermediate joints): pelvis->spine and spine->thorax vary by up to ~1.5 cm and
thorax->shoulder by up to ~7 cm (clavicle motion). Limb bones are rigid (< 1 mm).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stride_jax import skeleton
from stride_jax.data.dataset import Motion

HEAD_FRACTION: float = 0.21
HEAD_RANGE_M: tuple[float, float] = (0.10, 0.12)


@dataclasses.dataclass(frozen=True)
class Rig:
    """How one source maps to H36M-17.

    Attributes:
      up: the source's vertical axis, ``'y'`` or ``'z'``.
      joints: for every H36M joint name but ``'head'``, the source joints whose mean gives it.
    """

    up: str
    joints: dict[str, tuple[str, ...]]


_LIMB_JOINTS = (
    ("r_hip", "r_knee", "r_ankle"),
    ("l_hip", "l_knee", "l_ankle"),
    ("l_shoulder", "l_elbow", "l_wrist"),
    ("r_shoulder", "r_elbow", "r_wrist"),
)
_PELVIS, _SPINE, _THORAX, _NECK, _HEAD = (
    skeleton.JOINT_INDEX[n] for n in ("pelvis", "spine", "thorax", "neck", "head")
)


def _limbs(*chains: tuple[str, str, str]) -> dict[str, tuple[str, ...]]:
    """H36M limb joints from source chains given as right leg, left leg, left arm, right arm."""
    pairs = zip(_LIMB_JOINTS, chains, strict=True)
    return {h: (s,) for h_chain, s_chain in pairs for h, s in zip(h_chain, s_chain, strict=True)}


def _axial(pelvis, spine, thorax, neck) -> dict[str, tuple[str, ...]]:
    return {"pelvis": pelvis, "spine": spine, "thorax": thorax, "neck": neck}


_LAFAN_LIMBS = _limbs(
    ("RightUpLeg", "RightLeg", "RightFoot"),
    ("LeftUpLeg", "LeftLeg", "LeftFoot"),
    ("LeftArm", "LeftForeArm", "LeftHand"),
    ("RightArm", "RightForeArm", "RightHand"),
)

RIGS: dict[str, Rig] = {
    "lafan1": Rig("y", {**_axial(("Hips",), ("Spine1",), ("Neck",), ("Head",)), **_LAFAN_LIMBS}),
    "climb": Rig("z", {**_axial(("Hips",), ("Spine", "Spine1"), ("Neck",), ("Head",)), **_LAFAN_LIMBS}),
    "omomo": Rig(
        "z",
        {
            **_axial(("L_Hip", "R_Hip"), ("Torso",), ("Neck",), ("Head",)),
            **_limbs(
                ("R_Hip", "R_Knee", "R_Ankle"),
                ("L_Hip", "L_Knee", "L_Ankle"),
                ("L_Shoulder", "L_Elbow", "L_Wrist"),
                ("R_Shoulder", "R_Elbow", "R_Wrist"),
            ),
        },
    ),
    "blender": Rig(
        "y",
        {
            **_axial(("pelvis",), ("spine.001",), ("neck",), ("face",)),
            **_limbs(
                ("thigh.R", "shin.R", "foot.R"),
                ("thigh.L", "shin.L", "foot.L"),
                ("upper_arm.L", "forearm.L", "forearm.L_end"),
                ("upper_arm.R", "forearm.R", "forearm.R_end"),
            ),
        },
    ),
}


def _plain(name: str) -> str:
    """Joint name without a ``namespace:`` prefix (``'mixamorig:Hips'`` -> ``'Hips'``)."""
    return name.rsplit(":", 1)[-1]


def _missing(rig: Rig, names: list[str]) -> list[str]:
    have = {_plain(n) for n in names}
    return sorted({n for group in rig.joints.values() for n in group} - have)


def detect_rig(joint_names: list[str]) -> str:
    """Name of the first rig in :data:`RIGS` whose joints are all present.

    Raises:
      ValueError: no rig matches; the message lists what each rig lacks.
    """
    misses = {}
    for name, rig in RIGS.items():
        misses[name] = _missing(rig, joint_names)
        if not misses[name]:
            return name
    detail = "; ".join(f"{k} lacks {v[:6]}" for k, v in misses.items())
    raise ValueError(f"no known rig matches joints {joint_names[:8]}...: {detail}")


def to_world(positions: np.ndarray, up: str) -> np.ndarray:
    """Rotate ``[..., 3]`` positions from a ``'y'``- or ``'z'``-up frame to the Y-up world."""
    if up == "y":
        return np.asarray(positions)
    if up == "z":
        p = np.asarray(positions)
        return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)
    raise ValueError(f"up axis must be 'y' or 'z', got {up!r}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def head_top(pelvis: np.ndarray, spine: np.ndarray, thorax: np.ndarray, neck: np.ndarray) -> np.ndarray:
    """Extrapolate H36M joint 10 (head top), which no source records.

    ``head = neck + L * unit(unit(neck - thorax) + unit(thorax - spine))``: from joint 9 along
    the mean of the neck and upper-spine directions (the neck alone leans forward 25-40 deg in
    every source, which would put the head top in front of the face). One length per sequence,
    ``L = clip(HEAD_FRACTION * median |thorax - pelvis|, 0.10, 0.12)`` m, keeps the bone rigid
    and close to Human3.6M's ~0.115 m for torsos of 0.46-0.59 m.

    Args:
      pelvis, spine, thorax, neck: ``(T, 3)`` positions in metres (H36M joints 0, 7, 8, 9).

    Returns:
      ``(T, 3)`` head-top positions.
    """
    torso = np.median(np.linalg.norm(thorax - pelvis, axis=-1))
    length = float(np.clip(HEAD_FRACTION * torso, *HEAD_RANGE_M))
    return neck + length * _unit(_unit(neck - thorax) + _unit(thorax - spine))


def to_h36m(motion: Motion, rig: str | None = None) -> np.ndarray:
    """Convert a source motion to H36M-17 joints in the world frame.

    Args:
      motion: joint positions in metres in the source's own axes.
      rig: key of :data:`RIGS`; defaults to ``motion.source`` when that is a rig name,
        else to :func:`detect_rig` of the joint names.

    Returns:
      ``(T, 17, 3)`` float32 positions in metres, world Y up (module docstring).

    Raises:
      ValueError: unknown rig or joints missing from the motion.
    """
    if rig is None:
        rig = motion.source if motion.source in RIGS else detect_rig(motion.joint_names)
    if rig not in RIGS:
        raise ValueError(f"unknown rig {rig!r}; expected one of {sorted(RIGS)}")
    spec = RIGS[rig]
    missing = _missing(spec, motion.joint_names)
    if missing:
        raise ValueError(f"{motion.sequence}: rig {rig!r} needs joints {missing} that the motion lacks")
    index = {_plain(n): i for i, n in enumerate(motion.joint_names)}
    src = to_world(np.asarray(motion.positions, dtype=np.float64), spec.up)
    out = np.zeros((src.shape[0], skeleton.NUM_JOINTS, 3))
    for joint, names in spec.joints.items():
        out[:, skeleton.JOINT_INDEX[joint]] = src[:, [index[n] for n in names]].mean(axis=1)
    out[:, _HEAD] = head_top(out[:, _PELVIS], out[:, _SPINE], out[:, _THORAX], out[:, _NECK])
    return out.astype(np.float32)


def _check() -> None:
    for name, rig in RIGS.items():
        assert set(rig.joints) == set(skeleton.JOINT_NAMES) - {"head"}, name
        assert rig.up in ("y", "z"), name


_check()
