"""AMASS -> H36M through ``python -m stride_jax.data.prepare --amass``: output, splits,
skips, resuming, bad inputs, and pretraining on the result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import body_model
from stride_jax.data import amass, dataset, prepare, resample, to_h36m

REPO = Path(__file__).resolve().parents[1]
VERTICES = 690  # a small random mesh keeps the test fast; the code paths are those of 6890


def _write_sequence(path: Path, frames: int, fps: float, gender, seed: int, **override) -> None:
    rng = np.random.default_rng(seed)
    poses = np.cumsum(rng.normal(scale=0.02, size=(frames, 156)), axis=0)
    poses += rng.normal(scale=0.3, size=156)
    trans = np.cumsum(rng.normal(scale=0.005, size=(frames, 3)), axis=0) + [0.5, -1.0, 0.9]
    arrays = dict(poses=poses, trans=trans, betas=rng.normal(size=16), gender=gender,
                  mocap_framerate=np.float64(fps), dmpls=np.zeros((frames, 8)))
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


# (path below the tree, frames, input fps, gender, expected split)
SEQUENCES = [
    ("CMU/01/01_01_poses.npz", 600, 120.0, "male", "train"),  # 3 chunks of 256 frames
    ("CMU/02/02_05_poses.npz", 120, 60.0, np.bytes_(b"female"), "train"),
    ("HumanEva/S1/Walking_1_poses.npz", 101, 100.0, "female", "val"),
    ("SSM_synced/resting/x_poses.npz", 40, 30.0, "male", "test"),
]


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    models = tmp_path / "models"
    for seed, rel in enumerate(("smplh/male/model.npz", "SMPLH_FEMALE.npz")):  # two layouts
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez(models / rel, **body_model.synthetic_model_arrays(seed, num_vertices=VERTICES))
    rng = np.random.default_rng(5)
    regressor = np.zeros((17, VERTICES))
    for row in regressor:
        row[rng.choice(VERTICES, 12, replace=False)] = rng.dirichlet(np.ones(12))
    np.save(tmp_path / "J_regressor_h36m.npy", regressor)
    tree = tmp_path / "amass"
    for seed, (rel, frames, fps, gender, _) in enumerate(SEQUENCES):
        _write_sequence(tree / rel, frames, fps, gender, seed)
    np.savez(tree / "CMU/01/shape.npz", betas=np.zeros(16), gender="male")
    (tree / "CMU/03").mkdir()
    np.savez(tree / "CMU/03/calibration.npz", betas=np.zeros(16), gender="male")  # no poses
    return {"amass": tree, "body_models": models, "root": tmp_path / "cache",
            "h36m_regressor": tmp_path / "J_regressor_h36m.npy"}


def _run(inputs, capsys, *extra: str) -> tuple[int, str]:
    argv = ["--root", str(inputs["root"]), "--no-builtin"]
    argv += [f"--{k}={inputs[k]}" for k in ("amass", "body_models", "h36m_regressor")]
    code = prepare.main(argv + list(extra))
    return code, capsys.readouterr().err


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _reference(inputs, rel: str) -> np.ndarray:
    """The sequence's H36M joints at its own rate, world Y up, from the full mesh."""
    with np.load(inputs["amass"] / rel) as z:
        poses, trans, betas = z["poses"], z["trans"], z["betas"]
        gender = z["gender"].item()
    gender = gender.decode() if isinstance(gender, bytes) else gender
    model = body_model.load_model(amass.find_model(inputs["body_models"], gender))
    verts = body_model.joints_and_vertices(model, jnp.asarray(poses), jnp.asarray(betas),
                                           jnp.asarray(trans))[1]
    zup = np.einsum("kv,tvc->tkc", np.load(inputs["h36m_regressor"]), np.asarray(verts, np.float64))
    world = to_h36m.to_world(zup, "z")
    np.testing.assert_allclose(world[..., 1], zup[..., 2])  # AMASS z (up) is the world's y
    return world


