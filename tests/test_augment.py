"""Tests for stride_jax.data.augment."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import skeleton
from stride_jax.data import augment


def _world(seed: int, *shape: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape + (17, 3)).astype(np.float32)
    x[..., 1] += 1.0  # roughly above the floor
    return x


def _bone_lengths(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.linalg.norm(x[..., skeleton.BONES[:, 1], :] - x[..., skeleton.BONES[:, 0], :],
                          axis=-1)


def _bone_dirs(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    v = x[..., skeleton.BONES[:, 1], :] - x[..., skeleton.BONES[:, 0], :]
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class TestMirror:
    def test_twice_is_identity(self):
        x = _world(0, 2, 5)
        np.testing.assert_array_equal(jax.jit(augment.mirror)(augment.mirror(x)), x)

    def test_by_hand(self):
        x = _world(1, 3)
        m = np.asarray(augment.mirror(x))
        np.testing.assert_array_equal(m[:, 4, 0], -x[:, 1, 0])  # l_hip <- r_hip
        np.testing.assert_array_equal(m[:, 4, 1:], x[:, 1, 1:])
        np.testing.assert_array_equal(m[:, 0, 0], -x[:, 0, 0])


class TestYaw:
    def test_preserves_bones_and_height(self):
        x = _world(2, 4, 6)
        y = np.asarray(jax.jit(augment.random_yaw)(jax.random.key(0), x))
        np.testing.assert_allclose(_bone_lengths(y), _bone_lengths(x), rtol=1e-5)
        np.testing.assert_array_equal(y[..., 1], x[..., 1])
        # Frame 0's pelvis is on the rotation axis.
        np.testing.assert_allclose(y[:, 0, 0], x[:, 0, 0], atol=1e-6)
        assert not np.allclose(y, x)

    def test_quarter_turn_by_hand(self):
        x = np.zeros((1, 17, 3), np.float32)
        x[0, 1] = [0.0, 0.5, 1.0]  # +z
        y = np.asarray(augment.rotate_yaw(x, np.pi / 2))
        np.testing.assert_allclose(y[0, 1], [1.0, 0.5, 0.0], atol=1e-6)  # +z -> +x


class TestScaleBones:
    def test_lengths_scaled_directions_kept(self):
        x = _world(3, 2, 4)
        key = jax.random.key(1)
        y = jax.jit(functools.partial(augment.scale_bones, std=0.1))(key, x)
        factors = np.asarray(augment.draw_bone_factors(key, (2,), std=0.1))
        np.testing.assert_allclose(_bone_lengths(y), _bone_lengths(x) * factors[:, None],
                                   rtol=1e-4)
        np.testing.assert_allclose(_bone_dirs(y), _bone_dirs(x), atol=1e-4)
        np.testing.assert_allclose(np.asarray(y)[..., 0, :], x[..., 0, :])
        assert np.all(np.abs(factors - 1.0) <= 0.2 + 1e-6) and np.std(factors) > 0.01

    def test_left_right_symmetric(self):
        factors = np.asarray(augment.draw_bone_factors(jax.random.key(2), (5,), std=0.1))
        child = skeleton.BONES[:, 1]
        bone_of_child = {int(c): i for i, c in enumerate(child)}
        for i, c in enumerate(child):
            np.testing.assert_array_equal(
                factors[:, i], factors[:, bone_of_child[int(skeleton.MIRROR[c])]])

    def test_bad_factor_shape(self):
        with pytest.raises(ValueError, match="factors must be"):
            augment.apply_bone_factors(jnp.zeros((2, 3, 17, 3)), jnp.ones((16,)))


class TestCamera:
    def test_up_maps_to_minus_y(self):
        x = np.zeros((2, 17, 3), np.float32)
        x[:, 10, 1] = 0.7  # head above the pelvis
        x[:, 11, 2] = 1.0  # a joint further along world +z
        x[:, 12, 0] = 1.0  # world +x
        c = np.asarray(jax.jit(augment.world_to_camera)(x))
        np.testing.assert_allclose(c[0, 0], [0, 0, 5.0])
        np.testing.assert_allclose(c[0, 10] - c[0, 0], [0, -0.7, 0], atol=1e-6)
        np.testing.assert_allclose(c[0, 11] - c[0, 0], [0, 0, 1.0], atol=1e-6)
        np.testing.assert_allclose(c[0, 12] - c[0, 0], [-1.0, 0, 0], atol=1e-6)

    def test_pitch_looks_down_and_is_rigid(self):
        x = _world(4, 3, 5)
        c = np.asarray(augment.world_to_camera(x, pitch_rad=0.3))
        np.testing.assert_allclose(_bone_lengths(c), _bone_lengths(x), rtol=1e-5)
        up = np.zeros((1, 17, 3), np.float32)
        up[0, 10, 1] = 1.0
        cu = np.asarray(augment.world_to_camera(up, pitch_rad=0.3))
        # Looking down: a point above the pelvis is closer to the camera.
        np.testing.assert_allclose(cu[0, 10] - cu[0, 0], [0, -np.cos(0.3), -np.sin(0.3)],
                                   atol=1e-6)

    def test_random_view_is_rigid_and_keyed(self):
        x = _world(5, 3, 4)
        fn = jax.jit(functools.partial(augment.random_view, pitch_max_rad=0.2))
        a, b = fn(jax.random.key(3), x), fn(jax.random.key(3), x)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(_bone_lengths(a), _bone_lengths(x), rtol=1e-5)

    def test_root_relative(self):
        x = _world(6, 2, 3)
        r = np.asarray(jax.jit(augment.root_relative)(x))
        np.testing.assert_allclose(r, x - x[..., :1, :])


class TestSpeedChange:
    def test_linear_resampling_by_hand(self):
        x = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 17, 3), np.float32)
        fast = augment.speed_change(x, 2.0)
        np.testing.assert_allclose(fast[:, 0, 0], [0, 2, 4, 6])
        slow = augment.speed_change(x, 0.5)
        np.testing.assert_allclose(slow[:, 0, 0], np.arange(13) * 0.5)
        assert slow.dtype == np.float32
        np.testing.assert_allclose(augment.speed_change(x, 1.0), x)

    def test_bad_factor(self):
        with pytest.raises(ValueError, match="factor"):
            augment.speed_change(np.zeros((3, 17, 3)), 0.0)


class TestReverseAndMix:
    def test_reverse_twice_is_identity_and_by_hand(self):
        x = _world(30, 2, 7)
        r = jax.jit(augment.reverse_time)(x)
        np.testing.assert_array_equal(r[:, 0], x[:, -1])
        np.testing.assert_array_equal(augment.reverse_time(r), x)
        picked = jax.jit(functools.partial(augment.random_reverse, prob=0.5))(
            jax.random.key(0), _world(31, 400, 3))
        flipped = np.all(np.asarray(picked)[:, 0] == _world(31, 400, 3)[:, -1], axis=(-1, -2))
        assert flipped.mean() == pytest.approx(0.5, abs=0.08)
        with pytest.raises(ValueError, match="probability"):
            augment.random_reverse(jax.random.key(0), x, 1.5)

    def test_mix_keeps_lower_body_and_upper_bones(self):
        a, b = _world(32, 3, 6), _world(33, 3, 6)
        mixed = np.asarray(jax.jit(augment.mix_body_parts)(a, b))
        lower = list(augment.LOWER_BODY)
        np.testing.assert_array_equal(mixed[..., lower, :], a[..., lower, :])
        upper_bones = [k for k, (p, c) in enumerate(skeleton.BONES) if c not in lower]
        assert len(upper_bones) == 10  # pelvis-spine, spine-thorax, neck, head, 2 x 3 arm
        np.testing.assert_allclose(_bone_lengths(mixed)[..., upper_bones],
                                   _bone_lengths(b)[..., upper_bones], rtol=1e-5)
        # The upper body is b's, turned about the vertical only: heights above the pelvis
        # and the torso's heading relative to the hips are b's.
        up = [j for j in range(17) if j not in lower]
        np.testing.assert_allclose(mixed[..., up, 1] - mixed[..., :1, 1],
                                   b[..., up, 1] - b[..., :1, 1], atol=1e-5)

        def rel_heading(x, j):  # heading of joint j's offset from the pelvis minus the hips'
            v = x[..., j, :] - x[..., 0, :]
            h = x[..., 4, :] - x[..., 1, :]
            d = np.arctan2(v[..., 0], v[..., 2]) - np.arctan2(h[..., 0], h[..., 2])
            return np.angle(np.exp(1j * d))
        np.testing.assert_allclose(rel_heading(mixed, 11), rel_heading(b, 11), atol=1e-4)
        np.testing.assert_allclose(augment.mix_body_parts(a, a), a, atol=1e-5)

    def test_random_mix_probability(self):
        x = _world(34, 64, 4)
        none = augment.random_mix(jax.random.key(1), x, 0.0)
        np.testing.assert_array_equal(none, x)
        allmix = np.asarray(jax.jit(functools.partial(augment.random_mix, prob=1.0))(
            jax.random.key(2), x))
        np.testing.assert_array_equal(allmix[..., list(augment.LOWER_BODY), :],
                                      x[..., list(augment.LOWER_BODY), :])
        changed = np.any(np.abs(allmix - x) > 1e-5, axis=(-1, -2, -3))
        assert changed.mean() > 0.9  # all but the clips the permutation maps to themselves
        with pytest.raises(ValueError, match="batch"):
            augment.random_mix(jax.random.key(0), x[0], 1.0)
