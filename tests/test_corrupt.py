"""Tests for stride_jax.corrupt: statistics, structure and determinism."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import corrupt, skeleton
from stride_jax.corrupt import (
    corrupt_for_pretraining,
    occlusion_mask,
    simulate_estimator,
    swap_left_right,
)
from stride_jax.interpolate import fill_missing

_QUIET = dict(joint_mask_ratio=0.0, frame_mask_ratio=0.0, noise_std=0.0, scale_std=0.0,
              outlier_prob=0.0, outlier_std=0.0)
_CLEAN_EST = dict(jitter_std=0.0, depth_std=0.0, scale_std=0.0, swap_prob=0.0,
                  outlier_prob=0.0)


@functools.cache
def _jitted(fn, **cfg):
    """One compiled function per (function, hyperparameters)."""
    return jax.jit(functools.partial(fn, **cfg))


def _corrupt(key, clean, **cfg):
    return _jitted(corrupt_for_pretraining, **cfg)(key, clean)


def _simulate(key, clean, **cfg):
    return _jitted(simulate_estimator, **cfg)(key, clean)


def _clean(seed: int, *shape: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(0.01 * rng.normal(size=shape + (17, 3)), axis=-3)
    return (walk + rng.normal(size=(17, 3))).astype(np.float32)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of the True runs of a 1-D bool array."""
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return [(s, e - s) for s, e in zip(edges[::2], edges[1::2])]


class TestCorruptForPretraining:
    def test_quiet_is_identity(self):
        clean = _clean(0, 2, 20)
        noisy, valid = _corrupt(jax.random.key(0), clean, **_QUIET)
        np.testing.assert_allclose(noisy, clean, atol=1e-6)
        assert valid.shape == (2, 20) and bool(valid.all())

    def test_frame_mask_fraction_and_spans(self):
        cfg = dict(_QUIET, frame_mask_ratio=0.3, span_min=5, span_max=20)
        _, valid = _corrupt(jax.random.key(1), _clean(1, 64, 100), **cfg)
        valid = np.asarray(valid)
        np.testing.assert_allclose((~valid).mean(axis=-1), 0.3)  # exact per sequence
        lengths = [n for row in ~valid for _, n in _runs(row)]
        assert max(lengths) <= 2 * 20  # touching spans may merge
        assert np.mean(lengths) > 5
        # Spans are spread over the whole clip.
        assert (~valid[:, :10]).any() and (~valid[:, -10:]).any()

    def test_masked_frames_are_interpolated(self):
        clean = _clean(2, 3, 60)
        cfg = dict(_QUIET, frame_mask_ratio=0.4, span_min=3, span_max=10)
        noisy, valid = _corrupt(jax.random.key(2), clean, **cfg)
        np.testing.assert_allclose(noisy, fill_missing(clean, valid), atol=1e-6)

    def test_noise_std(self):
        clean = _clean(3, 8, 50)
        cfg = dict(_QUIET, noise_std=0.02)
        noisy, _ = _corrupt(jax.random.key(3), clean, **cfg)
        assert np.std(np.asarray(noisy) - clean) == pytest.approx(0.02, rel=0.05)

    def test_noise_level_scales_each_sequence(self):
        clean = _clean(3, 64, 50)
        noisy_cfg = dict(_QUIET, noise_std=0.02, scale_std=0.05, depth_std=0.03)
        # (0, 0): no noise, scale or depth error at all; the default (1, 1) draws as before.
        quiet, _ = _corrupt(jax.random.key(3), clean, noise_level=(0.0, 0.0), **noisy_cfg)
        np.testing.assert_allclose(quiet, clean, atol=1e-6)
        full, _ = _corrupt(jax.random.key(3), clean, **noisy_cfg)
        explicit, _ = _corrupt(jax.random.key(3), clean, noise_level=(1.0, 1.0), **noisy_cfg)
        np.testing.assert_array_equal(full, explicit)
        # (0, 1): per-sequence noise std uniform in [0, 0.02]: spread over sequences,
        # every joint of a sequence at one level.
        cfg = dict(_QUIET, noise_std=0.02)
        noisy, _ = _corrupt(jax.random.key(4), clean, noise_level=(0.0, 1.0), **cfg)
        per_seq = np.std(np.asarray(noisy) - clean, axis=(1, 2, 3))
        assert per_seq.min() < 0.004 and per_seq.max() > 0.016
        assert per_seq.mean() == pytest.approx(0.01, abs=0.002)
        with pytest.raises(ValueError, match="noise_level"):
            corrupt_for_pretraining(jax.random.key(0), clean, noise_level=(0.5, 0.2))

    def test_scale_error_and_joint_masks(self):
        clean = _clean(4, 16, 50)
        cfg = dict(_QUIET, scale_std=0.05)
        noisy, _ = _corrupt(jax.random.key(4), clean, **cfg)
        rel_clean = clean - clean[..., :1, :]
        rel_noisy = np.asarray(noisy - noisy[..., :1, :])
        ratio = np.linalg.norm(rel_noisy, axis=(-1, -2)) / np.linalg.norm(rel_clean, axis=(-1, -2))
        assert np.std(ratio) == pytest.approx(0.05, rel=0.1)
        np.testing.assert_allclose(noisy[..., 0, :], clean[..., 0, :], atol=1e-6)
        # Joint masks change only the masked joints, roughly joint_mask_ratio of them.
        cfg = dict(_QUIET, joint_mask_ratio=0.1)
        noisy, valid = _corrupt(jax.random.key(5), clean, **cfg)
        changed = np.any(np.abs(np.asarray(noisy) - clean) > 1e-5, axis=-1)
        assert bool(valid.all())
        assert changed.mean() == pytest.approx(0.1, abs=0.02)

    def test_deterministic_and_bad_args(self):
        clean = _clean(5, 2, 30)
        a = _corrupt(jax.random.key(6), clean)
        b = _corrupt(jax.random.key(6), clean)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        with pytest.raises(ValueError, match="frame_mask_ratio"):
            corrupt_for_pretraining(jax.random.key(0), clean, frame_mask_ratio=1.0)
        with pytest.raises(ValueError, match="span_min"):
            corrupt_for_pretraining(jax.random.key(0), clean, span_min=9, span_max=3)
        with pytest.raises(ValueError, match="clean must be"):
            corrupt_for_pretraining(jax.random.key(0), clean[..., :2])


