"""Rotation-aware in-fill: a body turning through a gap keeps turning."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stride_jax import skeleton
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.interpolate import fill_missing
from stride_jax.rotation_infill import fill_rotating, gap_turn, pseudo_labels

T, GAP = 150, slice(50, 98)  # a 48-frame (1.6 s) gap


def _posture() -> np.ndarray:
    world, _ = load_demo()
    clean = np.asarray(augment.world_to_camera(world))[0, 0]
    return clean - clean[:1]  # root-relative, metres


def _spinning(rate: float, axis=(0.0, 1.0, 0.0), posture=None) -> np.ndarray:
    """``[T,17,3]``: one posture turning about ``axis`` through the pelvis at ``rate``
    radians per frame, the pelvis walking along x."""
    posture = _posture() if posture is None else posture
    axis = np.asarray(axis) / np.linalg.norm(axis)
    turns = Rotation.from_rotvec(np.arange(T)[:, None] * rate * axis).as_matrix()
    pelvis = np.stack([np.linspace(0, 1, T), np.zeros(T), np.full(T, 4.0)], 1)
    return (np.einsum("tij,kj->tki", turns, posture) + pelvis[:, None]).astype(np.float32)


def _valid() -> np.ndarray:
    valid = np.ones(T, bool)
    valid[GAP] = False
    return valid


def _gap_error(filled: np.ndarray, truth: np.ndarray, gap: slice = GAP) -> float:
    rr = lambda x: x - x[:, :1]  # noqa: E731
    return float(np.linalg.norm(rr(filled)[gap] - rr(truth)[gap], axis=-1).mean())


@pytest.mark.parametrize("rate,axis", [(0.17, (0, 1, 0)),     # 0.8 turn/s: a spin
                                       (-0.12, (1, 0, 0)),    # a flip, 1.3 turns in the gap
                                       (0.09, (0.2, 0.3, 1))])  # a cartwheel, tilted axis
def test_a_steady_turn_through_a_long_gap_is_recovered(rate, axis):
    truth = _spinning(rate, axis)
    valid = _valid()
    filled = fill_rotating(truth, valid)
    linear = np.asarray(fill_missing(truth, valid))
    assert _gap_error(filled, truth) < 1e-4  # metres: exact up to float32
    assert _gap_error(linear, truth) > 0.1   # the straight line collapses the body
    np.testing.assert_array_equal(filled[valid], truth[valid])


def test_slow_motion_keeps_linear_interpolation():
    rng = np.random.default_rng(0)
    truth = _spinning(0.01) + rng.normal(0, 0.01, (T, 17, 3)).astype(np.float32)
    valid = _valid()
    np.testing.assert_allclose(fill_rotating(truth, valid),
                               np.asarray(fill_missing(truth, valid)), atol=1e-6)


def test_noisy_detections_and_a_left_right_swap_next_to_the_gap():
    truth = _spinning(0.15)
    valid = _valid()
    errors = {"rotation": [], "swapped": [], "linear": []}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        noisy = truth + rng.normal(0, 0.02, truth.shape).astype(np.float32)  # 2 cm jitter
        errors["rotation"].append(_gap_error(fill_rotating(noisy, valid), truth))
        errors["linear"].append(_gap_error(np.asarray(fill_missing(noisy, valid)), truth))
        noisy[GAP.start - 3] = noisy[GAP.start - 3][skeleton.MIRROR]  # a swapped detection
        errors["swapped"].append(_gap_error(fill_rotating(noisy, valid), truth))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean["rotation"] < 0.45 * mean["linear"], mean  # about 6 cm against 16
    assert abs(mean["swapped"] - mean["rotation"]) < 0.005, mean  # the fit drops the swap


def test_edges_and_degenerate_tracks_match_linear_interpolation():
    truth = _spinning(0.17)
    valid = np.zeros(T, bool)
    valid[40:60] = True  # leading and trailing gaps only: copies, as linear
    np.testing.assert_allclose(fill_rotating(truth, valid),
                               np.asarray(fill_missing(truth, valid)), atol=1e-6)
    one = np.zeros(T, bool)
    one[5] = True
    np.testing.assert_allclose(fill_rotating(truth, one), np.repeat(truth[5:6], T, 0))
    flat = truth.copy()
    flat[:, :] = flat[:, :1]  # every joint on the pelvis: no body axes, linear in-fill
    np.testing.assert_allclose(fill_rotating(flat, _valid()),
                               np.asarray(fill_missing(flat, _valid())), atol=1e-6)


def test_gap_turn_adds_whole_turns_only_on_evidence():
    start = np.eye(3)
    end = Rotation.from_rotvec([0, 0.5, 0]).as_matrix()
    still = np.zeros(3)
    axis, angle = gap_turn(start, end, still, still, 48)
    np.testing.assert_allclose(axis, [0, 1, 0], atol=1e-9)
    assert angle == pytest.approx(0.5)
    # 0.14 rad/frame over 48 frames = 6.7 rad: one more whole turn than the shortest way
    spin = np.array([0, 0.14, 0])
    _, angle = gap_turn(start, end, spin, spin, 48)
    assert angle == pytest.approx(0.5 + 2 * np.pi)
    _, angle = gap_turn(start, end, 0.8 * spin, 1.2 * spin, 48)  # edges close enough
    assert angle == pytest.approx(0.5 + 2 * np.pi)
    # under half a turn predicted: the shortest way, even against the edge velocity
    back = np.array([0, -0.05, 0])
    _, angle = gap_turn(start, end, back, back, 48)
    assert angle == pytest.approx(0.5)
    # edges that disagree (one side barely turning, or turning the other way): no guess
    for other in (0.3 * spin, -spin, still):
        _, angle = gap_turn(start, end, 2 * spin, other, 48)
        assert angle == pytest.approx(0.5), other


def test_a_short_noisy_edge_does_not_invent_turns():
    """Four detected frames before a gap give a noisy velocity; without the other edge's
    agreement it must not add whole turns to slow motion."""
    truth = _spinning(0.005)
    rng = np.random.default_rng(3)
    valid = np.ones(T, bool)
    valid[4:52] = False
    worst = 0.0
    for _ in range(20):
        noisy = truth + rng.normal(0, 0.03, truth.shape).astype(np.float32)
        rot = _gap_error(fill_rotating(noisy, valid), truth, slice(4, 52))
        lin = _gap_error(np.asarray(fill_missing(noisy, valid)), truth, slice(4, 52))
        worst = max(worst, rot - lin)
    assert worst < 0.01, worst


def test_bad_input_is_named():
    truth = _spinning(0.1)
    with pytest.raises(ValueError, match="one track"):
        fill_rotating(truth, np.ones((T, 17), bool))
    with pytest.raises(ValueError, match="fit_frames"):
        fill_rotating(truth, _valid(), linear_below=3.0, rotation_above=2.0)
    with pytest.raises(ValueError, match="ttt.infill='cubic': choose one of"):
        pseudo_labels(truth, _valid(), "cubic")
    np.testing.assert_array_equal(pseudo_labels(truth, _valid(), "linear"),
                                  np.asarray(fill_missing(truth, _valid())))


@pytest.mark.parametrize("infill", ["linear", "rotation"])
def test_the_aligner_trains_on_the_chosen_in_fill(infill):
    import jax

    from configs import cpu
    from stride_jax.aligner import Video, align_videos
    from stride_jax.checkpoint import Prior
    from stride_jax.config_util import with_overrides
    from stride_jax.model import build_model, init_params

    config = cpu.get_config("runlocal")
    model = build_model(config.model)
    prior = Prior(init_params(model, jax.random.key(0)), config.model.to_dict())
    truth = _spinning(0.17)[:81]
    valid = np.ones(81, bool)
    valid[20:60] = False
    ttt_cfg = with_overrides(config.ttt, dict(infill=infill, epochs=0, output_blend=0.0))
    (result,), _ = align_videos([Video(truth, valid, "spin")], prior, ttt_cfg)
    expected = pseudo_labels(truth, valid, infill)
    np.testing.assert_allclose(result.pseudo, expected, atol=1e-6)
    assert (_gap_error(result.pseudo, truth, slice(20, 60)) < 1e-3) == (infill == "rotation")


@pytest.mark.parametrize("swapped", [10, 0, 19])
def test_edge_fit_ignores_a_swapped_frame_anywhere_in_its_window(swapped):
    from stride_jax.rotation_infill import body_axes, fit_edge

    truth = _spinning(0.1)
    frames = np.arange(30, 50)
    poses = truth.copy()
    poses[frames[swapped]] = poses[frames[swapped]][skeleton.MIRROR]
    axes, _ = body_axes((poses - poses[:, :1]).astype(np.float64))
    true_axes, _ = body_axes((truth - truth[:, :1]).astype(np.float64))
    orientation, omega = fit_edge(axes, frames, 49)
    angle = Rotation.from_matrix(orientation @ true_axes[49].T).magnitude()
    assert angle < 1e-3
    np.testing.assert_allclose(omega, [0, 0.1, 0], atol=1e-3)


def test_infill_gaps_script_scores_each_gap():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "infill_gaps.py"
    spec = importlib.util.spec_from_file_location("infill_gaps", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    truth = _spinning(0.17)
    ((first, last, linear, rotation),) = script.gap_errors(truth, _valid(), truth)
    assert (first, last) == (GAP.start, GAP.stop - 1)
    assert rotation < 0.1 and linear > 100.0  # mm
