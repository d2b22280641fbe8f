"""Fetch the real motion files (and one real video clip) from three PyPI packages into the data cache.

``python -m stride_jax.data.fetch [--root DIR] [--force]``

* ``bvhtools==1.6.0`` (sdist): ``testBvhFiles/test.bvh``, ``test2.bvh`` (Ubisoft LAFAN1,
  CC BY-NC-ND 4.0) and ``test3.bvh`` (origin unstated).
* ``holosoma-retargeting==0.1.0`` (wheel, Apache-2.0, Amazon FAR): the climb joint-position
  ``.npy`` files, the two OMOMO ``.pt`` tensors and ``height_dict.pkl``.
* ``sports2d==0.8.34`` (wheel, BSD-3-Clause, (c) 2022 perfanalytics): ``Demo/demo.mp4``, a
  real 7.7 s, 30 fps, 1768x994 clip of two people (one walking, one on a wall) used by the
  video front end's example and real-motion test (``python -m stride_jax.align --video``).
  Not motion capture: ``prepare`` does not read it.

Each package is downloaded with ``pip download --no-deps`` into a temporary directory under
the cache, only the motion files are extracted to ``<root>/raw/<package>/...`` and the
archive is deleted. ``<root>/raw/manifest.json`` records every file's SHA-256. Files this code
was written against are checked against pinned hashes. Rerunning is a no-op while the files
exist with the pinned hashes. All writes go to a temporary name first and are renamed.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from stride_jax.data.dataset import data_root, raw_dir
from stride_jax.files import sha256_bytes, sha256_file, write_bytes_atomic

MANIFEST_VERSION = 1


class FetchError(RuntimeError):
    """A download or extraction failed; the message is meant for the user."""


@dataclasses.dataclass(frozen=True)
class Package:
    """A PyPI package holding motion files.

    Attributes:
      key: directory name under ``raw/``.
      spec: pip requirement, ``name==version``.
      pip_args: extra ``pip download`` arguments.
      patterns: ``fnmatch`` patterns of the members to extract (archive top folder removed).
      pinned: expected SHA-256 of the members this code was written against.
    """

    key: str
    spec: str
    pip_args: tuple[str, ...]
    patterns: tuple[str, ...]
    pinned: dict[str, str]


PACKAGES: tuple[Package, ...] = (
    Package(
        key="bvhtools",
        spec="bvhtools==1.6.0",
        pip_args=("--no-binary", ":all:"),
        patterns=("testBvhFiles/test.bvh", "testBvhFiles/test2.bvh", "testBvhFiles/test3.bvh"),
        pinned={
            "testBvhFiles/test.bvh": "53c90d858221d02a623776b6bca9d4cfed17ea832fc7bd641b35549055af912c",
            "testBvhFiles/test2.bvh": "4f15d0b1caac72f9e58745f5ab9183d7dc051dd6fcdc4e1bd90af128b8cfab4d",
            "testBvhFiles/test3.bvh": "49d7655a1e5acc11f08c2e541506b638fa1684b889d1c2f44d408d2952960ff8",
        },
    ),
    Package(
        key="holosoma",
        spec="holosoma-retargeting==0.1.0",
        pip_args=(),
        patterns=(
            "demo_data/climb/mocap_climb_seq_*/*joint_positions*.npy",
            "demo_data/OMOMO_new/*.pt",
            "demo_data/height_dict.pkl",
        ),
        pinned={
            "demo_data/climb/mocap_climb_seq_0/mocap_climb_seq_0_joint_positions_f900-3700.npy":
                "0d10253c34f26148c40e96261033b7e5955bcd5d784b76a02be8847aa2b75d8d",
            "demo_data/climb/mocap_climb_seq_1/mocap_climb_seq_1_joint_positions_f0-2422.npy":
                "5ad287c1a0f288c615bc56032887fa8f21cf5d027d4d906001387db862750a7f",
            "demo_data/climb/mocap_climb_seq_2/mocap_climb_seq_2_joint_positions_f100-3110.npy":
                "fb33fb51393fc1408876f91ef2dfd2a0e1944b148c54a275f9a5a0965dca253a",
            "demo_data/climb/mocap_climb_seq_3/mocap_climb_seq_3_joint_positions_f200-2600.npy":
                "6c9f16cd72bd8e87b8b4d69b3d11370d56f5160af2882215baf45464d6bd0843",
            "demo_data/climb/mocap_climb_seq_4/mocap_climb_seq_4_joint_positions_f0-2303.npy":
                "503c423d5aeaff9805316a62c47ec1dd99f8cb5668fdc041510398e29d846984",
            "demo_data/OMOMO_new/sub10_largebox_049.pt":
                "a26452327215eb3a5dfddba406d4a11c54fb911c3c963b0a87d4e343930a38c2",
            "demo_data/OMOMO_new/sub3_largebox_003.pt":
                "dead7293077ca1e1ea1a344cf416182463fa2f4d66f4e304cc846866913a4844",
            "demo_data/height_dict.pkl":
                "20242a57e0ef2721cec152cbaf83be4bcb705b56c821fd666443e52418e96ee4",
        },
    ),
    Package(
        key="sports2d",
        spec="sports2d==0.8.34",
        pip_args=(),
        patterns=("Demo/demo.mp4",),
        pinned={"Demo/demo.mp4": "d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039"},
    ),
)


def demo_video(root: Path | str | None = None) -> Path:
    """Path of the fetched real demo clip (Sports2D ``Demo/demo.mp4``, BSD-3-Clause).

    Raises:
      FileNotFoundError: not fetched yet (the message names the command).
    """
    path = raw_dir(Path(root) if root is not None else data_root()) / "sports2d" / "Demo" / "demo.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. Run: python -m stride_jax.data.fetch")
    return path


def _load_raw_manifest(root: Path) -> dict:
    path = raw_dir(root) / "manifest.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"version": MANIFEST_VERSION, "files": {}}


def _is_complete(pkg: Package, root: Path) -> bool:
    """True when every pinned file of ``pkg`` exists under ``raw/`` with its pinned hash."""
    base = raw_dir(root) / pkg.key
    return all((base / rel).is_file() and sha256_file(base / rel) == digest for rel, digest in pkg.pinned.items())


def _download(pkg: Package, dest: Path) -> Path:
    """``pip download`` one package into ``dest``; returns the archive path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *pkg.pip_args, pkg.spec, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise FetchError(f"Could not run pip to download {pkg.spec}: {e}") from None
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode != 0 or not archives:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FetchError(
            f"Could not download {pkg.spec}: the package registry (PyPI) could not be reached "
            f"or did not serve it. pip said: {detail}"
        )
    return archives[0]


