"""Tests for stride_jax.interpolate against a per-joint np.interp reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax.interpolate import fill_missing


def _reference(poses: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """np.interp per joint and coordinate; valid is [T] or [T, J]."""
    n_frames, n_joints, _ = poses.shape
    if valid.ndim == 1:
        valid = np.repeat(valid[:, None], n_joints, axis=1)
    out = np.zeros_like(poses)
    t = np.arange(n_frames)
    for j in range(n_joints):
        idx = np.flatnonzero(valid[:, j])
        if idx.size == 0:
            continue
        for c in range(3):
            out[:, j, c] = np.interp(t, idx, poses[idx, j, c])
    return out


def _poses(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape + (3,)).astype(np.float32)


_fill = jax.jit(fill_missing)


class TestFillMissing:
    @pytest.mark.parametrize(
        "valid",
        [
            [1, 1, 1, 1, 1, 1, 1, 1],
            [0, 0, 1, 0, 0, 1, 1, 0],  # leading, inner and trailing gaps
            [1, 0, 0, 0, 0, 0, 0, 1],
            [0, 0, 0, 1, 0, 0, 0, 0],  # all but one missing
            [0, 0, 0, 0, 0, 0, 0, 0],  # all missing -> zeros
        ],
    )
    def test_matches_np_interp(self, valid):
        rng = np.random.default_rng(0)
        poses = _poses(rng, 8, 17)
        valid = np.array(valid, dtype=bool)
        got = np.asarray(_fill(poses, valid))
        np.testing.assert_allclose(got, _reference(poses, valid), rtol=1e-6, atol=1e-6)

    def test_ignores_values_at_invalid_frames(self):
        rng = np.random.default_rng(1)
        poses = _poses(rng, 6, 4)
        valid = np.array([0, 1, 0, 0, 1, 0], dtype=bool)
        corrupted = poses.copy()
        corrupted[~valid] = np.nan
        got = np.asarray(_fill(corrupted, valid))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, _reference(poses, valid), rtol=1e-6, atol=1e-6)
        all_nan = np.full_like(poses, np.nan)
        np.testing.assert_array_equal(_fill(all_nan, np.zeros(6, bool)), 0.0)

    def test_valid_frames_unchanged_exactly(self):
        rng = np.random.default_rng(2)
        poses = _poses(rng, 10, 17)
        valid = rng.random(10) < 0.5
        valid[3] = True
        got = np.asarray(_fill(poses, valid))
        np.testing.assert_array_equal(got[valid], poses[valid])

    def test_midpoint_by_hand(self):
        poses = np.zeros((5, 1, 3), np.float32)
        poses[0] = 1.0
        poses[4] = 5.0
        valid = np.array([1, 0, 0, 0, 1], bool)
        got = np.asarray(_fill(poses, valid))[:, 0, 0]
        np.testing.assert_allclose(got, [1, 2, 3, 4, 5])

    def test_per_joint_validity(self):
        rng = np.random.default_rng(3)
        poses = _poses(rng, 9, 5)
        valid = rng.random((9, 5)) < 0.4
        valid[:, 2] = False  # one joint never seen -> zeros
        got = np.asarray(_fill(poses, valid))
        np.testing.assert_allclose(got, _reference(poses, valid), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got[:, 2], 0.0)

    def test_batched_and_vmapped(self):
        rng = np.random.default_rng(4)
        poses = _poses(rng, 3, 2, 7, 17)
        valid = rng.random((3, 2, 7)) < 0.5
        got = np.asarray(_fill(poses, valid))
        got_vmap = np.asarray(jax.jit(jax.vmap(fill_missing))(poses, valid))
        for i in range(3):
            for k in range(2):
                ref = _reference(poses[i, k], valid[i, k])
                np.testing.assert_allclose(got[i, k], ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got, got_vmap)

    def test_bad_inputs(self):
        poses = jnp.zeros((4, 17, 3))
        with pytest.raises(ValueError, match="valid must be"):
            fill_missing(poses, jnp.ones((5,), bool))
        with pytest.raises(ValueError, match="boolean"):
            fill_missing(poses, jnp.ones((4,), jnp.float32))
        with pytest.raises(ValueError, match="poses must be"):
            fill_missing(jnp.zeros((4, 17, 2)), jnp.ones((4,), bool))
