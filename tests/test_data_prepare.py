"""Tests of resampling, fetching, the prepared splits and the embedded demo asset."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from stride_jax import files, skeleton
from stride_jax.data import dataset, fetch, prepare, resample

LIMBS = [(a, b) for a, b in skeleton.BONES if a in skeleton.LEFT + skeleton.RIGHT]  # femur, tibia, arm, forearm


def _bone_lengths(joints: np.ndarray) -> np.ndarray:
    return np.linalg.norm(joints[..., skeleton.BONES[:, 1], :] - joints[..., skeleton.BONES[:, 0], :], axis=-1)


class TestResample:
    @pytest.mark.parametrize("fps_in", [120.0, 24.0, 30.0])
    def test_sine_keeps_frequency_and_amplitude(self, fps_in):
        freq, amp = 1.3, 0.7
        t = np.arange(int(20 * fps_in)) / fps_in
        x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        y = resample.resample(x, fps_in, 30.0)
        t_out = np.arange(len(y)) / 30.0
        assert len(y) == resample.num_output_frames(len(x), fps_in, 30.0) and y.dtype == np.float32
        np.testing.assert_allclose(y, amp * np.sin(2 * np.pi * freq * t_out), atol=2e-3)
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        assert abs(np.fft.rfftfreq(len(y), 1 / 30.0)[np.argmax(spectrum)] - freq) < 30.0 / len(y)

    def test_shapes_and_endpoints(self):
        x = np.random.default_rng(0).normal(size=(121, 17, 3)).cumsum(axis=0)
        y = resample.resample(x, 120.0, 30.0, antialias=False)
        assert y.shape == (31, 17, 3)
        np.testing.assert_allclose(y, x[::4], atol=1e-9)  # exact at shared sample times
        with pytest.raises(ValueError, match="positive"):
            resample.resample(x, 0.0, 30.0)


class TestFetch:
    def test_download_failure_is_a_clear_message(self, tmp_path, monkeypatch, capsys):
        def fail(*args, **kwargs):
            return subprocess.CompletedProcess(args, 1, "", "ERROR: Could not find a version\nnetwork down\n")

        monkeypatch.setattr(fetch.subprocess, "run", fail)
        assert fetch.main(["--root", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert "bvhtools==1.6.0" in err and "could not be reached" in err and "Traceback" not in err

    def test_rerun_is_a_no_op(self, raw_data_root, monkeypatch):
        def no_download(*args, **kwargs):
            raise AssertionError("fetch downloaded although the files are in place")

        monkeypatch.setattr(fetch, "_download", no_download)
        manifest = fetch.fetch(raw_data_root, verbose=False)
        for rel, entry in manifest["files"].items():
            assert files.sha256_file(dataset.raw_dir(raw_data_root) / rel) == entry["sha256"], rel

    def test_atomic_write_leaves_no_temp_files(self, tmp_path):
        files.write_bytes_atomic(tmp_path / "a" / "b.bin", b"xyz")
        assert (tmp_path / "a" / "b.bin").read_bytes() == b"xyz"
        assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.bin"]


class TestSplits:
    def test_builtin_splits_are_disjoint_by_performer(self):
        names = [s.name for s in prepare.BUILTIN]
        paths = [s.path for s in prepare.BUILTIN]
        assert len(set(names)) == len(names) and len(set(paths)) == len(paths)
        split_of = {}
        for s in prepare.BUILTIN:
            assert split_of.setdefault(s.subject, s.split) == s.split
        assert {s.split for s in prepare.BUILTIN} == set(dataset.SPLITS)
        by_split = {sp: {s.name for s in prepare.BUILTIN if s.split == sp} for sp in dataset.SPLITS}
        assert by_split["val"] == {"climb_seq_4", "omomo_sub10_largebox_049"}
        assert by_split["test"] == {"omomo_sub3_largebox_003", "test3"}

    def test_prepared_manifest_matches_files(self, prepared_data_root):
        manifest = dataset.load_manifest(prepared_data_root)
        base = dataset.processed_dir(prepared_data_root)
        entries = manifest["sequences"]
        for name, e in entries.items():
            assert files.sha256_file(base / e["split"] / f"{name}.npz") == e["sha256"], name
        assert manifest["dataset_sha256"] == prepare.dataset_hash(entries)
        subjects = {sp: {e["subject"] for e in entries.values() if e["split"] == sp} for sp in dataset.SPLITS}
        assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                    or subjects["val"] & subjects["test"])  # fmt: skip
        seqs = {sp: dataset.load_split(sp, prepared_data_root) for sp in dataset.SPLITS}
        assert sum(len(v) for v in seqs.values()) == len(entries)
        for split, items in seqs.items():
            for seq in items:
                assert seq.fps == 30.0 and seq.joints.dtype == np.float32 and seq.joints.shape[1:] == (17, 3)
                assert entries[seq.name]["frames"] == len(seq.joints) and entries[seq.name]["split"] == split


def test_load_split_names_the_command_when_data_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m stride_jax.data.fetch && python -m stride_jax.data.prepare"):
        dataset.load_split("train", root=tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        dataset.load_split("dev", root=tmp_path)


def test_extra_user_data(tmp_path):
    extra = tmp_path / "mine"
    (extra / "alice").mkdir(parents=True)
    demo, fps = dataset.load_demo()
    np.savez(extra / "alice" / "walk.npz", joints=demo[0], fps=np.float32(fps))
    np.savez(extra / "bob.npz", joints=demo[1, :120], fps=np.float32(60.0), split="test")
    manifest = prepare.prepare(tmp_path / "cache", extra=extra, builtin=False)
    assert set(manifest["sequences"]) == {"extra_alice__walk", "extra_bob"}
    assert manifest["sequences"]["extra_alice__walk"]["subject"] == "alice"
    train = dataset.load_split("train", tmp_path / "cache")
    np.testing.assert_allclose(train[0].joints, demo[0], atol=1e-6)
    (test_seq,) = dataset.load_split("test", tmp_path / "cache")
    assert test_seq.subject == "bob" and len(test_seq.joints) == 60  # 2 s at 60 fps -> 30 fps
    again = prepare.prepare(tmp_path / "cache", extra=extra, builtin=False)
    assert again["dataset_sha256"] == manifest["dataset_sha256"]  # byte-for-byte reproducible
    np.savez(extra / "alice" / "run.npz", joints=demo[1], fps=np.float32(fps), split="val")
    with pytest.raises(ValueError, match="alice"):
        prepare.prepare(tmp_path / "cache", extra=extra, builtin=False)


def test_demo_asset():
    with np.load(dataset.DEMO_PATH) as z:
        assert {"joints", "fps", "source"} <= set(z.files)
        assert "Apache-2.0" in str(z["source"]) and "LAFAN" not in str(z["source"])
    joints, fps = dataset.load_demo()
    assert fps == 30.0 and joints.dtype == np.float32
    assert joints.ndim == 4 and joints.shape[0] >= 2 and joints.shape[1:] == (243, 17, 3)
    assert dataset.DEMO_PATH.stat().st_size < 300_000
    lengths = _bone_lengths(joints)
    limb = [int(np.where((skeleton.BONES == pair).all(axis=1))[0][0]) for pair in LIMBS]
    assert np.ptp(lengths[..., limb], axis=1).max() < 2e-3
    ix = skeleton.JOINT_INDEX
    femur = lengths[..., [ix["l_knee"] - 1, ix["r_knee"] - 1]]
    assert 0.3 < femur.min() and femur.max() < 0.6
    assert 0.05 < lengths.min() and lengths.max() < 0.6
    y = np.median(joints[..., 1], axis=(0, 1))
    assert y[ix["head"]] > y[ix["thorax"]] > y[ix["pelvis"]] > y[ix["l_knee"]] > y[ix["l_ankle"]] > -0.05


def test_demo_asset_matches_prepared_data(raw_data_root):
    joints, _ = dataset.load_demo()
    full = prepare.convert(prepare.read_raw(next(s for s in prepare.BUILTIN if s.name == "climb_seq_4"), raw_data_root))
    with np.load(dataset.DEMO_PATH) as z:
        starts = z["start_frames"]
    for clip, start in zip(joints, starts, strict=True):
        np.testing.assert_allclose(clip, full[start : start + clip.shape[0]], atol=1e-5)


def test_manifest_json_is_valid(prepared_data_root):
    manifest = json.loads((dataset.processed_dir(prepared_data_root) / "manifest.json").read_text())
    assert manifest["version"] == dataset.PROCESSED_VERSION and manifest["fps"] == 30.0
    for e in manifest["sequences"].values():
        assert {"split", "subject", "frames", "seconds", "sha256", "source_file", "source_sha256"} <= set(e)