class TestSimulateEstimator:
    def test_one_span_per_window(self):
        fps = 10
        clean = _clean(6, 5, 96)  # 3 windows of 32 frames
        observed, valid = _simulate(jax.random.key(7), clean, fps=fps, **_CLEAN_EST)
        valid = np.asarray(valid)
        assert (~valid).mean() == pytest.approx(0.5)
        for row in valid.reshape(5, 3, 32):
            for window in row:
                runs = _runs(~window)
                assert len(runs) == 1 and runs[0][1] == 16
        np.testing.assert_array_equal(np.asarray(observed)[~valid], 0.0)
        np.testing.assert_allclose(np.asarray(observed)[valid], clean[valid], atol=1e-6)

    def test_occluded_fraction_partial_window(self):
        valid = occlusion_mask(jax.random.key(8), (200,), 100, window=30, span=15)
        frac = float((~valid).mean())
        assert 0.4 < frac < 0.6

    def test_jitter_std_and_determinism(self):
        clean = _clean(9, 4, 120)
        cfg = dict(_CLEAN_EST, jitter_std=0.02)
        obs, valid = _simulate(jax.random.key(9), clean, fps=30, **cfg)
        err = (np.asarray(obs) - clean)[np.asarray(valid)]
        assert np.std(err) == pytest.approx(0.02, rel=0.1)
        obs2, valid2 = _simulate(jax.random.key(9), clean, fps=30, **cfg)
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(valid, valid2)
        obs3, _ = _simulate(jax.random.key(10), clean, fps=30, **cfg)
        assert not np.array_equal(obs, obs3)

    def test_depth_shift_is_per_frame_z(self):
        clean = _clean(10, 2, 64)
        cfg = dict(_CLEAN_EST, depth_std=0.03)
        obs, valid = _simulate(jax.random.key(11), clean, fps=30, occ_span_s=0.0, **cfg)
        diff = np.asarray(obs) - clean
        np.testing.assert_allclose(diff[..., :2], 0.0, atol=1e-6)
        np.testing.assert_allclose(diff[..., 2], diff[..., :1, 2].repeat(17, -1), atol=1e-6)
        assert np.std(diff[..., 0, 2]) == pytest.approx(0.03, rel=0.25)
        assert bool(valid.all())

    def test_swap_uses_mirror_pairs(self):
        clean = jnp.asarray(_clean(12, 1, 3))
        swapped = swap_left_right(jax.random.key(0), clean, 1.0)
        np.testing.assert_array_equal(swapped, clean[..., skeleton.MIRROR, :])
        obs, _ = _simulate(jax.random.key(13), _clean(13, 1, 2000), fps=30,
                                    occ_span_s=0.0, **dict(_CLEAN_EST, swap_prob=0.01))
        moved = np.any(np.abs(np.asarray(obs) - _clean(13, 1, 2000)) > 1e-5, axis=-1)
        assert moved[..., skeleton.LEFT].mean() == pytest.approx(0.01, abs=0.005)
        np.testing.assert_array_equal(moved[..., skeleton.LEFT], moved[..., skeleton.RIGHT])

    def test_config_dict_call_and_bad_args(self):
        cfg = dict(occ_window_s=3.2, occ_span_s=1.6, jitter_std=0.02, depth_std=0.03,
                   scale_std=0.03, swap_prob=0.01, outlier_prob=0.005, outlier_std=0.15)
        obs, valid = _simulate(jax.random.key(0), _clean(0, 40), fps=30, **cfg)
        assert obs.shape == (40, 17, 3) and valid.shape == (40,)
        with pytest.raises(ValueError, match="occ_span_s"):
            simulate_estimator(jax.random.key(0), _clean(0, 40), fps=30, occ_span_s=4.0)
        with pytest.raises(ValueError, match="fps"):
            simulate_estimator(jax.random.key(0), _clean(0, 40), fps=0)


