"""Readers for the human motion shipped in ``holosoma-retargeting==0.1.0`` (Apache-2.0).

* Climb: ``demo_data/climb/mocap_climb_seq_<k>/*_joint_positions_f<a>-<b>.npy``, float32
  ``(T, 53, 3)`` world positions in metres, Z up, floor at z ~ 0, recorded at 120 Hz (the rate
  is not stored; the package's loader keeps every 4th frame and plays it at 30 fps). Joint order
  :data:`MOCAP_DEMO_JOINTS`.
* OMOMO: ``demo_data/OMOMO_new/sub<k>_<object>_<n>.pt``, a torch zip file holding one float32
  tensor ``(T, 591)`` at 30 fps, Z up. Columns 162:318 are 52 joint positions in metres in
  :data:`SMPLH_DEMO_JOINTS` order (column 162:165 equals the root position 0:3). Read without
  torch: the tensor's raw little-endian bytes are the zip member ``<name>/data/0`` and the
  shape is read from ``<name>/data.pkl`` by disassembling the pickle (nothing is unpickled).

Both readers return positions in the files' own axes (Z up); ``to_h36m`` converts to Y up.
The joint lists are copied from ``holosoma_retargeting/config_types/data_type.py``.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

import numpy as np

from stride_jax.data.dataset import Motion

CLIMB_FPS: float = 120.0
OMOMO_FPS: float = 30.0
OMOMO_COLUMNS: int = 591
OMOMO_POSITION_COLUMNS: slice = slice(162, 318)

_FINGERS = [f"{f}{k}" for f in ("Thumb", "Index", "Middle", "Ring", "Pinky") for k in (1, 2, 3)]
MOCAP_DEMO_JOINTS: tuple[str, ...] = (
    "Hips", "Spine", "Spine1", "Neck", "Head",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", *[f"LeftHand{f}" for f in _FINGERS],
    "RightShoulder", "RightArm", "RightForeArm", "RightHand", *[f"RightHand{f}" for f in _FINGERS],
    "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase",
    "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase",
    "LeftFootMod", "RightFootMod",
)  # fmt: skip

_SMPLH_FINGERS = [f"{f}{k}" for f in ("Index", "Middle", "Pinky", "Ring", "Thumb") for k in (1, 2, 3)]
SMPLH_DEMO_JOINTS: tuple[str, ...] = (
    "Pelvis", "L_Hip", "L_Knee", "L_Ankle", "L_Toe", "R_Hip", "R_Knee", "R_Ankle", "R_Toe",
    "Torso", "Spine", "Chest", "Neck", "Head",
    "L_Thorax", "L_Shoulder", "L_Elbow", "L_Wrist", *[f"L_{f}" for f in _SMPLH_FINGERS],
    "R_Thorax", "R_Shoulder", "R_Elbow", "R_Wrist", *[f"R_{f}" for f in _SMPLH_FINGERS],
)  # fmt: skip

assert len(MOCAP_DEMO_JOINTS) == 53 and len(SMPLH_DEMO_JOINTS) == 52


def read_climb(
    path: Path | str, *, subject: str | None = None, sequence: str | None = None, fps: float = CLIMB_FPS
) -> Motion:
    """Read one climb ``*_joint_positions_*.npy`` file.

    Args:
      path: the ``.npy`` file.
      subject: performer id; defaults to the file stem.
      sequence: sequence name; defaults to the ``mocap_climb_seq_<k>`` part of the stem.
      fps: capture rate (120 Hz for the shipped files).

    Returns:
      ``Motion`` with ``(T, 53, 3)`` float32 positions in metres, Z up, source ``'climb'``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"climb file not found: {path}")
    try:
        positions = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if positions.ndim != 3 or positions.shape[1:] != (len(MOCAP_DEMO_JOINTS), 3):
        raise ValueError(f"{path}: expected (T, {len(MOCAP_DEMO_JOINTS)}, 3) positions, got {positions.shape}")
    stem = path.stem.split("_joint_positions")[0]
    return Motion(
        positions=np.asarray(positions, dtype=np.float32),
        fps=float(fps),
        joint_names=list(MOCAP_DEMO_JOINTS),
        subject=subject if subject is not None else stem,
        sequence=sequence if sequence is not None else stem,
        source="climb",
    )


def _is_int(op: pickletools.OpcodeInfo) -> bool:
    return op.name in ("BININT", "BININT1", "BININT2", "INT", "LONG1", "LONG")


