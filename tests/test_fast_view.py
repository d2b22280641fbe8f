"""The time-varying whole-body rotation, vertical hops and the fast evaluation view."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from configs import cpu
from stride_jax import skeleton
from stride_jax.data import augment
from stride_jax.data.dataset import Sequence
from stride_jax.evalset import fast_view, make_videos


def _world(seed: int, frames: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (frames, 17, 3)).astype(np.float32)
    x += np.linspace(0, 1, frames, dtype=np.float32)[:, None, None]  # a moving pelvis
    return x


@pytest.mark.parametrize("axis, vector", [(0, [0, 1, 0]), (1, [1, 0, 0]), (2, [0, 0, 1])])
def test_spin_is_a_rotation_about_the_pelvis_growing_in_time(axis, vector):
    world = _world(axis)
    rate, phase = 0.03, 0.4
    out = np.asarray(augment.spin(jnp.asarray(world), rate, axis, phase))
    for t in (0, 7, 19):  # against scipy's rotation about the named world axis
        angle = phase + 2 * np.pi * rate * t
        rot = Rotation.from_rotvec(angle * np.asarray(vector, float)).as_matrix()
        want = (world[t] - world[t, :1]) @ rot.T + world[t, :1]
        np.testing.assert_allclose(out[t], want, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], world[:, 0], atol=1e-6)  # pelvis path kept


def test_random_spin_keeps_bone_lengths_and_respects_prob():
    world = jnp.asarray(np.stack([_world(s) for s in range(6)]))
    bones = skeleton.BONES

    def lengths(x):
        x = np.asarray(x)
        return np.linalg.norm(x[..., bones[:, 1], :] - x[..., bones[:, 0], :], axis=-1)

    spun = augment.random_spin(jax.random.key(0), world, 1.0, max_turns_per_frame=0.05)
    np.testing.assert_allclose(lengths(spun), lengths(world), atol=1e-5)
    assert not np.allclose(spun, world)
    same = augment.random_spin(jax.random.key(0), world, 0.0, max_turns_per_frame=0.05)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(world))
    with pytest.raises(ValueError, match="max_turns_per_frame"):
        augment.random_spin(jax.random.key(0), world, 1.0, max_turns_per_frame=-0.1)


def _sequences() -> list[Sequence]:
    rng = np.random.default_rng(3)
    t = np.arange(400, dtype=np.float32)[:, None, None] / 30
    joints = (np.sin(t + np.arange(17)[None, :, None] / 3) * 0.3
              + rng.normal(0, 0.01, (400, 17, 3))).astype(np.float32)
    joints[..., 1] += 1.0
    return [Sequence(name="synthetic", joints=joints, fps=30.0, subject="s", source="test")]


def test_fast_view_is_fixed_per_seed_and_faster():
    simulator = dict(cpu.get_config().simulator)
    plain, truth_plain = make_videos(_sequences(), video_len=120, fps=30.0, seed=0,
                                     simulator=simulator)
    fast, truth_fast = make_videos(_sequences(), video_len=120, fps=30.0, seed=0,
                                   simulator=simulator, view="fast")
    again, truth_again = make_videos(_sequences(), video_len=120, fps=30.0, seed=0,
                                     simulator=simulator, view="fast")
    other, _ = make_videos(_sequences(), video_len=120, fps=30.0, seed=1, simulator=simulator,
                           view="fast")
    # 400 frames: 3 videos of 120 (a 40-frame tail is dropped); at 1.5-2x speed 200-267
    # frames: 2 videos.
    assert len(plain) == 3 and len(fast) == 2
    assert all(v.name.endswith(":fast") for v in fast)
    for a, b, ta, tb in zip(fast, again, truth_fast, truth_again):
        np.testing.assert_array_equal(a.poses, b.poses)
        np.testing.assert_array_equal(ta, tb)
    assert not np.allclose(fast[0].poses, other[0].poses)

    def speed(truths):
        return np.mean([np.linalg.norm(np.diff(t[:, 1:] - t[:, :1], axis=0), axis=-1).mean()
                        for t in truths])
    assert speed(truth_fast) > 1.5 * speed(truth_plain)  # faster and turning
    with pytest.raises(ValueError, match="view"):
        make_videos(_sequences(), video_len=120, fps=30.0, seed=0, simulator=simulator,
                    view="slow")


def test_fast_view_rotation_rate_is_a_quarter_to_one_turn_per_second():
    world = np.tile(_world(0, 1), (2, 1, 1))  # a still body: only the spin moves it
    for index in range(8):
        out = fast_view(5, index, world, 30.0)
        rel0, rel1 = out[0] - out[0, :1], out[1] - out[1, :1]
        rot, _ = Rotation.align_vectors(rel1, rel0)
        degrees_per_frame = np.degrees(rot.magnitude())
        assert 360 * 0.25 / 30 - 1e-3 <= degrees_per_frame <= 360 / 30 + 1e-3


def test_pretraining_spin_turns_the_targets():
    from stride_jax import pretrain

    config = cpu.get_config("runlocal")
    world = jnp.asarray(np.stack([_world(s, 27) for s in range(4)]))
    key = jax.random.key(0)
    base = np.asarray(pretrain.augment_clips(key, world, config.pretrain, fps=30.0))
    spun_cfg = config.pretrain.copy_and_resolve_references()
    spun_cfg.spin_prob = 1.0
    spun = np.asarray(pretrain.augment_clips(key, world, spun_cfg, fps=30.0))
    assert not np.allclose(spun, base, atol=1e-4)
    # the spin keeps bone lengths: same skeleton, only turned
    bones = skeleton.BONES
    length = lambda x: np.linalg.norm(x[..., bones[:, 1], :] - x[..., bones[:, 0], :], axis=-1)  # noqa: E731
    np.testing.assert_allclose(length(spun), length(base), atol=1e-4)