class TestHiddenSpans:
    def test_coverage_spans_and_padding_stability(self):
        key = jax.random.key(0)
        hidden = np.asarray(corrupt.hidden_spans(key, 300, 243, ratio=0.3, span_min=5,
                                                 span_max=30, max_frames=243))
        assert hidden.shape == (300, 243) and 0.26 < hidden.mean() < 0.32
        for row in hidden[:50]:
            edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
            runs = edges[1::2] - edges[::2]
            interior = edges[1::2] < row.size  # a run cut by the end may be shorter
            assert (runs[interior] >= 5).all()
        shorter = corrupt.hidden_spans(key, 300, 100, ratio=0.3, span_min=5, span_max=30,
                                       max_frames=243)
        np.testing.assert_array_equal(np.asarray(shorter), hidden[:, :100])
        assert not np.asarray(corrupt.hidden_spans(key, 3, 50, ratio=0.0, span_min=1,
                                                   span_max=2)).any()

    def test_bad_args(self):
        with pytest.raises(ValueError, match="ratio"):
            corrupt.hidden_spans(jax.random.key(0), 1, 10, ratio=1.0, span_min=1, span_max=2)
        with pytest.raises(ValueError, match="span_min"):
            corrupt.hidden_spans(jax.random.key(0), 1, 10, ratio=0.1, span_min=3, span_max=2)