def _torch_tensor_layout(pkl: bytes, name: str) -> tuple[str, int, tuple[int, ...], tuple[int, ...]]:
    """Storage key, offset, shape and stride of a pickled ``_rebuild_tensor_v2`` call.

    Only the opcode stream is inspected (``pickletools.genops``); nothing is executed.
    """
    ops = list(pickletools.genops(pkl))
    strings = [arg for op, arg, _ in ops if isinstance(arg, str)]
    if not any("_rebuild_tensor" in s for s in strings) or not any("FloatStorage" in s for s in strings):
        raise ValueError(f"{name}: data.pkl does not hold a single float32 torch tensor")
    try:
        pid = next(i for i, (op, _, _) in enumerate(ops) if op.name in ("BINPERSID", "PERSID"))
        key = strings[strings.index("storage") + 2] if "storage" in strings else "0"
        i = pid + 1
        if not _is_int(ops[i][0]):
            raise ValueError
        offset = int(ops[i][1])
        i += 1
        tuples = []
        for _ in range(2):
            if ops[i][0].name == "MARK":
                i += 1
            dims = []
            while _is_int(ops[i][0]):
                dims.append(int(ops[i][1]))
                i += 1
            if not ops[i][0].name.startswith("TUPLE") and ops[i][0].name != "EMPTY_TUPLE":
                raise ValueError
            tuples.append(tuple(dims))
            i += 1
            while ops[i][0].name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
                i += 1
    except (StopIteration, IndexError, ValueError):
        raise ValueError(f"{name}: could not read the tensor shape from data.pkl") from None
    return key, offset, tuples[0], tuples[1]


def read_torch_float_tensor(path: Path | str) -> np.ndarray:
    """Read a ``torch.save``-d float32 CPU tensor without torch.

    Returns:
      The tensor as a float32 numpy array.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a torch zip file, not float32 little-endian, or inconsistent sizes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torch file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch zip file (legacy torch pickles are not supported)")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl_name = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl_name is None:
            raise ValueError(f"{path}: no data.pkl member; not a torch.save file")
        prefix = pkl_name[: -len("data.pkl")]
        if f"{prefix}byteorder" in names and z.read(f"{prefix}byteorder").strip() != b"little":
            raise ValueError(f"{path}: big-endian tensors are not supported")
        key, offset, shape, stride = _torch_tensor_layout(z.read(pkl_name), str(path))
        storage_name = f"{prefix}data/{key}"
        if storage_name not in names:
            raise ValueError(f"{path}: storage member {storage_name} is missing")
        raw = np.frombuffer(z.read(storage_name), dtype="<f4")
    expected_stride = tuple(int(np.prod(shape[k + 1 :])) for k in range(len(shape)))
    if stride != expected_stride:
        raise ValueError(f"{path}: tensor is not contiguous (stride {stride}, shape {shape})")
    numel = int(np.prod(shape))
    if offset + numel > raw.size:
        raise ValueError(f"{path}: storage holds {raw.size} floats, tensor {shape} at offset {offset} needs more")
    return raw[offset : offset + numel].reshape(shape).astype(np.float32)


def read_omomo(path: Path | str, *, subject: str | None = None, sequence: str | None = None) -> Motion:
    """Read one OMOMO ``.pt`` file of the holosoma demo data.

    Args:
      path: the ``.pt`` file, e.g. ``sub3_largebox_003.pt``.
      subject: performer id; defaults to ``'omomo_' + `` the ``sub<k>`` file-name prefix.
      sequence: sequence name; defaults to the file stem.

    Returns:
      ``Motion`` with ``(T, 52, 3)`` float32 positions in metres, Z up, 30 fps, source ``'omomo'``.
    """
    path = Path(path)
    data = read_torch_float_tensor(path)
    if data.ndim != 2 or data.shape[1] != OMOMO_COLUMNS:
        raise ValueError(f"{path}: expected a (T, {OMOMO_COLUMNS}) tensor, got {data.shape}")
    positions = data[:, OMOMO_POSITION_COLUMNS].reshape(len(data), len(SMPLH_DEMO_JOINTS), 3)
    return Motion(
        positions=np.ascontiguousarray(positions, dtype=np.float32),
        fps=OMOMO_FPS,
        joint_names=list(SMPLH_DEMO_JOINTS),
        subject=subject if subject is not None else "omomo_" + path.stem.split("_")[0],
        sequence=sequence if sequence is not None else path.stem,
        source="omomo",
    )
