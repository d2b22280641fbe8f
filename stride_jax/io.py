"""Reading and validating user pose files; writing results atomically.

Inputs are whatever a 3D pose estimator produced, as Human3.6M-17 joints
(``stride_jax.skeleton.JOINT_NAMES``) in metres or millimetres:

* ``.npz``: ``poses`` (T,17,3) or (P,T,17,3); optional ``valid`` (T,)/(P,T) bool or 0/1,
  ``confidence`` (T,17)/(P,T,17) in [0, 1], ``track_ids`` (P,) strings or ints, ``fps``.
* ``.npy``: the ``poses`` array alone.
* ``.json``: ``{"poses": [frame, ...], "valid": [...], "confidence": [...], "fps": 30}`` with
  ``frame`` a 17x3 list or ``null``, or ``{"tracks": [{"track_id": ..., "poses": ...}, ...]}``.

Missing detections: a frame is invalid ("no detection") when ``valid`` says so, when any of
its coordinates is NaN or +-Inf (Inf is treated like NaN; ``null`` in JSON is NaN), or when
its mean confidence is below ``min_confidence``.  Non-finite values become NaN, other values
of invalid frames are kept; downstream code ignores them.

Every problem with an input raises :class:`InputError` (a ``ValueError``) whose message
names the file and field, says what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stride_jax import skeleton

if TYPE_CHECKING:
    from stride_jax.aligner import Video

SUPPORTED_SUFFIXES: tuple[str, ...] = (".npz", ".npy", ".json")
UNITS: tuple[str, ...] = ("auto", "m", "mm")
# Median joint distance from the pelvis for a human: ~0.2-0.6 m.
_METRES = (0.05, 2.0)
_MILLIMETRES = (50.0, 2000.0)
_LAYOUTS = {14: "LSP-14", 16: "MPII-16", 18: "OpenPose COCO-18", 24: "SMPL-24",
            25: "OpenPose BODY_25", 26: "Halpe-26", 33: "MediaPipe/BlazePose-33",
            133: "COCO-WholeBody-133"}
_CONVERT = ("convert to Human3.6M-17 (joint order: stride_jax.skeleton.JOINT_NAMES)")


class InputError(ValueError):
    """A user input file is missing, unreadable or malformed; the message says how to fix it."""


@dataclasses.dataclass
class PoseTrack:
    """One person track read from a pose file.

    Attributes:
      name: file stem.
      track: track id (``None`` for a single-person file without ids).
      poses: float32 ``(T, 17, 3)`` metres; NaN where the input was non-finite.
      valid: bool ``(T,)``, True where the frame is a detection.
      confidence: float32 ``(T, 17)`` in [0, 1] (0 where missing), or ``None``.
      fps: frames per second if the file gives it.
      source: path of the file.
      units_detected: ``"m"`` or ``"mm"``: the input units (poses are always metres).
    """

    name: str
    track: str | None
    poses: np.ndarray
    valid: np.ndarray
    confidence: np.ndarray | None
    fps: float | None
    source: str
    units_detected: str = "m"


@dataclasses.dataclass
class _Block:
    """Raw arrays of one or several tracks: ``poses`` is ``lead + (J, D)``, lead (T,) or (P,T)."""

    field: str  # "poses" or e.g. "tracks[2].poses", for messages
    poses: Any
    valid: Any = None
    confidence: Any = None
    track_ids: list[str | None] | None = None
    fps: float | None = None


def _err(path: Path, msg: str) -> InputError:
    return InputError(f"{path}: {msg}")


def _sibling(field: str, name: str) -> str:
    """``tracks[1].poses`` -> ``tracks[1].valid``."""
    return field[: -len("poses")] + name


def _check_pose_shape(path: Path, field: str, shape: tuple[int, ...], ndims: Sequence[int]):
    """Raises InputError with a layout hint unless ``shape`` is (T,17,3) (or (P,T,17,3))."""
    want = " or ".join({3: "(T,17,3)", 4: "(P,T,17,3)"}[n] for n in ndims)
    where = f"`{field}` has shape {tuple(shape)}"
    if len(shape) == 2 and shape[-1] in (51, 34):
        d = shape[-1] // 17
        hint = "reshape to (T,17,3)" if d == 3 else "2D keypoints: lift them to 3D first"
        raise _err(path, f"{where}: flattened {d}D joints? {hint}; expected {want}")
    if len(shape) not in ndims:
        raise _err(path, f"{where}; expected {want} (T frames, 17 joints, xyz)")
    joints, dim = shape[-2:]
    if (joints, dim) == (3, 17):
        raise _err(path, f"{where}: axes look swapped; use np.swapaxes(poses, -1, -2)")
    problems = []
    if dim == 2:
        layout = " (COCO-17?)" if joints == 17 else ""
        problems.append(f"2D keypoints{layout} (last axis 2): lift them to 3D first")
    elif dim == 4:
        problems.append("last axis 4 looks like (x,y,z,score): put x,y,z in `poses` and the "
                        "scores in `confidence`")
    elif dim != 3:
        problems.append(f"last axis has size {dim}, expected 3 (x,y,z)")
    if joints != skeleton.NUM_JOINTS:
        layout = f" ({_LAYOUTS[joints]}?)" if joints in _LAYOUTS else ""
        problems.append(f"{joints} joints{layout}: {_CONVERT}")
    if problems:
        raise _err(path, f"{where}: " + "; ".join(problems) + f"; expected {want}")
    if len(shape) == 4 and shape[0] == 0:
        raise _err(path, f"{where}: no tracks (P = 0)")
    if shape[-3] < 2:
        what = "empty (0 frames)" if shape[-3] == 0 else "a single frame"
        raise _err(path, f"{where}: {what}; a video needs at least 2 frames")


def _numeric(path: Path, field: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise _err(path, f"`{field}` has dtype {arr.dtype}; expected numbers")
    return arr


def _as_bool(path: Path, field: str, value: Any, lead: tuple[int, ...], pshape) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != lead:
        raise _err(path, f"`{field}` has shape {arr.shape} but poses have shape {pshape}; "
                         f"expected {lead}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf":
        bad = ~np.isin(arr, (0, 1))
        if not bad.any():
            return arr.astype(bool)
        sample = arr[bad].flat[0]
    else:
        sample = f"dtype {arr.dtype}"
    raise _err(path, f"`{field}` must be boolean-like (True/False or 0/1), found {sample}; "
                     "use confidence and --min_confidence for soft scores")


def _parse_fps(path: Path, field: str, value: Any) -> float | None:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise _err(path, f"`{field}` must be one positive number, got {value!r:.60}")
    fps = float(arr.reshape(()))
    if not math.isfinite(fps) or fps <= 0:
        raise _err(path, f"`{field}` must be a positive number, got {fps}")
    return fps


def _track_id(path: Path, field: str, value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, np.str_)):
        raise _err(path, f"`{field}` must be a string or an integer, got {value!r:.60}")
    tid = str(value)
    if not tid or any(c in tid for c in "/\\\0"):
        raise _err(path, f"`{field}` {tid!r} is empty or holds a path separator; "
                         "track ids name output files")
    return tid


def _read_npz_or_npy(path: Path) -> list[_Block]:
    kind = path.suffix.lower()
    try:
        obj = np.load(path, allow_pickle=False)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                data = {k: obj[k] for k in obj.files}
            bad = [k for k, v in data.items() if not isinstance(v, np.ndarray)]
            if bad:
                raise ValueError(f"member {bad[0]!r} is not a .npy array")
        else:
            data = {"poses": obj}
    except ValueError as e:
        if "Object arrays" in str(e):
            raise _err(path, "holds object arrays (pickled Python objects), which are not "
                             "loaded; save numbers: np.savez(path, poses=np.asarray(p, 'f4'))"
                       ) from e
        raise _err(path, f"is truncated or not a valid {kind} ({e})") from e
    except PermissionError as e:
        raise _err(path, f"cannot be read ({e})") from e
    except Exception as e:  # zipfile, zlib, EOF, OS errors: all mean a bad file
        raise _err(path, f"is truncated or not a valid {kind} ({type(e).__name__}: {e})") from e
    if "poses" not in data:
        found = ", ".join(sorted(data)) or "none"
        raise _err(path, f"has no `poses` array (found keys: {found}); save the (T,17,3) "
                         "joints as np.savez(path, poses=..., valid=...)")
    poses = _numeric(path, "poses", data["poses"])
    _check_pose_shape(path, "poses", poses.shape, (3, 4))
    n_tracks = poses.shape[0] if poses.ndim == 4 else None
    ids = None
    if "track_ids" in data:
        raw = data["track_ids"]
        if raw.size != (n_tracks or 1) or raw.ndim > 1:
            raise _err(path, f"`track_ids` has shape {raw.shape} but poses have shape "
                             f"{poses.shape}; expected ({n_tracks or 1},)")
        ids = [_track_id(path, f"track_ids[{i}]", v) for i, v in enumerate(raw.reshape(-1))]
    elif n_tracks is not None:
        ids = [str(i) for i in range(n_tracks)]
    return [_Block("poses", poses, data.get("valid"), data.get("confidence"), ids,
                   _parse_fps(path, "fps", data.get("fps")))]


def _json_frames(path: Path, field: str, value: Any, fill_shape: tuple[int, ...]) -> np.ndarray:
    """A list of frames (nested lists or ``null``) -> float64 array, NaN for ``null``."""
    if not isinstance(value, list):
        raise _err(path, f"`{field}` must be a list of frames, got {type(value).__name__}")
    frames, shape = [], None
    for i, frame in enumerate(value):
        if frame is None:
            frames.append(None)
            continue
        if isinstance(frame, list) and field.endswith("poses"):  # a null joint is missing
            frame = [[math.nan] * 3 if joint is None else joint for joint in frame]
        try:
            arr = np.asarray(frame, dtype=np.float64)
        except (ValueError, TypeError, OverflowError) as e:
            raise _err(path, f"`{field}[{i}]` is not a list of numbers ({e})") from e
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise _err(path, f"`{field}[{i}]` has shape {arr.shape}, earlier frames {shape}")
        frames.append(arr)
    shape = fill_shape if shape is None else shape
    nan = np.full(shape, np.nan)
    return np.stack([nan if f is None else f for f in frames]) if frames else np.zeros(
        (0,) + shape)


def _json_block(path: Path, obj: dict, prefix: str, track: str | None,
                default_fps: float | None) -> _Block:
    field = f"{prefix}poses"
    if "poses" not in obj:
        found = ", ".join(sorted(map(str, obj))) or "none"
        raise _err(path, f"has no `{field}` (found keys: {found}); expected "
                         '{"poses": [[[x,y,z]]*17 or null per frame], "fps": ...}')
    poses = _json_frames(path, field, obj["poses"], (skeleton.NUM_JOINTS, 3))
    _check_pose_shape(path, field, poses.shape, (3,))
    conf = obj.get("confidence")
    if conf is not None:
        conf = _json_frames(path, f"{prefix}confidence", conf, poses.shape[1:2])
    valid = obj.get("valid")
    if valid is not None:
        try:
            valid = np.asarray(valid)
        except ValueError as e:
            raise _err(path, f"`{prefix}valid` is not a flat list of booleans ({e})") from e
    fps = _parse_fps(path, f"{prefix}fps", obj["fps"]) if "fps" in obj else default_fps
    return _Block(field, poses, valid, conf, None if track is None else [track], fps)


def _read_json(path: Path) -> list[_Block]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        raise _err(path, f"is truncated or not a valid .json ({e})") from e
    except OSError as e:
        raise _err(path, f"cannot be read ({e})") from e
    if isinstance(data, list):
        data = {"poses": data}
    if not isinstance(data, dict):
        raise _err(path, f'top level is {type(data).__name__}; expected {{"poses": ...}} or '
                         '{"tracks": [...]}')
    if "tracks" not in data:
        track = _track_id(path, "track_id", data["track_id"]) if "track_id" in data else None
        return [_json_block(path, data, "", track, None)]
    if "poses" in data:
        raise _err(path, "has both `poses` and `tracks`; keep one")
    tracks = data["tracks"]
    if not isinstance(tracks, list) or not tracks:
        raise _err(path, "`tracks` must be a non-empty list of {\"track_id\": ..., \"poses\": ...}")
    fps = _parse_fps(path, "fps", data.get("fps"))
    blocks = []
    for i, obj in enumerate(tracks):
        if not isinstance(obj, dict):
            raise _err(path, f"`tracks[{i}]` is {type(obj).__name__}; expected an object")
        tid = obj.get("track_id", i)
        track = _track_id(path, f"tracks[{i}].track_id", tid)
        blocks.append(_json_block(path, obj, f"tracks[{i}].", track, fps))
    return blocks


def _clean(path: Path, block: _Block, min_confidence: float):
    """Validates one block -> poses (NaN where non-finite), valid, confidence, and for
    messages the given ``valid`` and the all-finite frame mask."""
    poses = _numeric(path, block.field, block.poses)
    with np.errstate(over="ignore", invalid="ignore"):
        poses = poses.astype(np.float32)
    lead = poses.shape[:-2]
    valid = np.ones(lead, bool)
    if block.valid is not None:
        valid = _as_bool(path, _sibling(block.field, "valid"), block.valid, lead, poses.shape)
    finite = np.isfinite(poses)
    poses = np.where(finite, poses, np.float32(np.nan))
    detected = valid & finite.all(axis=(-1, -2))
    conf = None
    if block.confidence is not None:
        field = _sibling(block.field, "confidence")
        conf = _numeric(path, field, block.confidence).astype(np.float64)
        if conf.shape != poses.shape[:-1]:
            raise _err(path, f"`{field}` has shape {conf.shape} but poses have shape "
                             f"{poses.shape}; expected {poses.shape[:-1]}")
        bad = ~np.isfinite(conf).all(-1) & detected
        if bad.any():
            at = ", ".join(map(str, np.argwhere(bad)[0]))
            raise _err(path, f"`{field}` is NaN/Inf at [{at}], a frame with a detection; "
                             "use values in [0, 1] (or mark the frame invalid)")
        conf = np.where(np.isfinite(conf), conf, 0.0)
        lo, hi = float(conf.min()), float(conf.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise _err(path, f"`{field}` must lie in [0, 1], found [{lo:g}, {hi:g}]; rescale it "
                             "(e.g. divide percentages by 100) or leave it out")
        conf = np.clip(conf, 0.0, 1.0).astype(np.float32)
        conf[~detected] = 0.0
        if min_confidence > 0:
            detected &= conf.mean(-1) >= min_confidence
    return poses, detected, conf, valid, finite.all(axis=(-1, -2))


def _split(path: Path, block: _Block, min_confidence: float) -> list[dict]:
    """Validates a block and splits it into per-track dicts; each needs a valid frame."""
    poses, valid, conf, given, finite = _clean(path, block, min_confidence)
    if poses.ndim == 3:
        poses, valid, given, finite = poses[None], valid[None], given[None], finite[None]
        conf = None if conf is None else conf[None]
    ids = block.track_ids or [None]
    tracks = []
    for p, tid in enumerate(ids):
        if not valid[p].any():
            who = f"track {tid}: " if tid is not None else ""
            n = valid.shape[1]
            low = f", the rest have mean confidence < {min_confidence}" if min_confidence else ""
            raise _err(path, f"{who}no valid frame: of {n} frames {n - int(finite[p].sum())} "
                             f"have NaN/Inf/null joints, {n - int(given[p].sum())} are marked "
                             f"invalid{low}")
        tracks.append(dict(track=tid, poses=poses[p], valid=valid[p],
                           confidence=None if conf is None else conf[p], fps=block.fps))
    return tracks


def _detect_units(path: Path, tracks: list[dict]) -> str:
    rel = [t["poses"][t["valid"]].astype(np.float64) for t in tracks]
    with np.errstate(over="ignore", invalid="ignore"):
        dist = [np.linalg.norm(r[:, 1:] - r[:, :1], axis=-1).ravel() for r in rel]
        scale = float(np.median(np.concatenate(dist)))
    if _METRES[0] <= scale <= _METRES[1]:
        return "m"
    if _MILLIMETRES[0] <= scale <= _MILLIMETRES[1]:
        return "mm"
    guess = "looks like pixels" if scale > _MILLIMETRES[1] else "is of unknown units"
    raise _err(path, f"median joint distance from the pelvis is {scale:.4g}, which {guess} "
                     "(expected ~0.05-2 m or ~50-2000 mm); give 3D joints in metres or "
                     "millimetres and pass --units m or --units mm")


def load_pose_file(path: str | os.PathLike, *, units: str = "auto",
                   min_confidence: float = 0.0) -> list[PoseTrack]:
    """Reads and validates one pose file (see the module docstring for formats).

    Args:
      path: ``.npz``, ``.npy`` or ``.json`` file.
      units: ``"m"``, ``"mm"`` or ``"auto"`` (median joint distance from the pelvis over
        valid frames ~0.05-2 -> metres, ~50-2000 -> millimetres, else InputError).
      min_confidence: frames whose mean joint confidence (0..1) is below this are invalid
        (no effect on files without ``confidence``).

    Returns:
      One :class:`PoseTrack` per person track, poses ``(T, 17, 3)`` float32 metres.

    Raises:
      InputError: the file is missing, unreadable or malformed, or has no valid frame.
    """
    if units not in UNITS:
        raise InputError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise InputError(f"min_confidence must be in [0, 1], got {min_confidence}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise _err(path, f"unsupported file type {suffix or '(none)'!r}; supported: "
                         f"{', '.join(SUPPORTED_SUFFIXES)}")
    if not path.exists():
        raise _err(path, "no such file")
    if not path.is_file():
        raise _err(path, "is not a regular file")
    if path.stat().st_size == 0:
        raise _err(path, "is empty (0 bytes); the write that produced it may have failed")
    blocks = _read_json(path) if suffix == ".json" else _read_npz_or_npy(path)
    tracks = [t for block in blocks for t in _split(path, block, min_confidence)]
    ids = [t["track"] for t in tracks]
    dupes = sorted({i for i in ids if ids.count(i) > 1 and i is not None})
    if dupes:
        raise _err(path, f"duplicate track ids {dupes}; give every person track its own id")
    unit = _detect_units(path, tracks) if units == "auto" else units
    out = []
    for t in tracks:
        poses = t["poses"] / np.float32(1000.0) if unit == "mm" else t["poses"]
        out.append(PoseTrack(name=path.stem, track=t["track"], poses=poses, valid=t["valid"],
                             confidence=t["confidence"], fps=t["fps"], source=str(path),
                             units_detected=unit))
    return out


def list_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expands directories (sorted, supported suffixes, no dotfiles) and keeps files.

    Raises:
      InputError: no inputs, a path that does not exist, or a directory with no pose file.
    """
    if not inputs:
        raise InputError("no inputs given: pass pose files or directories")
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.suffix.lower() in SUPPORTED_SUFFIXES)
            if not files:
                raise InputError(f"{p}: directory holds no pose files "
                                 f"({', '.join(SUPPORTED_SUFFIXES)})")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    unique: dict[Path, Path] = {}
    for p in out:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def output_path(out_dir: str | os.PathLike, name: str, track: str | None, multi: bool) -> Path:
    """Where ``align`` writes a track's result: ``<name>.npz``, or ``<name>__<track>.npz``
    when its input file held several tracks."""
    stem = f"{name}__{track}" if multi and track is not None else name
    return Path(out_dir) / f"{stem}.npz"


def to_videos(tracks: Sequence[PoseTrack]) -> list[Video]:
    """PoseTracks -> :class:`stride_jax.aligner.Video` (``name`` = file stem, ``track`` =
    track id, ``fps`` = the file's, None when it gives none)."""
    from stride_jax.aligner import Video  # keeps importing the file layer free of jax

    return [Video(poses=t.poses, valid=t.valid, name=t.name, track=t.track, fps=t.fps)
            for t in tracks]