def test_convert_splits_skips_and_resumes(inputs, capsys):
    code, err = _run(inputs, capsys)
    assert code == 0, err
    assert "4 sequences: 4 converted (861 frames" in err and "0 already converted" in err
    assert "skipped: 1 shape files, 1 without poses" in err
    root = inputs["root"]
    manifest = dataset.load_manifest(root)
    names = {f"amass_{rel[:-4].replace('/', '__')}": (frames, fps, split)
             for rel, frames, fps, _, split in SEQUENCES}  # fmt: skip
    assert set(manifest["sequences"]) == set(names)
    for name, (frames, fps, split) in names.items():
        entry = manifest["sequences"][name]
        assert entry["split"] == split and entry["source"] == "amass"
        assert entry["frames"] == resample.num_output_frames(frames, fps, 30.0)
    seqs = manifest["sequences"]
    assert seqs["amass_CMU__01__01_01_poses"]["frames"] == 150  # 600 @ 120 -> 30 fps
    assert seqs["amass_HumanEva__S1__Walking_1_poses"]["subject"] == "amass_HumanEva_S1"
    by_split = {s: {q.name: q for q in dataset.load_split(s, root)} for s in dataset.SPLITS}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 2, "val": 1, "test": 1}

    # Values: the 30 fps file equals the full-mesh reference; the 120 fps file (3 padded
    # chunks) equals it after the same resampling.
    test_seq = by_split["test"]["amass_SSM_synced__resting__x_poses"]
    np.testing.assert_allclose(test_seq.joints, _reference(inputs, SEQUENCES[3][0]), atol=1e-5)
    train_seq = by_split["train"]["amass_CMU__01__01_01_poses"]
    ref = resample.resample(_reference(inputs, SEQUENCES[0][0]), 120.0, 30.0)
    np.testing.assert_allclose(train_seq.joints, ref, atol=1e-5)
    assert 0.3 < np.median(train_seq.joints[..., 1]) < 1.5  # standing height, Y up

    # A rerun converts nothing and leaves every file untouched.
    before = _snapshot(root)
    code, err = _run(inputs, capsys)
    assert code == 0 and "4 sequences: 0 converted" in err and "4 already converted" in err
    again = _snapshot(root)
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in before.items()}
    assert all(again[k] == v for k, v in before.items() if k.endswith(".npz"))  # not rewritten
    # A changed input file is converted again, the others are reused.
    _write_sequence(inputs["amass"] / SEQUENCES[1][0], 120, 60.0, "female", seed=99)
    code, err = _run(inputs, capsys)
    assert code == 0 and "1 converted (120 frames" in err and "3 already converted" in err
    after = dataset.load_manifest(root)
    changed = "amass_CMU__02__02_05_poses"
    assert after["sequences"][changed]["sha256"] != manifest["sequences"][changed]["sha256"]
    assert all(after["sequences"][n] == manifest["sequences"][n] for n in names if n != changed)
    # Another split mapping moves files without converting them.
    code, err = _run(inputs, capsys, "--amass_splits", "SSM_synced=test,*=train")
    assert code == 0 and "0 converted" in err
    splits = {e["split"] for e in dataset.load_manifest(root)["sequences"].values()}
    assert splits == {"train", "test"}
    assert not list((dataset.processed_dir(root) / "val").glob("*.npz"))


def _bad_poses_width(tree):
    _write_sequence(tree / "KIT/9/z_poses.npz", 30, 100.0, "male", 1, poses=np.zeros((30, 165)))


def _nan_poses(tree):
    poses = np.zeros((30, 156))
    poses[7, 40] = np.nan
    _write_sequence(tree / "KIT/9/z_poses.npz", 30, 100.0, "male", 1, poses=poses)


