"""Convert the fetched motion files into H36M-17 splits at 30 fps.

``python -m stride_jax.data.prepare [--root DIR] [--extra DIR [--extra-split SPLIT]]``

Writes ``<root>/processed/v1/<split>/<sequence>.npz`` (``joints`` (T, 17, 3) float32 metres,
world Y up as in :mod:`stride_jax.data.to_h36m`; ``fps``; ``subject``; ``source``) and
``<root>/processed/v1/manifest.json``: the version, per sequence its split, subject, source,
frames, seconds, fps, the npz SHA-256 and the source file with its SHA-256, plus
``dataset_sha256``, the SHA-256 of the sorted per-sequence hashes joined by newlines. The npz
files are written byte-for-byte reproducibly (fixed zip timestamps), so the dataset hash
identifies the data. Files are split by performer (``/work/shared/DATA.md`` section 4):

* train: LAFAN1 subject1 (``test.bvh``, ``test2.bvh``) + climb performer A (seq 0-3)
* val: climb performer B (seq 4) + OMOMO sub10
* test: OMOMO sub3 + ``test3.bvh`` (unknown performer)

Your own data: ``--extra DIR`` adds every ``*.bvh`` and ``*.npz`` below DIR. A BVH file needs
a rig known to :func:`stride_jax.data.to_h36m.detect_rig` (LAFAN1 / Mixamo / CMU joint
names or the Blender rig of ``test3.bvh``); Y up; units detected. An ``.npz`` holds ``joints``
(T, 17, 3) H36M-17 positions in metres, world Y up, and ``fps``, optionally ``subject`` and
``split``. The subject defaults to the file's folder below DIR (the file stem for files
directly in DIR), the split to ``--extra-split`` (``train``). Extra sequences are named
``extra_<path below DIR>``; a subject may not appear in two splits. ``--no-builtin`` prepares
only the extra data (no fetch needed).

AMASS: ``--amass DIR --body_models DIR --h36m_regressor FILE [--amass_splits SPEC]`` converts
SMPL-H sequences with the user's own body models (:mod:`stride_jax.data.amass`,
``docs/amass.md``); every input is checked before anything is written, and a rerun reuses
the sequences already converted.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stride_jax import plotting, skeleton
from stride_jax.data import bvh, holosoma, resample, to_h36m
from stride_jax.data.dataset import (
    DEMO_PATH,
    PREPARE_COMMAND,
    SPLITS,
    Motion,
    data_root,
    processed_dir,
    raw_dir,
)
from stride_jax.files import sha256_bytes, sha256_file, write_bytes_atomic

FPS: float = resample.TARGET_FPS


@dataclasses.dataclass(frozen=True)
class RawSequence:
    """One built-in source file and where it goes.

    Attributes:
      name: sequence name (npz stem).
      path: file path below ``<root>/raw``.
      source: rig name in :data:`stride_jax.data.to_h36m.RIGS`.
      subject: performer id, a key of :data:`SPLIT_OF_SUBJECT`.
    """

    name: str
    path: str
    source: str
    subject: str

    @property
    def split(self) -> str:
        """``'train'``, ``'val'`` or ``'test'``, chosen by performer."""
        return SPLIT_OF_SUBJECT[self.subject]


_CLIMB = "holosoma/demo_data/climb/mocap_climb_seq_{k}/mocap_climb_seq_{k}_joint_positions_f{r}.npy"
_CLIMB_RANGES = ("900-3700", "0-2422", "100-3110", "200-2600", "0-2303")
SPLIT_OF_SUBJECT: dict[str, str] = {
    "lafan1_subject1": "train",
    "climb_A": "train",
    "climb_B": "val",
    "omomo_sub10": "val",
    "omomo_sub3": "test",
    "test3_unknown": "test",
}
BUILTIN: tuple[RawSequence, ...] = (
    RawSequence("lafan1_aiming1_subject1", "bvhtools/testBvhFiles/test.bvh", "lafan1", "lafan1_subject1"),
    RawSequence("lafan1_dance1_subject1", "bvhtools/testBvhFiles/test2.bvh", "lafan1", "lafan1_subject1"),
    *(
        RawSequence(f"climb_seq_{k}", _CLIMB.format(k=k, r=r), "climb", "climb_B" if k == 4 else "climb_A")
        for k, r in enumerate(_CLIMB_RANGES)
    ),
    RawSequence("omomo_sub10_largebox_049", "holosoma/demo_data/OMOMO_new/sub10_largebox_049.pt", "omomo",
                "omomo_sub10"),
    RawSequence("omomo_sub3_largebox_003", "holosoma/demo_data/OMOMO_new/sub3_largebox_003.pt", "omomo",
                "omomo_sub3"),
    RawSequence("test3", "bvhtools/testBvhFiles/test3.bvh", "blender", "test3_unknown"),
)  # fmt: skip

DEMO_SEQUENCE: str = "climb_seq_4"
DEMO_CLIP_FRAMES: int = 243
DEMO_SOURCE: str = (
    "holosoma-retargeting==0.1.0 demo_data/climb/mocap_climb_seq_4 (Apache-2.0, Amazon FAR); "
    "performer B (held out: val split); H36M-17, metres, world Y up, 30 fps"
)


def read_raw(seq: RawSequence, root: Path) -> Motion:
    """Read one built-in source file with the reader for its source."""
    path = raw_dir(root) / seq.path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. Run: {PREPARE_COMMAND}")
    readers: dict[str, Callable[..., Motion]] = {
        "lafan1": lambda p, **kw: bvh.read_bvh(p, source="lafan1", **kw),
        "blender": lambda p, **kw: bvh.read_bvh(p, source="blender", **kw),
        "climb": holosoma.read_climb,
        "omomo": holosoma.read_omomo,
    }
    return readers[seq.source](path, subject=seq.subject, sequence=seq.name)


def convert(motion: Motion, rig: str | None = None, fps: float = FPS) -> np.ndarray:
    """Source motion -> ``(T', 17, 3)`` float32 H36M-17 world joints (metres, Y up) at ``fps``."""
    return resample.resample(to_h36m.to_h36m(motion, rig), motion.fps, fps).astype(np.float32)


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """An ``.npz`` archive as bytes, reproducible (fixed member timestamps and order)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            z.writestr(info, member.getvalue())
    return buf.getvalue()


def _entry(name: str, split: str, subject: str, source: str, joints: np.ndarray, src_file: str,
           src_sha: str, out: Path, extra: dict[str, str] | None = None) -> dict:
    """Write one sequence's npz atomically (unless the same bytes are there); return its
    manifest entry. ``extra`` string fields go into both."""
    if joints.ndim != 3 or joints.shape[1:] != (skeleton.NUM_JOINTS, 3) or not np.isfinite(joints).all():
        raise ValueError(f"{name} ({src_file}): joints must be finite (T, 17, 3), got {joints.shape}")
    extra = extra or {}
    data = npz_bytes({"joints": joints.astype(np.float32), "fps": np.float32(FPS),
                      "subject": np.str_(subject), "source": np.str_(source),
                      **{k: np.str_(v) for k, v in extra.items()}})  # fmt: skip
    path, digest = out / split / f"{name}.npz", sha256_bytes(data)
    if not path.is_file() or sha256_file(path) != digest:
        write_bytes_atomic(path, data)
    return {"split": split, "subject": subject, "source": source, "frames": int(joints.shape[0]),
            "seconds": round(joints.shape[0] / FPS, 3), "fps": FPS,
            "sha256": digest, "source_file": src_file, "source_sha256": src_sha, **extra}  # fmt: skip


def _extra_sequences(extra: Path, default_split: str) -> list[tuple[str, str, str, str, np.ndarray, Path]]:
    """Read a user directory: ``(name, split, subject, source, joints at 30 fps, path)`` per file."""
    if not extra.is_dir():
        raise FileNotFoundError(f"--extra directory not found: {extra}")
    out = []
    for path in sorted(p for p in extra.rglob("*") if p.suffix.lower() in (".bvh", ".npz") and p.is_file()):
        rel = path.relative_to(extra)
        name = "extra_" + re.sub(r"[^A-Za-z0-9_.-]", "_", "__".join(rel.with_suffix("").parts))
        subject = rel.parts[0] if len(rel.parts) > 1 else path.stem
        split = default_split
        if path.suffix.lower() == ".bvh":
            motion = bvh.read_bvh(path, subject=subject, sequence=name)
            rig = to_h36m.detect_rig(motion.joint_names)
            joints, source = convert(motion, rig), f"extra_bvh_{rig}"
        else:
            with np.load(path, allow_pickle=False) as z:
                if "joints" not in z or "fps" not in z:
                    raise ValueError(f"{path}: an extra .npz needs 'joints' (T, 17, 3) metres and 'fps'")
                raw = np.asarray(z["joints"], dtype=np.float64)
                fps = float(z["fps"])
                subject = str(z["subject"]) if "subject" in z else subject
                split = str(z["split"]) if "split" in z else split
            if raw.ndim != 3 or raw.shape[1:] != (skeleton.NUM_JOINTS, 3):
                raise ValueError(f"{path}: 'joints' must be (T, 17, 3), got {raw.shape}")
            joints, source = resample.resample(raw, fps, FPS).astype(np.float32), "extra_npz"
        if split not in SPLITS:
            raise ValueError(f"{path}: split {split!r} is not one of {SPLITS}")
        out.append((name, split, subject, source, joints, path))
    if not out:
        raise FileNotFoundError(f"--extra directory {extra} holds no .bvh or .npz files")
    return out


def _check_splits(entries: dict[str, dict]) -> None:
    """Raise if a subject appears in two splits."""
    seen: dict[str, str] = {}
    for name, e in entries.items():
        if seen.setdefault(e["subject"], e["split"]) != e["split"]:
            raise ValueError(
                f"subject {e['subject']!r} ({name}) would be in both {seen[e['subject']]} and {e['split']}"
            )


def dataset_hash(entries: dict[str, dict]) -> str:
    """SHA-256 over the sorted per-sequence npz hashes, joined by newlines."""
    return sha256_bytes("\n".join(sorted(e["sha256"] for e in entries.values())).encode())


def prepare(root: Path | str | None = None, extra: Path | str | None = None, extra_split: str = "train",
            builtin: bool = True, amass: Path | str | None = None, body_models: Path | str | None = None,
            h36m_regressor: Path | str | None = None, amass_splits: dict[str, str] | None = None) -> dict:  # fmt: skip
    """Build ``processed/v1`` from the fetched files (and optional user data).

    Args:
      root: cache directory; defaults to :func:`stride_jax.data.dataset.data_root`.
      extra: optional directory of user ``.bvh`` / ``.npz`` files (module docstring).
      extra_split: split of extra files that do not name one.
      builtin: include the fetched built-in sources.
      amass: optional AMASS tree (SMPL-H ``.npz``), with ``body_models`` and
        ``h36m_regressor`` (:mod:`stride_jax.data.amass`).
      amass_splits: AMASS subset -> split (``'*'``: the rest); default
        :data:`stride_jax.data.amass.DEFAULT_SPLITS`.

    Returns:
      The manifest written to ``processed/v1/manifest.json``.

    Raises:
      FileNotFoundError: the raw files are missing (message names the fetch command).
      ValueError: a raw file's hash differs from the fetch manifest, or bad extra data.
    """
    root = Path(root) if root is not None else data_root()
    out = processed_dir(root)
    entries: dict[str, dict] = {}
    amass_plan = None
    if amass is not None:
        from stride_jax.data import amass as amass_reader  # JAX is imported only for AMASS

        if body_models is None or h36m_regressor is None:
            raise ValueError("--amass needs --body_models DIR and --h36m_regressor FILE")
        amass_plan = amass_reader.plan(amass, body_models, h36m_regressor, amass_splits)
    if builtin:
        raw_manifest_path = raw_dir(root) / "manifest.json"
        if not raw_manifest_path.is_file():
            raise FileNotFoundError(f"{raw_manifest_path} is missing. Run: {PREPARE_COMMAND}")
        raw_files = json.loads(raw_manifest_path.read_text())["files"]
        for seq in BUILTIN:
            digest = sha256_file(raw_dir(root) / seq.path) if (raw_dir(root) / seq.path).is_file() else None
            if digest is None or raw_files.get(seq.path, {}).get("sha256") != digest:
                raise ValueError(f"{raw_dir(root) / seq.path}: missing or hash differs from raw/manifest.json; "
                                 f"run: python -m stride_jax.data.fetch --force")  # fmt: skip
            joints = convert(read_raw(seq, root), seq.source)
            entries[seq.name] = _entry(seq.name, seq.split, seq.subject, seq.source, joints, seq.path, digest, out)
    if extra is not None:
        for name, split, subject, source, joints, path in _extra_sequences(Path(extra), extra_split):
            if name in entries:
                raise ValueError(f"{path}: sequence name {name} is already used")
            entries[name] = _entry(name, split, subject, source, joints, str(path.resolve()),
                                   sha256_file(path), out)  # fmt: skip
    if amass_plan is not None:
        for name, split, subject, source, joints, path, digest, fields in amass_reader.convert(amass_plan, out):
            if name in entries:
                raise ValueError(f"{path}: sequence name {name} is already used")
            entries[name] = _entry(name, split, subject, source, joints, str(path.resolve()), digest, out, fields)
    _check_splits(entries)
    manifest = {"version": out.name, "fps": FPS, "joints": list(skeleton.JOINT_NAMES),
                "world": "metres, right-handed, +Y up, floor at y~0",
                "sequences": dict(sorted(entries.items())), "dataset_sha256": dataset_hash(entries)}  # fmt: skip
    write_bytes_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    for split in SPLITS:
        for stale in (out / split).glob("*.npz") if (out / split).is_dir() else ():
            if entries.get(stale.stem, {}).get("split") != split:
                stale.unlink()
    return manifest


def summary_table(manifest: dict) -> str:
    """Sequences, subjects, frames and minutes per split, as a text table."""
    rows = ["split   sequences  subjects     frames  minutes"]
    for split in SPLITS:
        seqs = [e for e in manifest["sequences"].values() if e["split"] == split]
        frames = sum(e["frames"] for e in seqs)
        rows.append(f"{split:<7} {len(seqs):>9}  {len({e['subject'] for e in seqs}):>8}  {frames:>9}"
                    f"  {frames / manifest['fps'] / 60:>7.2f}")  # fmt: skip
    return "\n".join(rows)


def build_demo(root: Path | str | None = None, out: Path | str | None = None) -> Path:
    """Write the demo asset: non-overlapping 243-frame clips of climb seq 4 at 30 fps.

    Seq 4 (performer B, held out) has 576 frames at 30 fps, so it yields 2 clips, centred.
    Keys: ``joints`` (K, 243, 17, 3) float32 metres world Y up, ``fps``, ``source``,
    ``start_frames`` (K,).
    """
    root = Path(root) if root is not None else data_root()
    seq = next(s for s in BUILTIN if s.name == DEMO_SEQUENCE)
    joints = convert(read_raw(seq, root), seq.source)
    k = joints.shape[0] // DEMO_CLIP_FRAMES
    first = (joints.shape[0] - k * DEMO_CLIP_FRAMES) // 2
    starts = first + DEMO_CLIP_FRAMES * np.arange(k)
    clips = np.stack([joints[s : s + DEMO_CLIP_FRAMES] for s in starts]).astype(np.float32)
    arrays = {"joints": clips, "fps": np.float32(FPS), "source": np.str_(DEMO_SOURCE),
              "start_frames": starts.astype(np.int32)}  # fmt: skip
    path = Path(out) if out is not None else DEMO_PATH
    write_bytes_atomic(path, npz_bytes(arrays, compress=True))
    return path


def plot_sources(root: Path | str | None = None, out_dir: Path | str = "docs/data") -> list[Path]:
    """Save ``<out_dir>/<source>.png``: one converted frame per source, front and side views.

    The frame shown is the most upright one with both feet low (least ankle height plus
    horizontal thorax-over-pelvis offset). It is turned about Y so that the body's left (hips +
    shoulders) points to +x; it then faces +z. Left bones are blue, right bones red.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root) if root is not None else data_root()
    paths = []
    for source in to_h36m.RIGS:
        seq = next(s for s in BUILTIN if s.source == source)
        joints = convert(read_raw(seq, root), seq.source)
        ix = skeleton.JOINT_INDEX
        lean = np.linalg.norm((joints[:, ix["thorax"]] - joints[:, ix["pelvis"]])[:, [0, 2]], axis=-1)
        frame = int(np.argmin(joints[:, [ix["l_ankle"], ix["r_ankle"]], 1].max(axis=1) + lean))
        pose = joints[frame].astype(np.float64)
        left = pose[ix["l_hip"]] - pose[ix["r_hip"]] + pose[ix["l_shoulder"]] - pose[ix["r_shoulder"]]
        angle = np.arctan2(left[2], left[0])
        c, s_ = np.cos(angle), np.sin(angle)
        pose = pose @ np.array([[c, 0.0, -s_], [0.0, 1.0, 0.0], [s_, 0.0, c]])
        pose[:, [0, 2]] -= pose[ix["pelvis"], [0, 2]]
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 4.0), dpi=80)
        views = ((0, "front (left side on the right)"), (2, "side (facing right)"))
        for ax, (h, title) in zip(axes, views, strict=True):
            plotting.draw_skeleton(ax, pose[:, [h, 1]], lw=2, marker_size=3)
            ax.axhline(0.0, color="0.6", lw=1)
            ax.set_aspect("equal")
            ax.set_xlim(-1.0, 1.0)
            ax.set_ylim(min(-0.05, pose[:, 1].min() - 0.05), max(2.0, pose[:, 1].max() + 0.05))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("x (m)" if h == 0 else "z (m)")
        axes[0].set_ylabel("y, up (m)")
        fig.suptitle(f"{source}: {seq.name} frame {frame} (30 fps, H36M-17)", fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        path = Path(out_dir) / f"{source}.png"
        write_bytes_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="default: $STRIDE_DATA or ~/.cache/stride_jax")
    parser.add_argument("--extra", type=Path, default=None, help="directory of your own .bvh / .npz motion files")
    parser.add_argument("--extra-split", default="train", choices=SPLITS, help="split for extra files that name none")
    parser.add_argument("--no-builtin", action="store_true", help="only the --extra data, not the fetched files")
    parser.add_argument("--demo", action="store_true", help="also rewrite stride_jax/assets/demo_climb.npz")
    parser.add_argument("--figures", type=Path, default=None, help="also save one PNG per source into this directory")
    parser.add_argument("--amass", type=Path, default=None, help="AMASS tree <SUBSET>/<subject>/<seq>_poses.npz (SMPL+H G)")
    parser.add_argument("--body_models", type=Path, default=None, help="folder of your SMPL-H model .npz files")
    parser.add_argument("--h36m_regressor", type=Path, default=None, help="J_regressor_h36m.npy (17 x 6890)")
    parser.add_argument("--amass_splits", default=None,
                        help="SUBSET=SPLIT,...,*=SPLIT (default: AMASS's recommended split, the rest train)")
    args = parser.parse_args(argv)
    try:
        splits = None
        if args.amass_splits is not None:
            from stride_jax.data.amass import parse_splits

            splits = parse_splits(args.amass_splits)
        manifest = prepare(args.root, extra=args.extra, extra_split=args.extra_split, builtin=not args.no_builtin,
                           amass=args.amass, body_models=args.body_models, h36m_regressor=args.h36m_regressor,
                           amass_splits=splits)  # fmt: skip
        if args.demo:
            print(f"wrote {build_demo(args.root)}")
        if args.figures is not None:
            print("wrote", *plot_sources(args.root, args.figures))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary_table(manifest))
    print(f"dataset_sha256 {manifest['dataset_sha256']}  ->  {processed_dir(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
