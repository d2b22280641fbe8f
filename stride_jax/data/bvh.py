"""A small BVH reader with vectorised forward kinematics.

Supported: ``HIERARCHY`` with ``ROOT``/``JOINT``/``End Site`` blocks, ``OFFSET``, ``CHANNELS``
with 3 or 6 channels (positions and/or rotations in any order and Euler order), ``MOTION``
with ``Frames:`` and ``Frame Time:``; LF or CRLF line ends.

Rotations are intrinsic in the listed order: for ``CHANNELS 3 Zrotation Yrotation Xrotation``
the joint's local rotation is ``R = Rz(z) @ Ry(y) @ Rx(x)`` (angles in degrees), and a child
is placed at ``p_child = p_parent + R_parent_global @ t_child``.

Position channels: most exporters write absolute local positions (the OFFSET is replaced, as
in LAFAN1, whose root OFFSET equals its first frame's position), while some in-place exports
(``test3.bvh``: root OFFSET ``(0, 0.718, 0)``, root channels ~0) write positions relative to
the OFFSET. With ``position_channels='auto'`` each joint's values are taken as absolute when
its first-frame value is closer to the OFFSET than to zero, else they are added to the OFFSET.

End Sites become joints named ``<parent>_end``. Units are given or detected from the rest
pose's extent (below 5 units: metres; below 500: centimetres; else millimetres).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stride_jax.data.dataset import Motion

UNIT_SCALE: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254}
_AXES = {"X": 0, "Y": 1, "Z": 2}


@dataclasses.dataclass
class BvhJoint:
    """One node of the hierarchy.

    Attributes:
      name: joint name (``<parent>_end`` for End Sites).
      parent: index of the parent joint, -1 for the root.
      offset: ``(3,)`` OFFSET in file units.
      channels: channel names such as ``'Zrotation'``; empty for End Sites.
    """

    name: str
    parent: int
    offset: np.ndarray
    channels: tuple[str, ...]


@dataclasses.dataclass
class Bvh:
    """A parsed BVH file.

    Attributes:
      joints: hierarchy in file order (parents precede children).
      frame_time: seconds per frame.
      motion: ``(T, C)`` float64 channel values, channels in hierarchy order.
    """

    joints: list[BvhJoint]
    frame_time: float
    motion: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def _expect(tokens: list[str], i: int, what: str, name: str) -> str:
    if i >= len(tokens):
        raise ValueError(f"{name}: truncated HIERARCHY, expected {what}")
    return tokens[i]


def _parse_hierarchy(tokens: list[str], name: str) -> list[BvhJoint]:
    joints: list[BvhJoint] = []
    stack: list[int] = []
    i = 0
    if not tokens or tokens[0] != "HIERARCHY":
        raise ValueError(f"{name}: not a BVH file (no HIERARCHY keyword at the start)")
    i = 1
    pending: BvhJoint | None = None
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            if (tok == "ROOT") != (not stack):
                raise ValueError(f"{name}: {tok} at the wrong nesting level")
            jname = _expect(tokens, i + 1, "a joint name", name)
            pending = BvhJoint(jname, stack[-1] if stack else -1, np.zeros(3), ())
            i += 2
        elif tok == "End":
            if _expect(tokens, i + 1, "'Site'", name) != "Site" or not stack:
                raise ValueError(f"{name}: malformed End Site")
            pending = BvhJoint(f"{joints[stack[-1]].name}_end", stack[-1], np.zeros(3), ())
            i += 2
        elif tok == "{":
            if pending is None:
                raise ValueError(f"{name}: '{{' without a joint")
            joints.append(pending)
            stack.append(len(joints) - 1)
            pending = None
            i += 1
        elif tok == "}":
            if not stack:
                raise ValueError(f"{name}: unbalanced '}}' in HIERARCHY")
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            try:
                joints[stack[-1]].offset = np.array([float(t) for t in tokens[i + 1 : i + 4]])
            except (IndexError, ValueError):
                raise ValueError(f"{name}: bad OFFSET near joint {joints[stack[-1]].name if stack else '?'}") from None
            if joints[stack[-1]].offset.shape != (3,):
                raise ValueError(f"{name}: truncated OFFSET")
            i += 4
        elif tok == "CHANNELS":
            try:
                n = int(_expect(tokens, i + 1, "a channel count", name))
            except ValueError:
                raise ValueError(f"{name}: bad CHANNELS count near joint {joints[stack[-1]].name}") from None
            chans = tuple(tokens[i + 2 : i + 2 + n])
            bad = [c for c in chans if len(c) != 9 or c[0] not in _AXES or c[1:] not in ("position", "rotation")]
            if len(chans) != n or bad:
                raise ValueError(f"{name}: bad CHANNELS {chans} on joint {joints[stack[-1]].name}")
            joints[stack[-1]].channels = chans
            i += 2 + n
        else:
            raise ValueError(f"{name}: unexpected token {tok!r} in HIERARCHY")
    if stack or pending is not None:
        raise ValueError(f"{name}: truncated HIERARCHY (unclosed '{{')")
    if not joints:
        raise ValueError(f"{name}: HIERARCHY has no joints")
    return joints


def parse_bvh(text: str, name: str = "<string>") -> Bvh:
    """Parse BVH text.

    Args:
      text: file content (LF or CRLF).
      name: file name used in error messages.

    Raises:
      ValueError: malformed hierarchy, missing/short MOTION section or a wrong frame count.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    head, sep, body = text.partition("MOTION")
    if not sep:
        raise ValueError(f"{name}: no MOTION section (file truncated?)")
    joints = _parse_hierarchy(head.split(), name)
    lines = body.split("\n")
    frames = frame_time = None
    k = 0
    while k < len(lines) and (frames is None or frame_time is None):
        line = lines[k].strip()
        k += 1
        if not line:
            continue
        key, _, value = line.partition(":")
        try:
            if key.strip().lower() == "frames":
                frames = int(value)
            elif key.strip().lower() == "frame time":
                frame_time = float(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{name}: bad MOTION header line {line!r}") from None
    if frames is None or frame_time is None:
        raise ValueError(f"{name}: MOTION section lacks 'Frames:' or 'Frame Time:' (file truncated?)")
    if frames < 1 or not frame_time > 0:
        raise ValueError(f"{name}: Frames: {frames} / Frame Time: {frame_time} must be positive")
    num_channels = sum(len(j.channels) for j in joints)
    rows = [ln.split() for ln in lines[k:] if ln.strip()]
    for r, row in enumerate(rows):
        if len(row) != num_channels:
            raise ValueError(
                f"{name}: frame {r} has {len(row)} values, expected {num_channels} (file truncated or corrupt)"
            )
    if len(rows) != frames:
        raise ValueError(f"{name}: header says Frames: {frames} but {len(rows)} frame lines follow")
    try:
        motion = np.array(rows, dtype=np.float64).reshape(frames, num_channels)
    except ValueError:
        raise ValueError(f"{name}: non-numeric value in MOTION data") from None
    return Bvh(joints=joints, frame_time=frame_time, motion=motion)


def axis_rotation(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotation matrices about ``'X'``, ``'Y'`` or ``'Z'``: ``(T,)`` degrees -> ``(T, 3, 3)``."""
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    if axis == "X":
        m = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == "Y":
        m = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    elif axis == "Z":
        m = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    else:
        raise ValueError(f"unknown rotation axis {axis!r}")
    return np.stack([np.stack(row, axis=-1) for row in m], axis=-2)


def rest_extent(bvh: Bvh) -> float:
    """Largest axis-aligned extent of the rest pose (all rotations zero), in file units."""
    pos = np.zeros((len(bvh.joints), 3))
    for j, joint in enumerate(bvh.joints):
        pos[j] = joint.offset + (pos[joint.parent] if joint.parent >= 0 else 0.0)
    return float(np.ptp(pos, axis=0).max())


def detect_units(bvh: Bvh) -> str:
    """Guess the length unit from the rest-pose extent: ``'m'``, ``'cm'`` or ``'mm'``."""
    extent = rest_extent(bvh)
    return "m" if extent < 5.0 else "cm" if extent < 500.0 else "mm"


def forward_kinematics(bvh: Bvh, position_channels: str = "auto") -> np.ndarray:
    """Global joint positions for every frame, in file units.

    Args:
      bvh: parsed file.
      position_channels: ``'auto'``, ``'absolute'`` (values replace the OFFSET) or
        ``'relative'`` (values are added to the OFFSET); see the module docstring.

    Returns:
      ``(T, J, 3)`` float64 positions, J including End Sites.
    """
    if position_channels not in ("auto", "absolute", "relative"):
        raise ValueError(f"position_channels must be auto/absolute/relative, got {position_channels!r}")
    num_frames, num_joints = bvh.num_frames, len(bvh.joints)
    pos = np.zeros((num_frames, num_joints, 3))
    rot = np.zeros((num_frames, num_joints, 3, 3))
    col = 0
    for j, joint in enumerate(bvh.joints):
        values = bvh.motion[:, col : col + len(joint.channels)]
        col += len(joint.channels)
        trans = np.broadcast_to(joint.offset, (num_frames, 3)).copy()
        local = np.broadcast_to(np.eye(3), (num_frames, 3, 3))
        pos_axes = [(k, _AXES[c[0]]) for k, c in enumerate(joint.channels) if c.endswith("position")]
        if pos_axes:
            ks, axes = zip(*pos_axes, strict=True)
            first = values[0, list(ks)]
            relative = position_channels == "relative" or (
                position_channels == "auto"
                and np.linalg.norm(first - joint.offset[list(axes)]) > np.linalg.norm(first)
            )
            trans[:, list(axes)] = values[:, list(ks)] + (joint.offset[list(axes)] if relative else 0.0)
        for k, c in enumerate(joint.channels):
            if c.endswith("rotation"):
                local = local @ axis_rotation(c[0], values[:, k])
        if joint.parent < 0:
            pos[:, j] = trans
            rot[:, j] = local
        else:
            parent_rot = rot[:, joint.parent]
            pos[:, j] = pos[:, joint.parent] + np.einsum("tij,tj->ti", parent_rot, trans)
            rot[:, j] = parent_rot @ local
    return pos


def read_bvh(
    path: Path | str,
    *,
    units: str = "auto",
    position_channels: str = "auto",
    subject: str | None = None,
    sequence: str | None = None,
    source: str = "bvh",
) -> Motion:
    """Read a BVH file into global joint positions in metres (the file's own axes).

    Args:
      path: ``.bvh`` file.
      units: ``'auto'`` or a key of :data:`UNIT_SCALE`.
      position_channels: see :func:`forward_kinematics`.
      subject: performer id; defaults to the file stem.
      sequence: sequence name; defaults to the file stem.
      source: rig name stored in the result (e.g. ``'lafan1'``).

    Returns:
      ``Motion`` with ``(T, J, 3)`` float32 positions in metres; fps = 1 / Frame Time,
      snapped to the nearest integer when within 0.1 % (``0.033333`` s -> 30 Hz).

    Raises:
      FileNotFoundError: no such file.
      ValueError: malformed file or unknown unit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BVH file not found: {path}")
    bvh = parse_bvh(path.read_text(encoding="utf-8", errors="replace"), name=str(path))
    unit = detect_units(bvh) if units == "auto" else units
    if unit not in UNIT_SCALE:
        raise ValueError(f"{path}: unknown unit {units!r}; expected 'auto' or one of {sorted(UNIT_SCALE)}")
    positions = forward_kinematics(bvh, position_channels) * UNIT_SCALE[unit]
    fps = 1.0 / bvh.frame_time
    if abs(fps - round(fps)) < 1e-3 * fps:
        fps = float(round(fps))
    return Motion(
        positions=positions.astype(np.float32),
        fps=fps,
        joint_names=[j.name for j in bvh.joints],
        subject=subject if subject is not None else path.stem,
        sequence=sequence if sequence is not None else path.stem,
        source=source,
    )