def _nan_trans(tree):
    trans = np.zeros((30, 3))
    trans[3, 2] = np.inf
    _write_sequence(tree / "KIT/9/z_poses.npz", 30, 100.0, "male", 1, trans=trans)


def _corrupt(tree):
    (tree / "KIT/9").mkdir(parents=True)
    (tree / "KIT/9/z_poses.npz").write_bytes(b"PK\x03\x04" + os.urandom(200))


def _neutral(tree):
    _write_sequence(tree / "KIT/9/z_poses.npz", 30, 100.0, "neutral", 1)


@pytest.mark.parametrize("damage, message", [
    (_bad_poses_width,
     r"z_poses.npz: poses has shape \(30, 165\), expected \(T, 156\) \(165: an SMPL-X"),
    (_nan_poses, "z_poses.npz: poses holds NaN"),
    (_nan_trans, "z_poses.npz: trans holds NaN"),
    (_corrupt, "z_poses.npz: not a readable .npz"),
    (_neutral, "no SMPL-H model for gender 'neutral': tried"),
    (lambda tree: np.save(tree.parent / "J_regressor_h36m.npy", np.ones((17, VERTICES - 1))),
     rf"regressor has shape \(17, {VERTICES - 1}\), expected \(17, {VERTICES}\)"),
])  # fmt: skip
def test_bad_input_is_named_and_writes_nothing(inputs, capsys, damage, message):
    code, err = _run(inputs, capsys)
    assert code == 0, err
    before = _snapshot(inputs["root"])
    _write_sequence(inputs["amass"] / "ACCAD/7/a_poses.npz", 60, 120.0, "male", 3)  # good, new
    damage(inputs["amass"])
    code, err = _run(inputs, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: ") and re.search(message, err), err
    assert _snapshot(inputs["root"]) == before  # no new, changed or temporary file


def test_layout_and_split_mapping_errors(inputs, capsys):
    np.savez(inputs["amass"] / "loose_poses.npz", poses=np.zeros((3, 156)))
    code, err = _run(inputs, capsys)
    assert code == 1 and "expected the layout <SUBSET>/<subject>/<seq>_poses.npz" in err
    (inputs["amass"] / "loose_poses.npz").unlink()
    code, err = _run(inputs, capsys, "--amass_splits", "CMU=train,HumanEva=dev")
    assert code == 1 and "'HumanEva=dev' is not SUBSET=SPLIT" in err
    code, err = _run(inputs, capsys, "--amass_splits", "CMU=train")
    assert code == 1 and "subset 'HumanEva' has no split" in err
    assert not inputs["root"].exists()


def test_pretraining_runs_on_the_converted_dataset(inputs, capsys, tmp_path):
    """``python -m stride_jax.pretrain --config configs/cpu.py:runlocal`` on AMASS output only."""
    code, err = _run(inputs, capsys)
    assert code == 0, err
    cmd = [sys.executable, "-m", "stride_jax.pretrain",
           "--config", f"{REPO / 'configs' / 'cpu.py'}:runlocal",
           "--workdir", str(tmp_path / "run"), "--config.pretrain.num_steps=2"]
    env = dict(os.environ, PYTHONPATH=str(REPO), STRIDE_DATA=str(inputs["root"]))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "prior").is_dir()
    manifest = dataset.load_manifest(inputs["root"])
    assert '"data_manifest_hash": "' + manifest["dataset_sha256"] in (
        tmp_path / "run" / "prior" / "prior.json").read_text()


def test_synthetic_tree_for_dry_runs_plans_all_splits(tmp_path):
    paths = amass.write_synthetic(tmp_path, sequences=3, frames=40, fps=120.0)
    planned = amass.plan(paths["amass"], paths["body_models"], paths["h36m_regressor"])
    assert [it.split for it in planned.items] == ["train", "val", "test"]
    assert {it.frames for it in planned.items} == {40} and set(planned.models) == {"male", "female"}
    assert planned.regressor.shape == (17, 6890)
