"""Input frame rates are honoured: a 25 or 60 fps track is aligned at the prior's 30 fps
and returned at its own frame times, matching the 30 fps result of the same motion."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from configs import cpu
from stride_jax import DEFAULT_PRIOR, Video, align_videos, checkpoint, load_prior, pipeline
from stride_jax.data import augment, resample
from stride_jax.data.dataset import load_demo
from stride_jax.interpolate import fill_missing
from stride_jax.model import build_model, init_params

SECONDS = 2.6  # 30 fps: 79 frames, one 81-frame window; as 30 fps, the 60 fps track fits 162
GAP = (1.0, 2.0)  # seconds without a detection


def _motion(fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The first SECONDS of a real climbing clip (camera view) at ``fps``, undetected in GAP."""
    world, demo_fps = load_demo()
    cam = np.asarray(augment.world_to_camera(world))[0][: int(SECONDS * demo_fps) + 1]
    poses = resample.resample(cam, demo_fps, fps).astype(np.float32)
    t = np.arange(poses.shape[0]) / fps
    return poses, ~((t >= GAP[0]) & (t < GAP[1]))


def _mm(a: np.ndarray, b: np.ndarray) -> float:
    return 1000.0 * float(np.linalg.norm(a - b, axis=-1).mean())


def _by_hand_at_30(poses: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 60 fps track brought to 30 fps outside the aligner: in-filled, then resampled."""
    filled = np.asarray(fill_missing(poses, valid))
    return resample.resample_track(filled, valid, 60.0, 30.0)


def _align(videos: list[Video], epochs: int):
    config = cpu.get_config()
    config.ttt.epochs = epochs
    config.ttt.lr = 1e-4  # pinned: visible fine-tuning in three steps, whatever the default
    return align_videos(videos, load_prior(DEFAULT_PRIOR), config.ttt)[0]


@pytest.fixture(scope="module")
def aligned():
    """Three epochs of test-time training (visible fine-tuning) of the 60 fps track."""
    poses60, valid60 = _motion(60.0)
    videos = [Video(poses60, valid60, "v60", fps=60.0),
              Video(poses60, valid60, "v60_as_30"),  # fps unknown: taken to be 30
              Video(*_by_hand_at_30(poses60, valid60), "v60_resampled_by_hand")]
    return videos, _align(videos, epochs=3)


@pytest.fixture(scope="module")
def prior_alone():
    """The same motion at 30, 25 and 60 fps through the prior alone (``epochs`` 0).

    The rate handling (resample in, resample out) is the same with or without TTT, but
    TTT's first Adam steps move every parameter by about the learning rate whatever the
    size of its gradient, so three of them turn float-rounding differences between a
    resampled track and the original into millimetres (60 fps brought to 30 vs the 30 fps
    track, 10,000-step prior: 5.8 mm after 3 epochs, 0.2 mm for the prior alone).  The
    accuracy check runs here; ``aligned`` checks the TTT path exactly, against the same
    steps done by hand."""
    videos = [Video(*_motion(30.0), "v30", fps=30.0), Video(*_motion(25.0), "v25", fps=25.0),
              Video(*_motion(60.0), "v60", fps=60.0)]
    return videos, _align(videos, epochs=0)


@pytest.mark.parametrize("index,fps", [(1, 25.0), (2, 60.0)])
def test_other_rates_match_the_30fps_result(prior_alone, index, fps):
    """Within a quarter of what the prior moved the 30 fps track; output one input frame
    late would be 12.7 mm (25 fps) and 5.3 mm (60 fps) off, above that bound (4.7 mm)."""
    videos, results = prior_alone
    ref, res, video = results[0], results[index], videos[index]
    assert res.ok and res.fps == fps
    assert res.refined.shape == video.poses.shape  # at the input's frame times
    np.testing.assert_array_equal(res.valid, video.valid)
    np.testing.assert_allclose(res.pseudo[video.valid], video.poses[video.valid], atol=1e-6)
    times = np.arange(video.poses.shape[0]) / fps
    inside = times <= (ref.refined.shape[0] - 1) / 30.0
    expected = resample.sample_at(ref.refined, 30.0, times[inside])
    moved = _mm(ref.refined, ref.pseudo)  # how far the prior moved the 30 fps output
    err = _mm(res.refined[inside], expected)
    assert moved > 5.0, moved  # the comparison is not of two unchanged inputs
    assert err < 0.25 * moved, (err, moved)


def test_a_60fps_track_is_aligned_at_30fps(aligned):
    """Honouring the rate means: the track resampled to 30 fps is what the prior aligns,
    and its output is sampled back at the 60 fps frame times.  The same steps done by hand
    give the same numbers, while the track aligned as if it were 30 fps does not.  (With
    the 4,500-step prior, half-speed playback of this clip changes the output by only
    ~2 mm, so the accuracy check above cannot tell the two apart on its own.)"""
    videos, results = aligned
    honoured, ignored, by_hand = results
    assert by_hand.fps is None and ignored.fps is None and honoured.fps == 60.0
    times = np.arange(videos[0].poses.shape[0]) / 60.0
    expected = resample.sample_at(by_hand.refined, 30.0, times)
    np.testing.assert_allclose(honoured.refined, expected, atol=1e-6)
    assert _mm(ignored.refined, expected) > 0.5, _mm(ignored.refined, expected)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    config = cpu.get_config("runlocal")
    params = init_params(build_model(config.model), jax.random.key(0))
    path = checkpoint.save_prior(tmp_path_factory.mktemp("prior") / "prior", params,
                                 config.model.to_dict())
    return config, path


def test_align_files_records_the_input_fps(tiny_prior, tmp_path):
    config, prior = tiny_prior
    poses60, valid60 = _motion(60.0)
    poses25, valid25 = _motion(25.0)
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "a60.npz", poses=poses60, valid=valid60, fps=60)
    (tmp_path / "in" / "b25.json").write_text(json.dumps(
        {"fps": 25, "poses": [p.tolist() if v else None for p, v in zip(poses25, valid25)]}))
    np.savez(tmp_path / "in" / "c.npz", poses=poses60[:50])  # no fps: the prior's rate
    assert pipeline.align_files([str(tmp_path / "in")], tmp_path / "out", config,
                                checkpoint_dir=prior) == 0
    for name, poses, fps in (("a60", poses60, 60.0), ("b25", poses25, 25.0),
                             ("c", poses60[:50], 30.0)):
        with np.load(tmp_path / "out" / f"{name}.npz") as out:
            assert float(out["fps"]) == fps, name
            assert out["refined"].shape == poses.shape, name
            assert bool(out["ok"]) and np.isfinite(out["refined"]).all(), name


def test_resample_track_marks_frames_between_detections():
    poses = np.zeros((7, 17, 3), np.float32)
    valid = np.array([1, 1, 0, 1, 1, 1, 1], bool)  # frame 2 (t = 2/60 s) undetected
    out, out_valid = resample.resample_track(poses, valid, 60.0, 30.0)
    assert out.shape == (4, 17, 3)  # t = 0, 1/30, 2/30, 3/30
    np.testing.assert_array_equal(out_valid, [True, False, True, True])
    _, up = resample.resample_track(poses[:3], valid[:3], 30.0, 60.0)  # t = 0..2/30
    np.testing.assert_array_equal(up, [True, True, True, False, False])
    with pytest.raises(ValueError, match="in-fill"):
        resample.resample_track(np.full((4, 17, 3), np.nan), np.ones(4, bool), 60.0, 30.0)
