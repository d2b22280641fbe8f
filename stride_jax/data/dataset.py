"""Data locations, the motion containers and loading of the prepared splits.

The cache lives in ``$STRIDE_DATA`` or, when that is unset, ``~/.cache/stride_jax``::

    <root>/raw/manifest.json                    written by ``stride_jax.data.fetch``
    <root>/raw/<package>/...                    the extracted motion files
    <root>/processed/v1/manifest.json           written by ``stride_jax.data.prepare``
    <root>/processed/v1/<split>/<sequence>.npz  joints (T, 17, 3) float32, fps, subject, source

Prepared joints are Human3.6M-17 positions in metres in the world frame described in
:mod:`stride_jax.data.to_h36m` (Y up, floor at y ~ 0, right-handed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from stride_jax import skeleton

SPLITS: tuple[str, ...] = ("train", "val", "test")
PROCESSED_VERSION: str = "v1"
PREPARE_COMMAND: str = "python -m stride_jax.data.fetch && python -m stride_jax.data.prepare"
DEMO_PATH: Path = Path(__file__).resolve().parent.parent / "assets" / "demo_climb.npz"


@dataclasses.dataclass
class Motion:
    """Joint positions of one recorded sequence, as read from a source file.

    Attributes:
      positions: ``(T, J, 3)`` float32 positions in metres, in the source's own axes.
      fps: frame rate in Hz.
      joint_names: ``J`` joint names in the source's naming.
      subject: performer id, e.g. ``'climb_B'``.
      sequence: sequence name, unique within the dataset.
      source: rig / data source, a key of ``to_h36m.RIGS`` (e.g. ``'lafan1'``).
    """

    positions: np.ndarray
    fps: float
    joint_names: list[str]
    subject: str
    sequence: str
    source: str

    def __post_init__(self) -> None:
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise ValueError(f"{self.sequence}: positions must be (T, J, 3), got {self.positions.shape}")
        if self.positions.shape[1] != len(self.joint_names):
            raise ValueError(
                f"{self.sequence}: {self.positions.shape[1]} joints but {len(self.joint_names)} names"
            )
        if not self.fps > 0:
            raise ValueError(f"{self.sequence}: fps must be positive, got {self.fps}")


@dataclasses.dataclass
class Sequence:
    """One prepared sequence of a split.

    Attributes:
      name: sequence name (the ``.npz`` stem).
      subject: performer id; no subject appears in two splits.
      joints: ``(T, 17, 3)`` float32 H36M-17 world positions in metres, Y up.
      fps: frame rate in Hz (30 for the built-in data).
      source: data source, e.g. ``'climb'``.
    """

    name: str
    subject: str
    joints: np.ndarray
    fps: float
    source: str = ""


def data_root() -> Path:
    """The data cache directory: ``$STRIDE_DATA`` or ``~/.cache/stride_jax``."""
    env = os.environ.get("STRIDE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stride_jax"


def raw_dir(root: Path | str | None = None) -> Path:
    """Directory of the fetched raw files."""
    return Path(root if root is not None else data_root()) / "raw"


def processed_dir(root: Path | str | None = None) -> Path:
    """Directory of the prepared splits (``<root>/processed/v1``)."""
    return Path(root if root is not None else data_root()) / "processed" / PROCESSED_VERSION


def load_manifest(root: Path | str | None = None) -> dict:
    """Read ``processed/v1/manifest.json``.

    Raises:
      FileNotFoundError: when the data has not been prepared; the message names the command.
    """
    path = processed_dir(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"No prepared motion data at {path}. Run: {PREPARE_COMMAND}"
            " (set STRIDE_DATA to use another cache directory)."
        )
    return json.loads(path.read_text())


def load_split(split: str, root: Path | str | None = None) -> list[Sequence]:
    """Load every prepared sequence of one split, in name order.

    Args:
      split: ``'train'``, ``'val'`` or ``'test'``.
      root: cache directory; defaults to :func:`data_root`.

    Returns:
      The split's sequences, joints ``(T, 17, 3)`` float32 metres, world Y up.

    Raises:
      ValueError: unknown split name.
      FileNotFoundError: data not prepared, or a listed file is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    manifest = load_manifest(root)
    base = processed_dir(root)
    out = []
    for name, entry in sorted(manifest["sequences"].items()):
        if entry["split"] != split:
            continue
        path = base / split / f"{name}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in the manifest but missing. Run: {PREPARE_COMMAND}")
        with np.load(path) as z:
            joints = np.asarray(z["joints"], dtype=np.float32)
            fps = float(z["fps"])
        if joints.ndim != 3 or joints.shape[1:] != (skeleton.NUM_JOINTS, 3):
            raise ValueError(f"{path}: joints must be (T, 17, 3), got {joints.shape}")
        out.append(Sequence(name=name, subject=entry["subject"], joints=joints, fps=fps, source=entry["source"]))
    return out


def load_demo(path: Path | str | None = None) -> tuple[np.ndarray, float]:
    """The embedded demo clips (Apache-2.0 climb data, held-out performer B).

    Returns:
      ``(joints, fps)``: joints ``(K, T, 17, 3)`` float32 metres, world Y up; fps in Hz.
    """
    path = Path(path) if path is not None else DEMO_PATH
    if not path.is_file():
        raise FileNotFoundError(f"demo asset {path} is missing")
    with np.load(path) as z:
        return np.asarray(z["joints"], dtype=np.float32), float(z["fps"])