class TestOcclusionPatterns:
    """Repeated whole-frame gaps, the evaluation protocol, their mixture, estimator noise."""

    def test_gap_mask_lengths_and_duty(self):
        valid = np.asarray(corrupt.gap_mask(jax.random.key(0), (200,), 120, gap_min=10,
                                            gap_max=10, duty_min=0.5, duty_max=0.5))
        assert valid.shape == (200, 120)
        assert (~valid).mean() == pytest.approx(0.5, abs=0.03)
        for row in ~valid[:50]:
            for start, n in _runs(row):
                if 0 < start and start + n < row.size:  # runs cut by the clip ends are shorter
                    assert n in (10, 20), n  # one gap, or two touching across windows
        varied = np.asarray(corrupt.gap_mask(jax.random.key(1), (400,), 243, gap_min=15,
                                             gap_max=60, duty_min=0.25, duty_max=0.6))
        per_seq = (~varied).mean(-1)
        assert 0.38 < per_seq.mean() < 0.47 and per_seq.min() < 0.3 and per_seq.max() > 0.5
        with pytest.raises(ValueError, match="duty"):
            corrupt.gap_mask(jax.random.key(0), (1,), 10, gap_min=1, gap_max=2, duty_min=0.5,
                             duty_max=1.0)
        with pytest.raises(ValueError, match="gap_min"):
            corrupt.gap_mask(jax.random.key(0), (1,), 10, gap_min=3, gap_max=2, duty_min=0.5,
                             duty_max=0.5)

    def test_protocol_clips_follow_the_simulator(self):
        clean = _clean(20, 6, 96)
        cfg = dict(_QUIET, protocol_prob=1.0, fps=10.0, protocol_s=(3.2, 1.6))
        noisy, valid = _corrupt(jax.random.key(20), clean, **cfg)
        valid = np.asarray(valid)
        for row in valid.reshape(6, 3, 32):
            for window in row:
                runs = _runs(~window)
                assert len(runs) == 1 and runs[0][1] == 16
        np.testing.assert_allclose(noisy, fill_missing(clean, valid), atol=1e-6)

    def test_mixture_probabilities_and_short_clips(self):
        # frame_mask_ratio 0: only gap / protocol clips have hidden frames.
        cfg = dict(_QUIET, gap_prob=0.5, protocol_prob=0.25, fps=30.0)
        _, valid = _corrupt(jax.random.key(21), _clean(21, 400, 200), **cfg)
        occluded = (~np.asarray(valid)).any(-1)
        assert occluded.mean() == pytest.approx(0.75, abs=0.06)
        # 2 s gaps in 27-frame clips: every clip keeps a visible frame.
        cfg = dict(_QUIET, gap_prob=1.0, gap_s=(2.0, 2.0), gap_duty=(0.9, 0.95), fps=30.0)
        noisy, valid = _corrupt(jax.random.key(22), _clean(22, 64, 27), **cfg)
        assert np.asarray(valid).any(-1).all() and np.isfinite(np.asarray(noisy)).all()

    def test_visible_clips(self):
        """visible_prob: that share of clips keeps every frame, the rest follow the other
        patterns; joint masks still apply to visible clips."""
        clean = _clean(28, 600, 90)
        cfg = dict(_QUIET, frame_mask_ratio=0.4, gap_prob=0.3, protocol_prob=0.2,
                   visible_prob=0.25, fps=30.0)
        _, valid = _corrupt(jax.random.key(28), clean, **cfg)
        unhidden = np.asarray(valid).all(-1)
        assert unhidden.mean() == pytest.approx(0.25, abs=0.05)
        _, valid = _corrupt(jax.random.key(29), clean[:20], **dict(
            cfg, gap_prob=0.0, protocol_prob=0.0, visible_prob=1.0, joint_mask_ratio=0.1,
            per_joint=True))
        valid = np.asarray(valid)
        assert valid.any(-1).all() and (~valid).mean() == pytest.approx(0.1, abs=0.02)

    def test_per_joint_validity_and_estimator_noise(self):
        clean = _clean(23, 8, 60)
        cfg = dict(_QUIET, frame_mask_ratio=0.3, joint_mask_ratio=0.1, per_joint=True)
        noisy, joint_valid = _corrupt(jax.random.key(23), clean, **cfg)
        _, frame_valid = _corrupt(jax.random.key(23), clean, **dict(cfg, per_joint=False))
        joint_valid, frame_valid = np.asarray(joint_valid), np.asarray(frame_valid)
        assert joint_valid.shape == (8, 60, 17) and (~frame_valid).mean() == pytest.approx(0.3)
        assert not joint_valid[~frame_valid].any()  # hidden frames: no joint valid
        assert (~joint_valid[frame_valid]).mean() == pytest.approx(0.1, abs=0.02)
        np.testing.assert_allclose(noisy, fill_missing(clean, joint_valid), atol=1e-6)
        # Depth shift: per frame, z only.
        obs, _ = _corrupt(jax.random.key(24), clean, **dict(_QUIET, depth_std=0.03))
        diff = np.asarray(obs) - clean
        np.testing.assert_allclose(diff[..., :2], 0.0, atol=1e-6)
        np.testing.assert_allclose(diff[..., 2], diff[..., :1, 2].repeat(17, -1), atol=1e-6)
        assert np.std(diff[..., 0, 2]) == pytest.approx(0.03, rel=0.3)
        swapped, _ = _corrupt(jax.random.key(25), clean, **dict(_QUIET, swap_prob=1.0))
        np.testing.assert_allclose(swapped, clean[..., skeleton.MIRROR, :], atol=1e-6)

    def test_new_options_at_defaults_change_nothing(self):
        clean = _clean(26, 3, 50)
        cfg = dict(joint_mask_ratio=0.05, frame_mask_ratio=0.4, span_min=5, span_max=20)
        base = _corrupt(jax.random.key(26), clean, **cfg)
        explicit = _corrupt(jax.random.key(26), clean, **dict(
            cfg, gap_prob=0.0, protocol_prob=0.0, depth_std=0.0, swap_prob=0.0, fps=25.0,
            visible_prob=0.0))
        np.testing.assert_array_equal(base[0], explicit[0])
        np.testing.assert_array_equal(base[1], explicit[1])

    def test_bad_mixture(self):
        clean = _clean(27, 2, 30)
        with pytest.raises(ValueError, match="gap_prob \\+ protocol_prob"):
            corrupt_for_pretraining(jax.random.key(0), clean, gap_prob=0.7, protocol_prob=0.5)
        with pytest.raises(ValueError, match="visible_prob must be <= 1"):
            corrupt_for_pretraining(jax.random.key(0), clean, gap_prob=0.5, visible_prob=0.6)
        with pytest.raises(ValueError, match="visible_prob"):
            corrupt_for_pretraining(jax.random.key(0), clean, visible_prob=-0.1)
        with pytest.raises(ValueError, match="swap_prob"):
            corrupt_for_pretraining(jax.random.key(0), clean, swap_prob=1.5)
