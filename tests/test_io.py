"""Tests for stride_jax.io: pose-file reading/validation, atomic writes, input listing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stride_jax import files, io

T = 12


def _poses(rng: np.random.Generator, *lead: int, scale: float = 1.0) -> np.ndarray:
    """Human-sized poses ``lead + (17, 3)``: joints ~0.3 m around a moving pelvis."""
    offsets = rng.normal(0.0, 0.3, (17, 3))
    offsets[0] = 0.0
    pelvis = rng.normal(0.0, 1.0, lead + (1, 3))
    return ((pelvis + offsets + rng.normal(0, 0.01, lead + (17, 3))) * scale).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _frames(poses: np.ndarray, missing=()) -> list:
    return [None if t in missing else p.tolist() for t, p in enumerate(poses)]


# ---------------------------------------------------------------- round trips


def test_npz_single_track(tmp_path, rng):
    poses = _poses(rng, T)
    valid = np.ones(T, bool)
    valid[3] = False
    conf = rng.uniform(0.5, 1.0, (T, 17)).astype(np.float32)
    np.savez(tmp_path / "clip.npz", poses=poses, valid=valid, confidence=conf, fps=25)
    (track,) = io.load_pose_file(tmp_path / "clip.npz")
    assert (track.name, track.track, track.fps, track.units_detected) == ("clip", None, 25.0, "m")
    assert track.poses.dtype == np.float32 and track.poses.shape == (T, 17, 3)
    np.testing.assert_array_equal(track.poses, poses)
    np.testing.assert_array_equal(track.valid, valid)
    np.testing.assert_allclose(track.confidence[valid], conf[valid])
    assert np.all(track.confidence[~valid] == 0)
    assert track.source == str(tmp_path / "clip.npz")


@pytest.mark.parametrize("ids, expected", [(np.array(["a", "b", "c"]), ["a", "b", "c"]),
                                           (np.array([7, 3, 5]), ["7", "3", "5"]),
                                           (None, ["0", "1", "2"])])
def test_npz_multi_track(tmp_path, rng, ids, expected):
    poses = _poses(rng, 3, T)
    valid = np.ones((3, T), np.int64)
    valid[1, :4] = 0
    extra = {} if ids is None else {"track_ids": ids}
    np.savez(tmp_path / "multi.npz", poses=poses, valid=valid, **extra)
    tracks = io.load_pose_file(tmp_path / "multi.npz")
    assert [t.track for t in tracks] == expected
    for p, t in enumerate(tracks):
        np.testing.assert_array_equal(t.poses, poses[p])
        np.testing.assert_array_equal(t.valid, valid[p].astype(bool))
        assert t.confidence is None and t.fps is None


def test_npy_nan_frames_are_missing(tmp_path, rng):
    poses = _poses(rng, 2, T)
    poses[0, 2] = np.nan
    poses[1, 5, 4] = np.inf  # one bad joint invalidates the frame; Inf counts as NaN
    np.save(tmp_path / "people.npy", poses)
    a, b = io.load_pose_file(tmp_path / "people.npy")
    assert (a.track, b.track) == ("0", "1")
    assert not a.valid[2] and a.valid.sum() == T - 1
    assert not b.valid[5] and b.valid.sum() == T - 1
    assert np.isnan(b.poses[5, 4]).all() and np.isfinite(b.poses[5, :4]).all()
    np.testing.assert_array_equal(a.poses[a.valid], poses[0][a.valid])


def test_json_single_with_null_frames(tmp_path, rng):
    poses = _poses(rng, T)
    frames = _frames(poses, missing=(0, 7))
    frames[4][9] = None  # a null joint is a missing joint -> the frame is invalid
    conf = [None if f is None else [0.9] * 17 for f in frames]
    _json(tmp_path / "one.json", {"poses": frames, "confidence": conf, "fps": 30})
    (track,) = io.load_pose_file(tmp_path / "one.json")
    assert track.fps == 30.0 and track.track is None and track.name == "one"
    np.testing.assert_array_equal(np.flatnonzero(~track.valid), [0, 4, 7])
    np.testing.assert_allclose(track.poses[track.valid], poses[track.valid], rtol=1e-6)
    assert np.isnan(track.poses[0]).all()


def test_json_tracks(tmp_path, rng):
    poses = _poses(rng, 2, T)
    _json(tmp_path / "two.json", {"fps": 50, "tracks": [
        {"track_id": "alice", "poses": _frames(poses[0]), "valid": [1] * T},
        {"track_id": 4, "poses": _frames(poses[1], missing=(1,)), "fps": 25}]})
    a, b = io.load_pose_file(tmp_path / "two.json")
    assert (a.track, a.fps, b.track, b.fps) == ("alice", 50.0, "4", 25.0)
    assert a.valid.all() and not b.valid[1] and b.valid.sum() == T - 1
    np.testing.assert_allclose(b.poses[2], poses[1, 2], rtol=1e-6)


def test_to_videos(tmp_path, rng):
    np.savez(tmp_path / "v.npz", poses=_poses(rng, 2, T), track_ids=np.array(["x", "y"]))
    videos = io.to_videos(io.load_pose_file(tmp_path / "v.npz"))
    assert [(v.name, v.track, v.poses.shape, v.valid.shape) for v in videos] == [
        ("v", "x", (T, 17, 3), (T,)), ("v", "y", (T, 17, 3), (T,))]


# ---------------------------------------------------------------- units


def test_millimetres_detected_and_converted(tmp_path, rng):
    poses = _poses(rng, T)
    np.savez(tmp_path / "mm.npz", poses=poses * 1000.0)
    (track,) = io.load_pose_file(tmp_path / "mm.npz")
    assert track.units_detected == "mm"
    np.testing.assert_allclose(track.poses, poses, rtol=1e-5, atol=1e-6)
    (explicit,) = io.load_pose_file(tmp_path / "mm.npz", units="mm")
    np.testing.assert_allclose(explicit.poses, poses, rtol=1e-5, atol=1e-6)
    (as_m,) = io.load_pose_file(tmp_path / "mm.npz", units="m")
    np.testing.assert_allclose(as_m.poses, poses * 1000.0, rtol=1e-5)


@pytest.mark.parametrize("scale, words", [(40000.0, "pixels"), (1e-3, "unknown units")])
def test_bad_scale_rejected(tmp_path, rng, scale, words):
    np.savez(tmp_path / "px.npz", poses=_poses(rng, T) * scale)
    with pytest.raises(io.InputError, match=words) as err:
        io.load_pose_file(tmp_path / "px.npz")
    assert "px.npz" in str(err.value) and "--units" in str(err.value)


def test_min_confidence_invalidates_frames(tmp_path, rng):
    conf = np.full((T, 17), 0.9, np.float32)
    conf[[2, 3]] = 0.2
    np.savez(tmp_path / "c.npz", poses=_poses(rng, T), confidence=conf)
    (track,) = io.load_pose_file(tmp_path / "c.npz", min_confidence=0.5)
    np.testing.assert_array_equal(np.flatnonzero(~track.valid), [2, 3])
    (track,) = io.load_pose_file(tmp_path / "c.npz")
    assert track.valid.all()


# ---------------------------------------------------------------- bad inputs


def _npz(**arrays):
    def write(path: Path) -> Path:
        path = path.with_suffix(".npz")
        np.savez(path, **arrays)
        return path
    return write


def _truncated(path: Path) -> Path:
    np.savez(path.with_suffix(".src.npz"), poses=np.zeros((T, 17, 3)))
    data = path.with_suffix(".src.npz").read_bytes()
    out = path.with_suffix(".npz")
    out.write_bytes(data[: len(data) // 2])
    return out


def _raw(suffix: str, data: bytes):
    def write(path: Path) -> Path:
        path = path.with_suffix(suffix)
        path.write_bytes(data)
        return path
    return write


def _json_obj(obj):
    return lambda path: _json(path.with_suffix(".json"), obj)


_G = np.random.default_rng(1)
_OK = _poses(_G, T)
_NAN = np.full((T, 17, 3), np.nan)
BAD = {
    "missing key": (_npz(joints=_OK, fps=30), ["no `poses`", "joints", "fps"]),
    "truncated": (_truncated, ["truncated or not a valid .npz"]),
    "garbage npz": (_raw(".npz", b"not a zip at all"), ["not a valid .npz"]),
    "garbage npy": (_raw(".npy", b"\x93NUMPY garbage"), ["not a valid .npy"]),
    "empty file": (_raw(".npz", b""), ["empty (0 bytes)"]),
    "bad json": (_raw(".json", b'{"poses": [[['), ["not a valid .json"]),
    "wrong extension": (_raw(".csv", b"1,2,3"), ["unsupported file type '.csv'", ".npz"]),
    "2D keypoints": (_npz(poses=_OK[..., :2]), ["2D keypoints (COCO-17?)", "lift"]),
    "blazepose": (_npz(poses=np.zeros((T, 33, 3))), ["33 joints", "BlazePose", "Human3.6M-17"]),
    "smpl": (_npz(poses=np.zeros((T, 24, 3))), ["SMPL-24", "Human3.6M-17"]),
    "openpose": (_npz(poses=np.zeros((T, 25, 3))), ["OpenPose BODY_25"]),
    "generic joints": (_npz(poses=np.zeros((T, 19, 3))), ["19 joints", "Human3.6M-17"]),
    "rank": (_npz(poses=np.zeros((T, 17))), ["shape (12, 17)", "(T,17,3)"]),
    "flattened": (_npz(poses=np.zeros((T, 51))), ["reshape to (T,17,3)"]),
    "xyzc": (_npz(poses=np.zeros((T, 17, 4))), ["(x,y,z,score)", "confidence"]),
    "swapped": (_npz(poses=np.zeros((T, 3, 17))), ["swapped"]),
    "empty video": (_npz(poses=np.zeros((0, 17, 3))), ["0 frames"]),
    "one frame": (_npz(poses=_OK[:1]), ["single frame", "at least 2 frames"]),
    "strings": (_npz(poses=np.array(["a", "b"])), ["dtype <U1", "expected numbers"]),
    "all nan": (_npz(poses=_NAN), ["no valid frame", "12 have NaN"]),
    "all invalid": (_npz(poses=_OK, valid=np.zeros(T, bool)), ["no valid frame",
                                                               "12 are marked invalid"]),
    "valid length": (_npz(poses=_OK, valid=np.ones(T - 2, bool)),
                     ["`valid` has shape (10,)", "(12, 17, 3)"]),
    "valid values": (_npz(poses=_OK, valid=np.full(T, 0.5)), ["boolean-like", "0.5"]),
    "valid strings": (_npz(poses=_OK, valid=np.array(["yes"] * T)), ["boolean-like"]),
    "conf length": (_npz(poses=_OK, confidence=np.ones((T, 16))),
                    ["`confidence` has shape (12, 16)", "(12, 17, 3)"]),
    "conf range": (_npz(poses=_OK, confidence=np.full((T, 17), 80.0)), ["[0, 1]", "80"]),
    "conf nan": (_npz(poses=_OK, confidence=np.full((T, 17), np.nan)), ["`confidence`",
                                                                          "NaN/Inf"]),
    "dup ids": (_npz(poses=np.stack([_OK, _OK]), track_ids=np.array(["a", "a"])),
                ["duplicate track ids ['a']"]),
    "ids length": (_npz(poses=np.stack([_OK, _OK]), track_ids=np.array([1, 2, 3])),
                   ["`track_ids` has shape (3,)"]),
    "id with slash": (_npz(poses=np.stack([_OK, _OK]), track_ids=np.array(["a/b", "c"])),
                      ["path separator"]),
    "bad fps": (_npz(poses=_OK, fps=-3.0), ["`fps` must be a positive number"]),
    "object array": (_npz(poses=np.array([_OK, None], dtype=object)), ["object arrays"]),
    "json no poses": (_json_obj({"pose": []}), ["no `poses`", "pose"]),
    "json top list of str": (_json_obj("hello"), ["top level is str"]),
    "json ragged": (_json_obj({"poses": [_OK[0].tolist(), _OK[0, :5].tolist()]}),
                    ["`poses[1]` has shape (5, 3)"]),
    "json 2d": (_json_obj({"poses": _OK[..., :2].tolist()}), ["2D keypoints"]),
    "json all null": (_json_obj({"poses": [None] * T}), ["no valid frame"]),
    "json dup ids": (_json_obj({"tracks": [{"track_id": 1, "poses": _OK.tolist()},
                                           {"track_id": "1", "poses": _OK.tolist()}]}),
                     ["duplicate track ids"]),
    "json track not dict": (_json_obj({"tracks": [3]}), ["`tracks[0]` is int"]),
    "json valid values": (_json_obj({"poses": _OK.tolist(), "valid": [2] * T}),
                          ["`valid` must be boolean-like"]),
    "json track valid": (_json_obj({"tracks": [{"poses": _OK.tolist(), "valid": [1] * 3}]}),
                         ["`tracks[0].valid` has shape (3,)"]),
    "json bad frame": (_json_obj({"poses": [{"x": 1}] * T}), ["`poses[0]` is not a list"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_messages(tmp_path, case):
    write, words = BAD[case]
    path = write(tmp_path / "input")
    with pytest.raises(io.InputError) as err:
        io.load_pose_file(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(io.InputError, match="no such file"):
        io.load_pose_file(tmp_path / "nope.npz")
    with pytest.raises(io.InputError, match="units must be one of"):
        io.load_pose_file(tmp_path / "nope.npz", units="cm")
    with pytest.raises(io.InputError, match="min_confidence"):
        io.load_pose_file(tmp_path / "nope.npz", min_confidence=2.0)


def test_renamed_npy_loads_as_npz(tmp_path, rng):
    poses = _poses(rng, T)
    np.save(tmp_path / "x.npy", poses)
    (tmp_path / "x.npy").rename(tmp_path / "x.npz")
    (track,) = io.load_pose_file(tmp_path / "x.npz")
    np.testing.assert_array_equal(track.poses, poses)


# ---------------------------------------------------------------- listing and writing


def test_list_inputs(tmp_path, rng):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("b.npz", "a.json", "c.NPY", "notes.txt", ".hidden.npz"):
        (d / name).write_bytes(b"x")
    single = tmp_path / "single.npz"
    single.write_bytes(b"x")
    got = io.list_inputs([str(d), str(single), str(d / "a.json")])
    assert got == [d / "a.json", d / "b.npz", d / "c.NPY", single]
    with pytest.raises(io.InputError, match="missing.npz: no such file or directory"):
        io.list_inputs([str(tmp_path / "missing.npz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.InputError, match="empty: directory holds no pose files"):
        io.list_inputs([str(tmp_path / "empty")])
    with pytest.raises(io.InputError, match="no inputs"):
        io.list_inputs([])


def test_save_npz_atomic_roundtrip(tmp_path):
    target = tmp_path / "deep" / "er" / "out.npz"
    files.save_npz_atomic(target, refined=np.arange(3.0), ok=np.bool_(True))
    with np.load(target) as z:
        np.testing.assert_array_equal(z["refined"], np.arange(3.0))
        assert bool(z["ok"])
    assert [p.name for p in target.parent.iterdir()] == ["out.npz"]


def test_sha256_file_known_digest(tmp_path):
    path = files.write_text_atomic(tmp_path / "abc.txt", "abc")
    # FIPS 180-2 test vector for "abc"
    want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert files.sha256_file(path) == want == files.sha256_bytes(b"abc")


def test_save_npz_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.npz"
    files.save_npz_atomic(target, refined=np.zeros(4))
    before = target.read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        files.save_npz_atomic(target, refined=np.ones(4))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


# ---------------------------------------------------------------- fuzz


def _random_input(rng: np.random.Generator, tmp_path: Path, i: int) -> Path:
    kind = rng.integers(5)
    if kind == 0:  # random shapes and dtypes in an npz
        shape = tuple(int(s) for s in rng.choice([0, 1, 2, 3, 5, 16, 17, 33], rng.integers(0, 5)))
        dtype = rng.choice(["f4", "f8", "i4", "u1", "bool", "U2", "c8"])
        arr = (rng.normal(0, 10.0 ** rng.integers(-3, 5), shape)).astype(dtype)
        if arr.dtype.kind == "f" and arr.size:
            arr.ravel()[rng.random(arr.size) < rng.random()] = rng.choice([np.nan, np.inf])
        extra = {}
        lead = shape[:-2] if len(shape) >= 2 else (3,)
        if rng.random() < 0.5:
            extra["valid"] = rng.integers(0, 3 if rng.random() < 0.3 else 2, lead)
        if rng.random() < 0.3:
            extra["confidence"] = rng.uniform(-0.2, 1.2, lead + (17,))
        if rng.random() < 0.3:
            extra["track_ids"] = rng.integers(0, 2, shape[:1] or (1,))
        if rng.random() < 0.2:
            extra["fps"] = rng.choice([30.0, -1.0, np.nan, 0.0])
        path = tmp_path / f"{i}.npz"
        np.savez(path, poses=arr, **extra)
    elif kind == 1:  # truncated or bit-flipped bytes of a valid npz
        path = tmp_path / f"{i}.npz"
        np.savez_compressed(path, poses=_poses(rng, T), valid=np.ones(T, bool))
        data = bytearray(path.read_bytes())
        if rng.random() < 0.5:
            data = data[: rng.integers(len(data))]
        else:
            for j in rng.integers(0, len(data), 4):
                data[j] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == 2:  # random npy
        path = tmp_path / f"{i}.npy"
        arr = _poses(rng, *([2] * rng.integers(0, 3)), T) * 10.0 ** rng.integers(-3, 5)
        arr[rng.random(arr.shape) < rng.random() * 0.2] = np.nan
        np.save(path, arr)
        if rng.random() < 0.3:
            path.write_bytes(path.read_bytes()[: rng.integers(200)])
    elif kind == 3:  # random JSON values
        atoms = [None, True, 0, 1.5, -2, "x", float("nan"), [], {}]

        def value(depth: int):
            r = rng.random()
            if depth > 4 or r < 0.3:
                return atoms[rng.integers(len(atoms))]
            if r < 0.7:
                return [value(depth + 1) for _ in range(rng.integers(0, 20))]
            keys = ["poses", "valid", "confidence", "fps", "tracks", "track_id", "z"]
            return {str(rng.choice(keys)): value(depth + 1) for _ in range(rng.integers(0, 4))}

        path = _json(tmp_path / f"{i}.json", value(0))
    else:  # structured JSON with corrupted fields
        poses = _poses(rng, T).tolist()
        obj = {"poses": [None if rng.random() < 0.3 else p for p in poses]}
        if rng.random() < 0.5:
            obj["valid"] = [int(v) for v in rng.integers(0, 2, T + rng.integers(-1, 2))]
        if rng.random() < 0.5:
            obj["confidence"] = rng.uniform(0, 1, (T, 17)).tolist()
        if rng.random() < 0.5:
            obj = {"tracks": [obj, dict(obj, track_id=int(rng.integers(2)))]}
        text = json.dumps(obj)
        path = tmp_path / f"{i}.json"
        path.write_text(text[: rng.integers(len(text))] if rng.random() < 0.3 else text)
    return path


def test_fuzz_only_input_errors(tmp_path):
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "error": 0}
    for i in range(200):
        path = _random_input(rng, tmp_path, i)
        units = str(rng.choice(io.UNITS))
        try:
            tracks = io.load_pose_file(path, units=units, min_confidence=float(rng.random() / 2))
        except io.InputError as err:
            assert path.name in str(err)
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        for t in tracks:
            assert t.poses.dtype == np.float32 and t.poses.shape[1:] == (17, 3)
            assert t.valid.dtype == bool and t.valid.any()
            assert np.isfinite(t.poses[t.valid]).all()
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes


def test_zip_without_npy_members(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("poses.npy", b"definitely not npy")
    with pytest.raises(io.InputError, match="z.npz: is truncated or not a valid .npz"):
        io.load_pose_file(path)