def _member_names(archive: Path) -> list[str]:
    """Names of the regular files in a wheel/zip or ``.tar.gz`` archive."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return [i.filename for i in z.infolist() if not i.is_dir()]
    with tarfile.open(archive, "r:gz") as t:
        return [i.name for i in t.getmembers() if i.isfile()]


def _read_member(archive: Path, name: str) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive, "r:gz") as t:
        f = t.extractfile(name)
        if f is None:
            raise FetchError(f"{archive.name}: member {name} is not a regular file")
        return f.read()


def _extract(pkg: Package, archive: Path, root: Path) -> dict[str, dict]:
    """Extract the members matching ``pkg.patterns``; returns manifest entries keyed by raw path."""
    entries: dict[str, dict] = {}
    for name in sorted(_member_names(archive)):
        rel = name.split("/", 1)[1] if "/" in name else name
        if not any(fnmatch.fnmatch(rel, p) for p in pkg.patterns):
            continue
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise FetchError(f"{archive.name}: refusing unsafe member path {name!r}")
        data = _read_member(archive, name)
        digest = sha256_bytes(data)
        if rel in pkg.pinned and pkg.pinned[rel] != digest:
            raise FetchError(
                f"{pkg.spec}: {rel} has SHA-256 {digest}, expected {pkg.pinned[rel]}; "
                "the package content differs from the one this code was written against"
            )
        write_bytes_atomic(raw_dir(root) / pkg.key / rel, data)
        entries[f"{pkg.key}/{rel}"] = {"sha256": digest, "package": pkg.spec, "member": name, "bytes": len(data)}
    missing = sorted(set(pkg.pinned) - {k.split("/", 1)[1] for k in entries})
    if missing:
        raise FetchError(f"{pkg.spec}: expected files not found in {archive.name}: {missing}")
    return entries


def fetch(root: Path | str | None = None, force: bool = False, verbose: bool = True) -> dict:
    """Download and extract the motion files; a no-op when they are already in place.

    Args:
      root: cache directory; defaults to :func:`stride_jax.data.dataset.data_root`.
      force: download again even when the files are present.
      verbose: print one line per package.

    Returns:
      The raw manifest ``{"version", "files": {raw path: {"sha256", "package", ...}}}``.

    Raises:
      FetchError: pip could not download a package, or its content is not as expected.
    """
    root = Path(root) if root is not None else data_root()
    manifest = _load_raw_manifest(root)
    changed = False
    for pkg in PACKAGES:
        if not force and _is_complete(pkg, root):
            if verbose:
                print(f"{pkg.spec}: already fetched")
            continue
        raw_dir(root).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=raw_dir(root), prefix=".download-") as tmp:
            if verbose:
                print(f"{pkg.spec}: downloading ...", flush=True)
            archive = _download(pkg, Path(tmp))
            entries = _extract(pkg, archive, root)
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith(pkg.key + "/")}
        manifest["files"].update(entries)
        changed = True
        if verbose:
            print(f"{pkg.spec}: extracted {len(entries)} files to {raw_dir(root) / pkg.key}")
    if changed or not (raw_dir(root) / "manifest.json").is_file():
        manifest["version"] = MANIFEST_VERSION
        for pkg in PACKAGES:
            for rel, digest in pkg.pinned.items():
                manifest["files"].setdefault(f"{pkg.key}/{rel}", {"sha256": digest, "package": pkg.spec})
        manifest["files"] = dict(sorted(manifest["files"].items()))
        write_bytes_atomic(raw_dir(root) / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="default: $STRIDE_DATA or ~/.cache/stride_jax")
    parser.add_argument("--force", action="store_true", help="download again even if the files are present")
    args = parser.parse_args(argv)
    try:
        fetch(args.root, force=args.force)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
