"""AMASS (SMPL-H) sequences -> Human3.6M-17 joints at 30 fps for the prepared dataset.

``python -m stride_jax.data.prepare --amass DIR --body_models DIR --h36m_regressor FILE``
(see ``docs/amass.md``). Input, as AMASS distributes its "SMPL+H G" archives:

* ``<DIR>/<SUBSET>/<subject>/<seq>_poses.npz`` with ``poses (T, 156)`` axis-angle (root, 21
  body, 2 x 15 hand joints), ``trans (T, 3)`` metres, ``betas (16,)``, ``gender`` and
  ``mocap_framerate`` (or ``mocap_frame_rate``). ``shape.npz`` files and files without
  ``poses`` are skipped and counted; ``dmpls`` (soft-tissue) are not applied. Deeper folders
  below ``<subject>`` become part of the sequence name.
* SMPL-H model ``.npz`` files (:mod:`stride_jax.body_model`) for every gender the sequences
  name, found below ``--body_models`` as the first of :data:`MODEL_LAYOUTS`.
* ``J_regressor_h36m.npy``: ``(17, V)``, H36M joints as weighted sums of the model vertices.

The joints are the regressor applied to the posed mesh (folded through skinning,
:func:`stride_jax.body_model.fold_regressor`: the mesh is never built), in AMASS's frame (metres, Z up, floor at z ~ 0), rotated to the dataset's Y-up world
by :func:`stride_jax.data.to_h36m.to_world` like the other Z-up sources, then resampled to
30 fps (:mod:`stride_jax.data.resample`). Split by subset (:data:`DEFAULT_SPLITS`, or
``--amass_splits``); subjects are ``amass_<SUBSET>_<subject>``.

All inputs are read and checked before anything is written. Every output ``.npz`` carries
``convert_key``: the SHA-256 of the input file's hash, the model's and the regressor's hashes,
the target rate and :data:`CONVERTER`. A rerun reuses an output whose key matches (also one
left by an interrupted run) and converts the rest.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stride_jax import body_model, progress, skeleton
from stride_jax.data import resample, to_h36m
from stride_jax.data.dataset import SPLITS
from stride_jax.files import sha256_bytes, sha256_file

# AMASS's recommended split (github.com/nghorbani/amass): validation and test subsets under
# the folder names of the 2019 and of the current release; every other subset trains
# ("*"). MotionBERT pretrains on all of AMASS: --amass_splits '*=train'.
DEFAULT_SPLITS: dict[str, str] = {
    "HumanEva": "val", "MPI_HDM05": "val", "HDM05": "val", "SFU": "val", "MPI_mosh": "val",
    "MoSh": "val", "Transitions_mocap": "test", "Transitions": "test", "SSM_synced": "test",
    "SSM": "test", "*": "train",
}  # fmt: skip
MODEL_LAYOUTS: tuple[str, ...] = ("smplh/{g}/model.npz", "{g}/model.npz", "SMPLH_{G}.npz", "smplh/SMPLH_{G}.npz")
POSES_WIDTH: int = 156
CHUNK_FRAMES: int = 256
CONVERTER: str = "stride_jax.amass/1"  # change when the conversion changes: reconverts all
SOURCE: str = "amass"


def parse_splits(spec: str | None) -> dict[str, str]:
    """``'SUBSET=split,...,*=split'`` -> mapping (``*``: unlisted subsets); None: the default."""
    if spec is None:
        return dict(DEFAULT_SPLITS)
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        subset, _, split = item.partition("=")
        if not subset or split not in SPLITS:
            raise ValueError(f"--amass_splits: {item!r} is not SUBSET=SPLIT with SPLIT in {SPLITS}")
        out[subset.strip()] = split
    return out


def split_of(subset: str, splits: dict[str, str]) -> str:
    """The split of a subset; ValueError if neither it nor ``*`` is mapped."""
    if subset not in splits and "*" not in splits:
        raise ValueError(f"AMASS subset {subset!r} has no split: add {subset}=SPLIT or *=SPLIT to --amass_splits")
    return splits.get(subset, splits.get("*", ""))


def find_model(body_models: Path, gender: str) -> Path:
    """The SMPL-H ``.npz`` of one gender (first match of :data:`MODEL_LAYOUTS`)."""
    tried = [body_models / f.format(g=gender, G=gender.upper()) for f in MODEL_LAYOUTS]
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no SMPL-H model for gender {gender!r}: tried " + ", ".join(map(str, tried)))
    return found


def load_regressor(path: Path, num_vertices: int) -> np.ndarray:
    """``J_regressor_h36m.npy`` as ``(17, num_vertices)`` float64, checked."""
    if not path.is_file():
        raise FileNotFoundError(f"H36M regressor not found: {path}")
    try:
        reg = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if reg.shape != (skeleton.NUM_JOINTS, num_vertices):
        raise ValueError(f"{path}: H36M regressor has shape {reg.shape}, expected "
                         f"({skeleton.NUM_JOINTS}, {num_vertices}) for the body model's {num_vertices} vertices")
    if not np.isfinite(reg).all() or not np.any(reg, axis=1).all():
        raise ValueError(f"{path}: H36M regressor must be finite with a nonzero row per joint")
    return reg.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Item:
    """One AMASS sequence file, checked: where it goes and its key."""

    path: Path
    name: str
    subset: str
    subject: str
    split: str
    sha256: str
    frames: int
    fps: float
    gender: str


def read_sequence(path: Path, data: bytes | None = None) -> dict[str, np.ndarray] | None:
    """An AMASS ``.npz``: ``{poses (T, 156), trans (T, 3), betas (B,), fps, gender}``.

    Returns None for a file without ``poses``. Raises ValueError naming the file and the
    problem: unreadable, a missing key, a wrong shape, non-finite values, unknown gender.
    """
    try:
        with np.load(io.BytesIO(data) if data is not None else path, allow_pickle=False) as z:
            if "poses" not in z.files:
                return None
            missing = [k for k in ("trans", "betas", "gender") if k not in z.files]
            rate = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in z.files), None)
            if missing or rate is None:
                raise ValueError(f"{path}: missing {missing + ([] if rate else ['mocap_framerate'])}")
            seq = {k: np.asarray(z[k]) for k in ("poses", "trans", "betas", "gender")}
            seq["fps"] = np.asarray(z[rate])
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith(str(path)) else f"{path}: not readable ({e})") from None
    poses, trans = seq["poses"], seq["trans"]
    if poses.ndim != 2 or poses.shape[1] != POSES_WIDTH:
        hint = " (165: an SMPL-X release; use AMASS's SMPL+H G archives)" if poses.shape[-1:] == (165,) else ""
        raise ValueError(f"{path}: poses has shape {poses.shape}, expected (T, {POSES_WIDTH}){hint}")
    if trans.shape != (len(poses), 3) or seq["betas"].ndim != 1:
        raise ValueError(f"{path}: trans {trans.shape} / betas {seq['betas'].shape} do not match poses {poses.shape}")
    for key in ("poses", "trans", "betas", "fps"):
        if not np.issubdtype(seq[key].dtype, np.number) or not np.isfinite(seq[key]).all():
            raise ValueError(f"{path}: {key} holds NaN or non-finite values")
    if seq["fps"].size != 1 or not float(seq["fps"]) > 0:
        raise ValueError(f"{path}: mocap_framerate must be one positive number, got {seq['fps']}")
    gender = seq["gender"].item() if seq["gender"].size == 1 else None
    gender = gender.decode() if isinstance(gender, bytes) else gender
    if not isinstance(gender, str) or not gender.strip():
        raise ValueError(f"{path}: gender must be a string such as 'male', got {seq['gender']!r}")
    seq["gender"] = np.str_(gender.strip().lower())
    return seq


@dataclasses.dataclass
class Plan:
    """Every checked input of a run (no output written yet).

    Attributes:
      items: the sequences to write, in path order.
      models: the loaded SMPL-H model per gender named by the items.
      regressor: ``(17, V)`` H36M regressor.
      keys: per gender the settings hash (model, regressor, rate, :data:`CONVERTER`).
      skipped: counts of files left out: ``shape files``, ``without poses``, ``under 2 frames``.
    """

    items: list[Item]
    models: dict[str, body_model.BodyModel]
    regressor: np.ndarray
    keys: dict[str, str]
    skipped: dict[str, int]

    def convert_key(self, item: Item) -> str:
        """SHA-256 of the input file's hash and the settings for its gender."""
        return sha256_bytes(f"{item.sha256}\n{self.keys[item.gender]}".encode())


