"""Tests for stride_jax.metrics against hand-computed values and numpy/scipy references."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.transform import Rotation

from stride_jax import metrics, skeleton

J = skeleton.NUM_JOINTS

_mpjpe = jax.jit(metrics.mpjpe, static_argnames="root_align")
_pa_mpjpe = jax.jit(metrics.pa_mpjpe)
_accel = jax.jit(metrics.accel_error, static_argnames="root_align")
_masked_mean = jax.jit(metrics.masked_mean)


def _poses(seed: int, *shape: int, scale: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=shape + (J, 3))


# ----------------------------------------------------------------------------- references
def np_umeyama(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Umeyama (1991): similarity transform c R x + t of points x [J, 3] onto y, det R = +1."""
    n = len(x)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var_x = (xc**2).sum() / n
    sigma = yc.T @ xc / n  # cross-covariance of y and x
    u, d, vt = np.linalg.svd(sigma)
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1.0
    r = u @ s @ vt
    c = np.trace(np.diag(d) @ s) / var_x
    t = my - c * r @ mx
    return (c * (r @ x.T)).T + t


def np_pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame PA-MPJPE (mm) of [T, J, 3] poses."""
    return np.array([np.linalg.norm(np_umeyama(p, g) - g, axis=-1).mean() * 1000
                     for p, g in zip(pred, gt)])


def np_accel_error(pred: np.ndarray, gt: np.ndarray, root_align: bool = True) -> np.ndarray:
    """Per-frame second-difference error (mm) of [T, J, 3] poses, entry i for frame i+1."""
    if root_align:
        pred = pred - pred[:, :1]
        gt = gt - gt[:, :1]
    out = []
    for i in range(1, len(pred) - 1):
        a_pred = pred[i + 1] - 2 * pred[i] + pred[i - 1]
        a_gt = gt[i + 1] - 2 * gt[i] + gt[i - 1]
        out.append(np.mean([np.linalg.norm(a_pred[j] - a_gt[j]) for j in range(J)]) * 1000)
    return np.array(out)


# ----------------------------------------------------------------------------- mpjpe
class TestMpjpe:
    def test_hand_computed(self):
        gt = _poses(0, 1, 2)
        pred = gt.copy()
        pred[0, 0, 5] += (0.003, 0.004, 0.0)  # 5 mm on one joint of frame 0
        pred[0, 1, 12] += (0.0, -0.006, 0.008)  # 10 mm on one joint of frame 1
        for root_align in (True, False):
            got = np.asarray(_mpjpe(pred, gt, root_align=root_align))
            assert got.shape == (1, 2)
            np.testing.assert_allclose(got[0], [5.0 / J, 10.0 / J], rtol=1e-5)  # float32

    def test_root_error_spreads_when_aligned(self):
        gt = _poses(1, 3)
        pred = gt.copy()
        pred[:, skeleton.ROOT] += (0.3, 0.4, 0.0)  # pelvis 500 mm off
        np.testing.assert_allclose(_mpjpe(pred, gt, root_align=False), 500.0 / J, rtol=1e-6)
        # Aligned on the pelvis, the other 16 joints all appear 500 mm off.
        np.testing.assert_allclose(_mpjpe(pred, gt), 500.0 * (J - 1) / J, rtol=1e-6)

    def test_root_alignment_removes_translation(self):
        gt = _poses(2, 2, 4)
        shift = np.random.default_rng(3).normal(size=(2, 4, 1, 3))  # per sample and frame
        pred = gt + shift
        np.testing.assert_allclose(_mpjpe(pred, gt), 0.0, atol=1e-3)
        want = np.linalg.norm(shift[..., 0, :], axis=-1) * 1000
        np.testing.assert_allclose(_mpjpe(pred, gt, root_align=False), want, rtol=1e-5)

    def test_matches_numpy(self):
        gt = _poses(4, 2, 5)
        pred = gt + np.random.default_rng(5).normal(scale=0.05, size=gt.shape)
        rel = lambda x: x - x[..., :1, :]  # noqa: E731
        want = np.linalg.norm(rel(pred) - rel(gt), axis=-1).mean(-1) * 1000
        np.testing.assert_allclose(_mpjpe(pred, gt), want, rtol=1e-5)

    def test_shape_mismatch_raises(self):
        gt = _poses(6, 4)
        with pytest.raises(ValueError):
            _mpjpe(gt[:-1], gt)
        with pytest.raises(ValueError):
            _pa_mpjpe(gt[..., :2], gt[..., :2])
        with pytest.raises(ValueError):
            _accel(gt, gt[:, :-1])

    def test_procrustes_align_rejects_unequal_shapes(self):
        gt = _poses(6, 4)
        with pytest.raises(AssertionError, match="assert_equal_shape"):
            metrics.procrustes_align(gt[:, :-1], gt)
        with pytest.raises(AssertionError, match="assert_shape"):
            metrics.procrustes_align(gt[..., :2], gt[..., :2])


# ----------------------------------------------------------------------------- pa_mpjpe
class TestPaMpjpe:
    @staticmethod
    def _similarity(seed: int, gt: np.ndarray) -> np.ndarray:
        """Random rotation, scale and translation applied to each frame of gt [T, J, 3]."""
        rng = np.random.default_rng(seed)
        out = []
        for frame in gt:
            rot = Rotation.random(random_state=rng).as_matrix()
            scale = rng.uniform(0.5, 2.0)
            out.append(scale * frame @ rot.T + rng.normal(size=3))
        return np.stack(out)

    def test_similarity_transform_is_recovered(self):
        gt = _poses(10, 6)
        pred = self._similarity(11, gt)
        assert np.all(_mpjpe(pred, gt) > 10.0)
        got = np.asarray(_pa_mpjpe(pred.astype(np.float32), gt.astype(np.float32)))
        assert got.shape == (6,)
        np.testing.assert_allclose(got, 0.0, atol=1e-2)  # mm, float32

    def test_reflection_is_not_recovered(self):
        gt = _poses(12, 4)
        pred = gt * np.array([-1.0, 1.0, 1.0])  # mirror image: det -1
        pred = self._similarity(13, pred)
        got = np.asarray(_pa_mpjpe(pred, gt))
        assert np.all(got > 20.0)
        np.testing.assert_allclose(got, np_pa_mpjpe(pred, gt), rtol=1e-4)
        # An orthogonal Procrustes that allows reflections does recover it, so det +1 matters.
        for p, g in zip(pred, gt):
            pc, gc = p - p.mean(0), g - g.mean(0)
            r, s = scipy.linalg.orthogonal_procrustes(pc, gc)
            assert np.linalg.det(r) < 0
            aligned = (s / (pc**2).sum()) * pc @ r
            assert np.linalg.norm(aligned - gc, axis=-1).mean() * 1000 < 1e-6

    def test_matches_reference_on_noisy_poses(self):
        rng = np.random.default_rng(14)
        gt = _poses(15, 3, 8)
        pred = np.stack([self._similarity(16 + b, g) for b, g in enumerate(gt)])
        pred = pred + rng.normal(scale=0.04, size=pred.shape)
        pred[0, 0] = pred[0, 0] * np.array([1.0, -1.0, 1.0])  # and a reflected frame
        pred, gt = pred.astype(np.float32), gt.astype(np.float32)
        got = np.asarray(_pa_mpjpe(pred, gt))
        assert got.shape == (3, 8)
        want = np.stack([np_pa_mpjpe(p.astype(np.float64), g.astype(np.float64))
                         for p, g in zip(pred, gt)])
        assert np.all(want > 5.0)
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
        # Never worse than plain (root-aligned) MPJPE, which is one candidate transform.
        assert np.all(got <= np.asarray(_mpjpe(pred, gt)) + 1e-3)

    def test_aligned_pose_is_optimal(self):
        """Perturbing the returned similarity transform only increases the error."""
        gt = _poses(17, 1)[0]
        pred = gt + np.random.default_rng(18).normal(scale=0.05, size=gt.shape)
        aligned = np.asarray(jax.jit(metrics.procrustes_align)(pred, gt))
        base = np.linalg.norm(aligned - gt, axis=-1).mean()
        ssq = lambda a: ((a - gt) ** 2).sum()  # noqa: E731  Procrustes minimises squared error
        c = aligned.mean(0)
        for k in range(6):
            rot = Rotation.from_rotvec(np.eye(3)[k % 3] * (0.02 if k < 3 else -0.02)).as_matrix()
            assert ssq((aligned - c) @ rot.T + c) > ssq(aligned)
        for s in (0.98, 1.02):
            assert ssq(s * (aligned - c) + c) > ssq(aligned)
        assert ssq(aligned + 0.01) > ssq(aligned)
        assert base > 0


# ----------------------------------------------------------------------------- acceleration
class TestAccelError:
    @pytest.mark.parametrize("root_align", [True, False])
    def test_matches_numpy(self, root_align):
        gt = _poses(20, 2, 7)
        pred = gt + np.random.default_rng(21).normal(scale=0.02, size=gt.shape)
        got = np.asarray(_accel(pred, gt, root_align=root_align))
        assert got.shape == (2, 5)
        want = np.stack([np_accel_error(p, g, root_align) for p, g in zip(pred, gt)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)

    def test_constant_velocity_motion_is_invisible(self):
        gt = _poses(22, 2, 7)
        pred = gt + np.random.default_rng(23).normal(scale=0.02, size=gt.shape)
        rng = np.random.default_rng(24)
        t = np.arange(7)[None, :, None, None]
        motion = rng.normal(size=(2, 1, J, 3)) + rng.normal(scale=0.1, size=(2, 1, J, 3)) * t
        base = np.asarray(_accel(pred, gt, root_align=False))
        np.testing.assert_allclose(_accel(pred + motion, gt + motion, root_align=False), base,
                                   atol=1e-3)
        # Second differences kill it on one side alone too.
        np.testing.assert_allclose(_accel(pred + motion, gt, root_align=False), base, atol=1e-3)
        # But not an accelerating motion.
        assert np.all(np.asarray(_accel(pred + motion * t, gt, root_align=False)) > base + 1.0)

    def test_hand_computed(self):
        gt = np.zeros((5, J, 3))
        pred = gt.copy()
        pred[2, 3] = (0.003, 0.0, 0.004)  # a 5 mm spike at frame 2, joint 3
        got = np.asarray(_accel(pred, gt))
        # Second differences at frames 1, 2, 3 see +5, -10, +5 mm on one joint.
        np.testing.assert_allclose(got, np.array([5.0, 10.0, 5.0]) / J, rtol=1e-5)


class TestMaskedMean:
    def test_no_mask_is_mean(self):
        values = np.random.default_rng(31).random((3, 5)).astype(np.float32)
        np.testing.assert_allclose(_masked_mean(values), values.mean(), rtol=1e-6)

    def test_selects_entries(self):
        values = np.random.default_rng(32).random((3, 5)).astype(np.float32)
        mask = np.random.default_rng(33).random((3, 5)) > 0.5
        np.testing.assert_allclose(_masked_mean(values, mask), values[mask].mean(), rtol=1e-6)

    def test_masked_values_do_not_matter(self):
        values = np.arange(6, dtype=np.float32)
        mask = np.array([1, 0, 1, 0, 0, 1], bool)
        wild = np.where(mask, values, np.float32(1e30))
        np.testing.assert_allclose(_masked_mean(wild, mask), (0 + 2 + 5) / 3, rtol=1e-6)

    def test_broadcast_mask(self):
        values = np.random.default_rng(34).random((2, 4)).astype(np.float32)
        mask = np.array([True, False, True, True])  # per frame, shared by samples
        np.testing.assert_allclose(_masked_mean(values, mask), values[:, mask].mean(),
                                   rtol=1e-6)

    def test_empty_mask_is_nan(self):
        values = np.ones((4,), np.float32)
        assert np.isnan(float(_masked_mean(values, np.zeros(4, bool))))
