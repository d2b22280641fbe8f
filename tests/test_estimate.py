"""Video estimator: BlazePose -> H36M mapping, frame reading, errors, and real pixels end to end.

The real-pixel tests run MediaPipe on a photograph (``tests/data/astronaut.jpg``: NASA,
public domain, as shipped by scikit-image, resized to 256x256) and skip without MediaPipe.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stride_jax import estimator, io, pipeline, skeleton, video

DATA = Path(__file__).parent / "data"
BLANK = (4, 5, 9)  # frames blanked to black: no person there
J = skeleton.JOINT_INDEX
B = {name: i for i, name in enumerate(estimator.BLAZEPOSE_NAMES)}


def _clip(directory: Path, frames: int = 12) -> Path:
    """The photograph shifted by a few pixels per frame, with ``BLANK`` frames black."""
    image = np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"))
    directory.mkdir(parents=True)
    for i in range(frames):
        frame = np.zeros_like(image) if i in BLANK else np.roll(image, (i % 4) * 3, axis=1)
        Image.fromarray(frame).save(directory / f"frame_{i}.png")
    return directory


def _bone(poses: np.ndarray, a: str, b: str) -> np.ndarray:
    return np.linalg.norm(poses[..., J[a], :] - poses[..., J[b], :], axis=-1)


class TestMapping:
    def test_joints_are_the_documented_combinations(self):
        rng = np.random.default_rng(0)
        lm = rng.normal(size=(2, 33, 3))
        vis = rng.uniform(size=(2, 33))
        joints, conf = estimator.blazepose_to_h36m(lm, vis)
        assert joints.shape == (2, 17, 3) and conf.shape == (2, 17)
        mid = lambda a, b: (lm[:, B[a]] + lm[:, B[b]]) / 2  # noqa: E731
        pelvis, thorax = mid("left_hip", "right_hip"), mid("left_shoulder", "right_shoulder")
        ears = mid("left_ear", "right_ear")
        expected = {"pelvis": pelvis, "thorax": thorax, "spine": (pelvis + thorax) / 2,
                    "neck": (lm[:, B["nose"]] + ears) / 2, "head": ears + (ears - thorax) / 2,
                    "r_knee": lm[:, B["right_knee"]], "l_wrist": lm[:, B["left_wrist"]],
                    "r_shoulder": lm[:, B["right_shoulder"]]}
        for name, want in expected.items():
            np.testing.assert_allclose(joints[:, J[name]], want, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(conf[:, J["pelvis"]],
                                   (vis[:, B["left_hip"]] + vis[:, B["right_hip"]]) / 2,
                                   atol=1e-6)
        assert (conf >= 0).all() and (conf <= 1).all()

    def test_affine_so_image_points_map_too(self):
        lm = np.random.default_rng(1).uniform(size=(33, 2))
        shifted, _ = estimator.blazepose_to_h36m(lm + [0.1, -0.2])
        base, _ = estimator.blazepose_to_h36m(lm)
        np.testing.assert_allclose(shifted, base + [0.1, -0.2], atol=1e-6)

    def test_mirror_swaps_left_and_right(self):
        lm = np.random.default_rng(2).normal(size=(33, 3))
        perm = [B[n.replace("left", "@").replace("right", "left").replace("@", "right")]
                for n in estimator.BLAZEPOSE_NAMES]
        flipped = lm[perm] * [-1, 1, 1]
        a, _ = estimator.blazepose_to_h36m(lm)
        b, _ = estimator.blazepose_to_h36m(flipped)
        np.testing.assert_allclose(b, a[skeleton.MIRROR] * [-1, 1, 1], atol=1e-6)

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="33"):
            estimator.blazepose_to_h36m(np.zeros((17, 3)))
        with pytest.raises(ValueError, match="visibility"):
            estimator.blazepose_to_h36m(np.zeros((33, 3)), np.zeros(17))


class TestReader:
    def test_directory_in_natural_order(self, tmp_path):
        for i in (10, 2, 1):
            Image.new("RGB", (8, 6), (i, 0, 0)).save(tmp_path / f"f{i}.png")
        (tmp_path / "notes.txt").write_text("not a frame")
        reader = video.FrameReader(tmp_path, fps=25)
        frames = list(reader)
        assert [f[0, 0, 0] for f in frames] == [1, 2, 10]
        assert frames[0].shape == (6, 8, 3) and frames[0].dtype == np.uint8
        assert (reader.num_frames, reader.fps) == (3, 25.0)

    def test_errors_say_what_is_wrong(self, tmp_path):
        with pytest.raises(video.VideoError, match="no such"):
            video.FrameReader(tmp_path / "missing.mp4")
        (tmp_path / "empty").mkdir()
        with pytest.raises(video.VideoError, match="holds no images"):
            video.FrameReader(tmp_path / "empty")
        Image.new("RGB", (4, 4)).save(tmp_path / "one.png")
        with pytest.raises(video.VideoError, match="single image"):
            video.FrameReader(tmp_path / "one.png")
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "0.jpg").write_bytes(b"not a jpeg")
        with pytest.raises(video.VideoError, match="not a readable image"):
            list(video.FrameReader(tmp_path / "bad"))

    def test_unreadable_video(self, tmp_path):
        pytest.importorskip("cv2", reason="OpenCV not installed (requirements-video.txt)")
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(b"\x00\x01 this is not a video" * 50)
        with pytest.raises(video.VideoError, match="cannot be opened as a video"):
            video.FrameReader(bad)

    def test_missing_mediapipe_names_the_install_command(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "mediapipe", None)  # import raises ImportError
        monkeypatch.setitem(sys.modules, "mediapipe.python", None)
        monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
        with pytest.raises(video.VideoError, match="pip install -r requirements-video.txt"):
            estimator.estimate_video(_clip(tmp_path / "clip", 2), tmp_path / "out.npz")


@pytest.fixture(scope="module")
def estimated(tmp_path_factory):
    """The 12-frame clip through the real estimator (once per module)."""
    pytest.importorskip("mediapipe", reason="MediaPipe not installed: "
                        "pip install -r requirements-video.txt")
    root = tmp_path_factory.mktemp("est")
    clip = _clip(root / "astronaut")
    summary = estimator.estimate_video(clip, root / "astronaut.npz", fps=25)
    return clip, summary


def test_real_photograph_detections(estimated):
    _, summary = estimated
    assert summary.frames == 12 and summary.estimator_fps > 0
    with np.load(summary.output) as d:
        poses, valid, conf = d["poses"], d["valid"], d["confidence"]
        assert float(d["fps"]) == 25.0
    assert not valid[list(BLANK)].any(), "black frames must have no detection"
    assert valid.sum() >= 7 and summary.detected == valid.sum()
    assert np.isnan(poses[~valid]).all() and (conf[~valid] == 0).all()
    p = poses[valid]
    assert np.isfinite(p).all() and (conf[valid] >= 0).all() and (conf[valid] <= 1).all()
    np.testing.assert_allclose(p[:, J["pelvis"]], 0.0, atol=0.02)  # hip-centred
    for a, b in (("l_shoulder", "l_elbow"), ("r_shoulder", "r_elbow")):
        assert ((_bone(p, a, b) > 0.15) & (_bone(p, a, b) < 0.5)).all(), (a, b)
    shoulders = _bone(p, "l_shoulder", "r_shoulder")
    assert ((shoulders > 0.2) & (shoulders < 0.6)).all()
    # Camera axes: y down (head above pelvis), facing the camera (her left is image right,
    # the face is nearer the camera than the thorax: smaller z).
    assert (p[:, J["head"], 1] < p[:, J["thorax"], 1]).all()
    assert (p[:, J["thorax"], 1] < p[:, J["pelvis"], 1]).all()
    assert (p[:, J["l_shoulder"], 0] > p[:, J["r_shoulder"], 0]).all()
    assert (p[:, J["neck"], 2] < p[:, J["thorax"], 2]).all()


def test_output_round_trips_through_io(estimated):
    _, summary = estimated
    (track,) = io.load_pose_file(summary.output)
    with np.load(summary.output) as d:
        np.testing.assert_array_equal(track.valid, d["valid"])
    assert track.poses.shape == (12, 17, 3) and track.units_detected == "m"
    assert track.fps == 25.0 and track.confidence.shape == (12, 17)


def test_align_video_file_end_to_end(estimated, tmp_path):
    import jax

    from configs import cpu
    from stride_jax import checkpoint
    from stride_jax.model import build_model, init_params

    clip, _ = estimated
    config = cpu.get_config("runlocal")
    params = jax.jit(lambda k: init_params(build_model(config.model), k))(jax.random.key(0))
    prior = checkpoint.save_prior(tmp_path / "prior", params, config.model.to_dict())
    code = pipeline.align_video_file(clip, tmp_path / "out", config, prior, fps=25)
    assert code == 0
    with np.load(tmp_path / "out" / "astronaut.npz") as d:
        assert bool(d["ok"]) and d["refined"].shape == (12, 17, 3)
        assert np.isfinite(d["refined"]).all()
        np.testing.assert_array_equal(d["valid"][list(BLANK)], False)
    with Image.open(tmp_path / "out" / "astronaut_side_by_side.gif") as gif:
        assert gif.n_frames == 12 and gif.height == 320 and gif.width == 640


def test_video_file_input_keeps_its_frame_rate(tmp_path):
    pytest.importorskip("mediapipe", reason="MediaPipe not installed: "
                        "pip install -r requirements-video.txt")
    import cv2

    image = np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"))
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 20,
                             image.shape[1::-1])
    for i in range(6):
        writer.write(np.ascontiguousarray(np.roll(image, 2 * i, axis=1)[..., ::-1]))
    writer.release()
    summary = estimator.estimate_video(tmp_path / "clip.mp4", tmp_path / "clip.npz")
    assert (summary.frames, summary.fps) == (6, 20.0) and summary.detected >= 4


def test_render_mp4_without_estimator(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV not installed (requirements-video.txt)")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8) for _ in range(5)]
    refined = rng.normal(scale=0.3, size=(5, 17, 3)).astype(np.float32)
    valid = np.array([True, False, True, True, True])
    out = video.render_side_by_side(
        frames, tmp_path / "r.mp4", joints_2d=rng.uniform(size=(5, 17, 2)),
        confidence_2d=np.ones((5, 17)), refined=refined, valid=valid, fps=10, height=96)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 128 + 96
    cap.release()


class TestSplitTracks:
    @staticmethod
    def _hips(xs: list[float]) -> np.ndarray:
        lm = np.zeros((len(xs), 33, 2))
        lm[:, B["left_hip"], 0] = np.asarray(xs) - 0.01
        lm[:, B["right_hip"], 0] = np.asarray(xs) + 0.01
        lm[:, :, 1] = 0.5
        return lm

    def test_cut_at_a_jump_kept_across_a_gap(self):
        xs = [0.30 + 0.01 * t for t in range(10)] + [0.80] * 8
        valid = np.ones(18, bool)
        valid[3:7] = False  # a gap: the person moved 0.04 meanwhile, same track
        track = estimator.split_tracks(self._hips(xs), valid)
        np.testing.assert_array_equal(track, [0, 0, 0, -1, -1, -1, -1, 0, 0, 0] + [1] * 8)

    def test_distances_are_in_frame_heights(self):
        xs = [0.30] * 6 + [0.38] * 6  # 0.08 widths: 0.08 heights at 1:1, 0.14 at 16:9
        valid = np.ones(12, bool)
        assert estimator.split_tracks(self._hips(xs), valid).max() == 0
        assert estimator.split_tracks(self._hips(xs), valid, aspect=16 / 9).max() == 1

    def test_short_tracks_are_dropped_and_renumbered(self):
        xs = [0.1] * 6 + [0.9] * 2 + [0.5] * 6  # the 2-frame blip is not a track
        track = estimator.split_tracks(self._hips(xs), np.ones(14, bool))
        np.testing.assert_array_equal(track, [0] * 6 + [-1] * 2 + [1] * 6)

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="image_xy must be"):
            estimator.split_tracks(np.zeros((5, 17, 2)), np.ones(5, bool))


def test_identity_switch_gives_two_tracks_end_to_end(tmp_path):
    """The photograph jumps sideways halfway (another person, to the tracker): the file
    holds two tracks, each is aligned on its own, and the rendering stitches them."""
    pytest.importorskip("mediapipe", reason="MediaPipe not installed: "
                        "pip install -r requirements-video.txt")
    import jax

    from configs import cpu
    from stride_jax import checkpoint
    from stride_jax.model import build_model, init_params

    image = np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"))
    clip = tmp_path / "switch"
    clip.mkdir()
    for i in range(16):
        shift = (i % 3) * 2 + (96 if i >= 8 else 0)
        Image.fromarray(np.roll(image, shift, axis=1)).save(clip / f"{i}.png")
    summary = estimator.estimate_video(clip, tmp_path / "switch.npz", fps=25)
    assert summary.tracks == 2
    with np.load(summary.output) as d:
        track = d["frame_track"]
        assert d["poses"].shape == (2, 16, 17, 3) and d["valid"].shape == (2, 16)
        np.testing.assert_array_equal(d["valid"][0], track == 0)
        np.testing.assert_array_equal(d["valid"][1], track == 1)
    assert (track[:8] != 1).all() and (track[8:] != 0).all() and (track >= 0).sum() >= 12
    tracks = io.load_pose_file(summary.output)
    assert [t.track for t in tracks] == ["0", "1"]

    config = cpu.get_config("runlocal")
    params = jax.jit(lambda k: init_params(build_model(config.model), k))(jax.random.key(0))
    prior = checkpoint.save_prior(tmp_path / "prior", params, config.model.to_dict())
    assert pipeline.align_video_file(clip, tmp_path / "out", config, prior, fps=25) == 0
    for k in (0, 1):
        with np.load(tmp_path / "out" / f"switch__{k}.npz") as d:
            assert bool(d["ok"]) and d["refined"].shape == (16, 17, 3)
    with Image.open(tmp_path / "out" / "switch_side_by_side.gif") as gif:
        assert gif.n_frames == 16


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory):
    """90 frames of the fetched Sports2D clip (real motion), 960 px wide, 10 frames black."""
    pytest.importorskip("mediapipe", reason="MediaPipe not installed: "
                        "pip install -r requirements-video.txt")
    from stride_jax.data import fetch

    try:
        source = fetch.demo_video()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    clip = tmp_path_factory.mktemp("real") / "walk"
    clip.mkdir()
    for i, frame in enumerate(video.FrameReader(source)):
        if i == 90:
            break
        small = Image.fromarray(frame).resize((960, 540), Image.Resampling.BILINEAR)
        if 30 <= i < 40:
            small = Image.new("RGB", small.size)
        small.save(clip / f"{i:03d}.jpg", quality=92)
    return clip, estimator.estimate_video(clip, clip.parent / "walk.npz", fps=30)


def test_real_motion_clip(real_clip):
    """Real frames of a person moving: blank frames are undetected, the rest are found,
    and the mapped skeleton's bones have human lengths that stay put over time."""
    _, summary = real_clip
    with np.load(summary.output) as d:
        poses, valid = d["poses"], d["valid"]
    assert summary.tracks == 1 and poses.shape == (90, 17, 3)
    assert not valid[30:40].any() and valid.sum() >= 72
    p = poses[valid]
    for a, b, lo, hi in (("l_hip", "l_knee", 0.3, 0.5), ("r_knee", "r_ankle", 0.3, 0.5),
                         ("l_shoulder", "l_elbow", 0.2, 0.35),
                         ("r_shoulder", "r_elbow", 0.2, 0.35), ("l_hip", "r_hip", 0.15, 0.3)):
        bone = _bone(p, a, b)
        assert lo < np.median(bone) < hi, (a, b, np.median(bone))
        # BlazePose's bone lengths wobble by 2-5 cm (std) over time (measured 0.02-0.048).
        assert bone.std() < 0.06, (a, b, bone.std())