def plan(amass_dir: Path | str, body_models: Path | str, h36m_regressor: Path | str,
         splits: dict[str, str] | None = None) -> Plan:  # fmt: skip
    """Find, read and check every input; the first problem raises (nothing is written).

    Raises:
      FileNotFoundError: a missing directory, model (gender named) or regressor.
      ValueError: a bad file, folder layout, regressor or split mapping (file named).
    """
    amass_dir, body_models = Path(amass_dir), Path(body_models)
    splits = DEFAULT_SPLITS if splits is None else splits
    for d, flag in ((amass_dir, "--amass"), (body_models, "--body_models")):
        if not d.is_dir():
            raise FileNotFoundError(f"{flag} directory not found: {d}")
    items, skipped = [], {"shape files": 0, "without poses": 0, "under 2 frames": 0}
    for path in sorted(amass_dir.rglob("*.npz")):
        rel = path.relative_to(amass_dir)
        if path.name == "shape.npz":
            skipped["shape files"] += 1
            continue
        if len(rel.parts) < 3:
            raise ValueError(f"{path}: expected the layout <SUBSET>/<subject>/<seq>_poses.npz below {amass_dir}")
        data = path.read_bytes()
        seq = read_sequence(path, data)
        if seq is None or len(seq["poses"]) < 2:
            skipped["without poses" if seq is None else "under 2 frames"] += 1
            continue
        name = "amass_" + re.sub(r"[^A-Za-z0-9_.-]", "_", "__".join(rel.with_suffix("").parts))
        items.append(Item(path, name, rel.parts[0], f"amass_{rel.parts[0]}_{rel.parts[1]}",
                          split_of(rel.parts[0], splits), sha256_bytes(data), len(seq["poses"]),
                          float(seq["fps"]), str(seq["gender"])))  # fmt: skip
    names = [it.name for it in items]
    if len(set(names)) < len(names):
        raise ValueError(f"two AMASS files map to one sequence name: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if not items:
        raise FileNotFoundError(f"--amass directory {amass_dir} holds no sequence with poses ({skipped})")
    paths = {g: find_model(body_models, g) for g in sorted({it.gender for it in items})}
    models = {g: body_model.load_model(path) for g, path in paths.items()}
    vertices = {g: m.num_vertices for g, m in models.items()}
    if len(set(vertices.values())) > 1:
        raise ValueError(f"the body models differ in vertex count: {vertices}")
    regressor = load_regressor(Path(h36m_regressor), next(iter(vertices.values())))
    settings = {"converter": CONVERTER, "fps": resample.TARGET_FPS, "regressor_sha256": sha256_file(h36m_regressor)}
    keys = {g: sha256_bytes(json.dumps({**settings, "model_sha256": sha256_file(path)}, sort_keys=True).encode())
            for g, path in paths.items()}  # fmt: skip
    return Plan(items, models, regressor, keys, skipped)


class FrameProgress(progress.EpochProgress):
    """:class:`~stride_jax.progress.EpochProgress` counting frames instead of epochs."""

    def line(self) -> str:
        return super().line().replace(" epochs,", " frames,", 1)


class Converter:
    """Compiled SMPL-H -> H36M joints, one chunk of frames per call (one compile per run)."""

    def __init__(self, models: dict[str, body_model.BodyModel], regressor: np.ndarray,
                 chunk: int = CHUNK_FRAMES):
        self.models = models
        self.folded = {g: body_model.fold_regressor(m, regressor) for g, m in models.items()}
        self.chunk = chunk
        self._shape = jax.jit(body_model.shape)
        self._joints = jax.jit(body_model.regressed_joints)

    def __call__(self, gender: str, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> np.ndarray:
        """``poses (T, 156)`` rad, ``betas (B,)``, ``trans (T, 3)`` m -> ``(T, 17, 3)`` float32
        metres in AMASS's frame (Z up)."""
        v_shaped, rest = self._shape(self.models[gender], jnp.asarray(betas, jnp.float32))
        out = []
        for start in range(0, len(poses), self.chunk):
            p, t = poses[start : start + self.chunk], trans[start : start + self.chunk]
            pad = self.chunk - len(p)  # repeat the last frame: every call has the compiled shape
            p, t = (np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) for x in (p, t))
            joints = self._joints(self.models[gender], self.folded[gender], v_shaped, rest,
                                  jnp.asarray(p, jnp.float32), jnp.asarray(t, jnp.float32))
            out.append(np.asarray(joints)[: self.chunk - pad])
        return np.concatenate(out)


def existing(out_dir: Path, name: str, key: str) -> np.ndarray | None:
    """Joints of a prepared ``<split>/<name>.npz`` whose ``convert_key`` is ``key``, else None."""
    for split in SPLITS:
        path = out_dir / split / f"{name}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    if "convert_key" in z.files and str(z["convert_key"]) == key:
                        return np.asarray(z["joints"], np.float32)
            except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
                pass  # damaged: convert again
    return None


def convert(p: Plan, out_dir: Path, *, chunk: int = CHUNK_FRAMES,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Iterator[tuple]:
    """Yield ``(name, split, subject, source, joints (T', 17, 3) world Y up at 30 fps, path,
    input sha256, extra npz fields)`` per planned sequence; reuse outputs whose key matches.

    Logs progress (bar with ETA on a terminal) and a summary line with the throughput.
    """
    todo = [it for it in p.items if existing(out_dir, it.name, p.convert_key(it)) is None]
    total = sum(it.frames for it in todo)
    start, done = time.perf_counter(), 0
    bar = FrameProgress(max(total, 1), "AMASS -> H36M", log=log)
    converter = Converter(p.models, p.regressor, chunk) if todo else None
    for it in p.items:
        key = p.convert_key(it)
        joints = existing(out_dir, it.name, key)
        if joints is None:
            data = it.path.read_bytes()
            if sha256_bytes(data) != it.sha256:
                raise ValueError(f"{it.path} changed while converting; run again")
            seq = read_sequence(it.path, data)
            raw = converter(it.gender, seq["poses"], seq["betas"], seq["trans"])
            world = to_h36m.to_world(raw.astype(np.float64), "z")
            joints = resample.resample(world, it.fps, resample.TARGET_FPS).astype(np.float32)
            done += it.frames
            bar(done - 1)
        yield (it.name, it.split, it.subject, SOURCE, joints, it.path, it.sha256,
               {"convert_key": key})  # fmt: skip
    seconds = time.perf_counter() - start
    skipped = ", ".join(f"{n} {what}" for what, n in p.skipped.items() if n) or "none"
    log(f"AMASS: {len(p.items)} sequences: {len(todo)} converted ({total} frames in {seconds:.1f} s, "
        f"{total / max(seconds, 1e-9):.0f} frames/s), {len(p.items) - len(todo)} already converted; "
        f"skipped: {skipped}")


def write_synthetic(out: Path | str, *, sequences: int = 6, frames: int = 1200, fps: float = 120.0,
                    seed: int = 0) -> dict[str, Path]:  # fmt: skip
    """Random stand-ins for a dry run or a throughput measurement, no licensed file needed:
    SMPL-H-size models (:func:`stride_jax.body_model.synthetic_model_arrays`) in
    ``<out>/body_models/smplh/<gender>/model.npz``, a dense ``<out>/J_regressor_h36m.npy`` and
    ``sequences`` files of ``frames`` smooth random poses at ``fps`` in ``<out>/amass``, spread
    over a train (CMU), a val (HumanEva) and a test (Transitions) subset. Returns the paths."""
    out, rng = Path(out), np.random.default_rng(seed)
    paths = {"amass": out / "amass", "body_models": out / "body_models", "h36m_regressor": out / "J_regressor_h36m.npy"}
    for k, gender in enumerate(("male", "female")):
        path = paths["body_models"] / "smplh" / gender / "model.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **body_model.synthetic_model_arrays(seed + k))
    np.save(paths["h36m_regressor"], rng.dirichlet(np.ones(6890), size=skeleton.NUM_JOINTS))
    for i in range(sequences):
        subset = ("CMU", "HumanEva", "Transitions")[i % 3]
        path = paths["amass"] / subset / f"s{i // 3:02d}" / f"seq{i:03d}_poses.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        poses = np.cumsum(rng.normal(scale=0.01, size=(frames, POSES_WIDTH)), axis=0)
        trans = np.cumsum(rng.normal(scale=0.003, size=(frames, 3)), axis=0) + [0.0, 0.0, 0.9]
        np.savez(path, poses=poses, trans=trans, betas=rng.normal(size=16), gender=("male", "female")[i % 2],
                 mocap_framerate=np.float64(fps))  # fmt: skip
    return paths