def test_real_motion_clip_refined_by_the_shipped_prior(real_clip, tmp_path):
    """The estimate through the shipped prior and configs/cpu.py (fewer steps): the
    output fills the blank frames and is smoother than the estimator's own output."""
    from configs import cpu
    from stride_jax.pipeline import DEFAULT_PRIOR, align_files

    _, summary = real_clip
    config = cpu.get_config()
    config.ttt.epochs = 10
    assert align_files([str(summary.output)], tmp_path, config,
                       checkpoint_dir=DEFAULT_PRIOR, units="m") == 0
    with np.load(tmp_path / "walk.npz") as d:
        refined, valid = d["refined"], d["valid"]
    with np.load(summary.output) as d:
        raw = d["poses"]
    assert refined.shape == (90, 17, 3) and np.isfinite(refined).all()
    rel = refined - refined[:, :1]
    seg = slice(3, 30)  # a detected stretch
    assert valid[seg].all()
    raw_rel = raw[seg] - raw[seg][:, :1]
    accel = lambda x: np.linalg.norm(np.diff(x, 2, axis=0), axis=-1).mean()  # noqa: E731
    assert accel(rel[seg]) < accel(raw_rel)
    # The refined pose stays on the estimate where it was detected (within a few cm)...
    assert np.linalg.norm(rel[seg] - raw_rel, axis=-1).mean() < 0.06
    # ... and its limb lengths vary less over time (the limb-length-variance loss).
    bones = lambda x: np.stack([_bone(x, a, b) for a, b in  # noqa: E731
                                (("l_hip", "l_knee"), ("r_hip", "r_knee"),
                                 ("l_shoulder", "l_elbow"), ("r_shoulder", "r_elbow"))])
    assert bones(refined[valid]).std(axis=1).mean() < bones(raw[valid]).std(axis=1).mean()
