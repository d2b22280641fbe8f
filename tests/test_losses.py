"""Tests for stride_jax.losses against numpy references written here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import losses, skeleton

B, T, J = 2, 6, skeleton.NUM_JOINTS


# ----------------------------------------------------------------------------- references
def _joint_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean [B, T, J] from None, a frame mask [B, T] or a joint mask [B, T, J]."""
    if mask is None:
        return np.ones(shape[:-1], bool)
    mask = np.asarray(mask, bool)
    if mask.ndim == len(shape) - 2:
        mask = np.repeat(mask[..., None], shape[-2], axis=-1)
    return mask


def np_mpjpe(pred, target, mask=None):
    m = _joint_mask(mask, pred.shape)
    err = np.sqrt(((pred - target) ** 2).sum(-1))[m]
    return float(err.mean()) if err.size else 0.0


def np_n_mpjpe(pred, target, mask=None):
    """Scale fitted per sample and frame over that frame's counted joints."""
    m = _joint_mask(mask, pred.shape)
    errs = []
    for b in range(pred.shape[0]):
        for t in range(pred.shape[1]):
            idx = np.flatnonzero(m[b, t])
            if idx.size == 0:
                continue
            p, y = pred[b, t, idx], target[b, t, idx]
            s = np.dot(p.ravel(), y.ravel()) / np.dot(p.ravel(), p.ravel())
            errs.extend(np.linalg.norm(s * p - y, axis=-1))
    return float(np.mean(errs)) if errs else 0.0


def np_velocity(pred, target, mask=None):
    m = _joint_mask(mask, pred.shape)
    errs = []
    for b in range(pred.shape[0]):
        for t in range(1, pred.shape[1]):
            for j in range(pred.shape[2]):
                if m[b, t, j] and m[b, t - 1, j]:
                    dv = ((pred[b, t, j] - pred[b, t - 1, j])
                          - (target[b, t, j] - target[b, t - 1, j]))
                    errs.append(np.linalg.norm(dv))
    return float(np.mean(errs)) if errs else 0.0


def np_limb_var(pred, mask=None):
    m = _joint_mask(mask, pred.shape)
    variances = []
    for b in range(pred.shape[0]):
        for parent, child in skeleton.BONES:
            frames = [t for t in range(pred.shape[1]) if m[b, t, parent] and m[b, t, child]]
            if len(frames) < 2:
                continue
            lengths = [np.linalg.norm(pred[b, t, child] - pred[b, t, parent]) for t in frames]
            variances.append(np.var(lengths, ddof=1))
    return float(np.mean(variances)) if variances else 0.0


NP_REFS = {
    "mpjpe": np_mpjpe,
    "n_mpjpe": np_n_mpjpe,
    "velocity": np_velocity,
    "limb_var": lambda p, t, m=None: np_limb_var(p, m),
}
JITTED = {name: jax.jit(fn) for name, fn in losses._TERM_FNS.items()}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def _poses(seed: int, *shape: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.normal(scale=0.3, size=shape + (3,))
    pred = target + rng.normal(scale=0.05, size=target.shape)
    return pred.astype(np.float32), target.astype(np.float32)


def _masks(seed: int) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    frame = rng.random((B, T)) > 0.4
    frame[:, 0] = True
    joint = rng.random((B, T, J)) > 0.3
    return {"none": None, "frame": frame, "joint": joint}


def _scramble(x: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """Replaces entries where the [B,T,J] boolean ``mask`` is False by wild values."""
    rng = np.random.default_rng(seed)
    wild = rng.normal(scale=1e3, size=x.shape).astype(x.dtype)
    return np.where(mask[..., None], x, wild)


TERMS = list(losses.LOSS_TERMS)
MASK_KINDS = ["none", "frame", "joint"]


WEIGHTS = {"mpjpe": 1.0, "n_mpjpe": 0.5, "velocity": 2.0, "limb_var": 3.0}


def _all_fns():
    fns = dict(losses._TERM_FNS)
    fns["weighted"] = lambda p, t, m: losses.weighted_loss(p, t, m, WEIGHTS)[0]
    return fns


@jax.jit
def _values(pred, target, mask):
    """Every term, the weighted total and its terms dict: one compile per input signature."""
    values = {k: fn(pred, target, mask) for k, fn in _all_fns().items()}
    values["weighted_terms"] = losses.weighted_loss(pred, target, mask, WEIGHTS)[1]
    return values


@jax.jit
def _values_and_grads(pred, target, mask):
    """Every term (and the weighted total) and its gradient w.r.t. ``pred``."""
    fns = _all_fns()
    values = {k: fn(pred, target, mask) for k, fn in fns.items()}
    grads = {k: jax.grad(fn)(pred, target, mask) for k, fn in fns.items()}
    return values, grads


def _check_directional_fd(pred, target, mask, grads, n_dirs=6, eps=1e-6, rtol=1e-6,
                          fd_abs=1e-9):
    """grad . d against the central difference of every term along random unit directions d
    (including single-coordinate ones)."""
    rng = np.random.default_rng(0)
    dirs = [rng.normal(size=pred.shape) for _ in range(n_dirs)]
    for idx in [(0, 0, 0, 0), (0, 1, 12, 2)]:  # the root and an arm joint
        e = np.zeros(pred.shape)
        e[idx] = 1.0
        dirs.append(e)
    for d in dirs:
        d = d / np.linalg.norm(d)
        # Reuses the compiled value-and-grad function (tiny arrays: compiling is the cost).
        plus = _values_and_grads(pred + eps * d, target, mask)[0]
        minus = _values_and_grads(pred - eps * d, target, mask)[0]
        for name, grad in grads.items():
            fd = (float(plus[name]) - float(minus[name])) / (2 * eps)
            an = float(np.sum(np.asarray(grad) * d))
            assert an == pytest.approx(fd, rel=rtol, abs=fd_abs), (name, an, fd)


# ----------------------------------------------------------------------------- all terms
class TestTermsAgainstNumpy:
    @pytest.mark.parametrize("kind", MASK_KINDS)
    def test_matches_reference(self, kind):
        pred, target = _poses(0, B, T, J)
        mask = _masks(1)[kind]
        values = _values(pred, target, mask)
        for name in TERMS:
            want = NP_REFS[name](pred.astype(np.float64), target.astype(np.float64), mask)
            assert values[name].shape == ()
            assert want > 0
            np.testing.assert_allclose(float(values[name]), want, rtol=1e-4, atol=1e-7,
                                       err_msg=f"{name} {kind}")

    @pytest.mark.parametrize("kind", ["frame", "joint"])
    def test_masked_entries_do_not_matter(self, kind):
        pred, target = _poses(2, B, T, J)
        mask = _masks(3)[kind]
        m = _joint_mask(mask, pred.shape)
        wild_pred, wild_target = _scramble(pred, m, 4), _scramble(target, m, 5)
        base = _values(pred, target, mask)
        wild = _values(wild_pred, wild_target, mask)
        unmasked = _values(wild_pred, wild_target, None)
        for name in TERMS + ["weighted"]:
            np.testing.assert_allclose(float(wild[name]), float(base[name]), rtol=1e-5,
                                       atol=1e-8, err_msg=name)
            # Sanity: without the mask the scramble does change the value.
            assert abs(float(unmasked[name]) - float(base[name])) > 1e-2, name

    @pytest.mark.parametrize("mask", [np.zeros((B, T), bool), np.zeros((B, T, J), bool)])
    def test_all_masked_is_zero(self, mask):
        pred, target = _poses(6, B, T, J)
        values = _values(pred, target, mask)
        for name in TERMS + ["weighted"]:
            assert float(values[name]) == 0.0, name

    @pytest.mark.parametrize("name", ["mpjpe", "n_mpjpe", "velocity"])  # limb_var: TestLimbVar
    def test_perfect_prediction_is_zero(self, name):
        _, target = _poses(7, B, T, J)
        assert float(JITTED[name](target, target)) == pytest.approx(0.0, abs=1e-6)

    def test_no_batch_dims_and_extra_batch_dims(self):
        pred, target = _poses(8, 2, 3, T, J)
        nested = _values(pred, target, None)
        flat = _values(pred.reshape(6, T, J, 3), target.reshape(6, T, J, 3), None)
        single = _values(pred[0, 0], target[0, 0], None)
        p1, t1 = pred[0, 0][None].astype(np.float64), target[0, 0][None].astype(np.float64)
        for name in TERMS:
            np.testing.assert_allclose(float(nested[name]), float(flat[name]), rtol=1e-5,
                                       err_msg=name)
            np.testing.assert_allclose(float(single[name]), NP_REFS[name](p1, t1), rtol=1e-4,
                                       atol=1e-7, err_msg=name)

    @pytest.mark.parametrize("name", ["mpjpe", "n_mpjpe", "velocity"])
    def test_shape_mismatch_raises(self, name):
        pred, target = _poses(9, B, T, J)
        with pytest.raises(ValueError):
            JITTED[name](pred, target[:, :-1])

    @pytest.mark.parametrize("name", TERMS)
    def test_bad_inputs_raise(self, name):
        pred, target = _poses(9, B, T, J)
        with pytest.raises(ValueError):
            JITTED[name](pred[..., :2], target[..., :2])
        with pytest.raises(ValueError):
            JITTED[name](pred, target, np.ones((B, T, J - 1)))
        with pytest.raises(ValueError):
            JITTED[name](pred, target, np.ones((B, T + 1)))


class TestShapeChecks:
    """chex checks at the public helpers that have no hand-written check of their own."""

    def test_optimal_scale_rejects_unequal_or_non_3d(self):
        pred, target = _poses(9, B, T, J)
        with pytest.raises(AssertionError, match="assert_equal_shape"):
            losses.optimal_scale(pred, target[:, :-1])
        with pytest.raises(AssertionError, match="assert_shape"):
            losses.optimal_scale(pred[..., :2], target[..., :2])

    def test_limb_lengths_needs_all_17_joints(self):
        pred, _ = _poses(9, B, T, J)
        assert losses.limb_lengths(pred).shape == (B, T, len(skeleton.BONES))
        with pytest.raises(AssertionError, match="assert_shape"):  # a gather would clamp
            losses.limb_lengths(pred[..., :-1, :])
        with pytest.raises(AssertionError, match="assert_shape"):
            jax.jit(losses.limb_var)(pred[..., :-1, :])


# ----------------------------------------------------------------------------- per term
class TestMpjpe:
    def test_hand_computed(self):
        target = np.zeros((1, 2, J, 3), np.float32)
        pred = target.copy()
        pred[0, 0, 3] = (0.3, 0.4, 0.0)  # 0.5 m
        pred[0, 1, 5] = (0.0, 0.6, 0.8)  # 1.0 m
        got = float(JITTED["mpjpe"](pred, target))
        assert got == pytest.approx(1.5 / (2 * J), rel=1e-6)
        # A weighted frame mask counting only frame 1.
        got = float(JITTED["mpjpe"](pred, target, np.array([[0.0, 1.0]])))
        assert got == pytest.approx(1.0 / J, rel=1e-6)


class TestNMpjpe:
    def test_optimal_scale_closed_form(self):
        pred, target = _poses(10, B, T, J)
        got = np.asarray(jax.jit(losses.optimal_scale)(pred, target))
        assert got.shape == (B, T, 1, 1)
        p, y = pred.astype(np.float64), target.astype(np.float64)
        want = np.einsum("btjc,btjc->bt", p, y) / np.einsum("btjc,btjc->bt", p, p)
        np.testing.assert_allclose(got[..., 0, 0], want, rtol=1e-5)

    def test_optimal_scale_minimises(self):
        pred, target = _poses(11, 1, 1, J)
        s = float(jax.jit(losses.optimal_scale)(pred, target)[0, 0, 0, 0])
        sse = lambda k: float(((k * pred - target) ** 2).sum())  # noqa: E731
        assert sse(s) < sse(s * 1.01) and sse(s) < sse(s * 0.99)

    def test_scale_per_sample_and_frame(self):
        _, target = _poses(12, B, T, J)
        factors = np.random.default_rng(13).uniform(0.3, 3.0, size=(B, T, 1, 1))
        pred = (target / factors).astype(np.float32)
        assert float(JITTED["n_mpjpe"](pred, target)) == pytest.approx(0.0, abs=1e-6)
        assert float(JITTED["mpjpe"](pred, target)) > 0.05
        # One scale per sequence (not per frame) cannot undo it.
        seq_scale = np.einsum("btjc,btjc->b", pred, target) / np.einsum("btjc,btjc->b", pred, pred)
        assert np_mpjpe(seq_scale[:, None, None, None] * pred, target) > 0.05

    def test_scale_ignores_masked_joints(self):
        _, target = _poses(14, 1, T, J)
        pred = (target / 2.0).astype(np.float32)
        mask = np.ones((1, T, J), bool)
        mask[0, :, 3] = False
        pred[0, :, 3] = 50.0  # would ruin the fitted scale if it counted
        assert float(JITTED["n_mpjpe"](pred, target, mask)) == pytest.approx(0.0, abs=1e-5)


class TestVelocity:
    def test_constant_offset_is_zero(self):
        _, target = _poses(15, B, T, J)
        pred = target + np.float32(0.7)
        assert float(JITTED["velocity"](pred, target)) == pytest.approx(0.0, abs=1e-6)
        assert float(JITTED["mpjpe"](pred, target)) > 1.0

    def test_single_frame_is_zero(self):
        pred, target = _poses(16, B, 1, J)
        assert float(JITTED["velocity"](pred, target)) == 0.0

    def test_hand_computed(self):
        target = np.zeros((1, 3, J, 3), np.float32)
        pred = target.copy()
        pred[0, 1, 4] = (0.0, 0.3, 0.4)  # joint 4 jumps 0.5 m out and back
        got = float(JITTED["velocity"](pred, target))
        assert got == pytest.approx(2 * 0.5 / (2 * J), rel=1e-6)
        # Frame 2 masked: only the 0->1 difference counts.
        got = float(JITTED["velocity"](pred, target, np.array([[1, 1, 0]])))
        assert got == pytest.approx(0.5 / J, rel=1e-6)


class TestLimbVar:
    @staticmethod
    def _rotating_skeleton(n_frames: int) -> np.ndarray:
        rng = np.random.default_rng(17)
        rest = rng.normal(scale=0.3, size=(J, 3))
        from scipy.spatial.transform import Rotation

        frames = []
        for _ in range(n_frames):
            rot = Rotation.from_rotvec(rng.normal(size=(J, 3))).as_matrix()  # one per bone
            pose = np.zeros((J, 3))
            for j in range(1, J):  # parents precede children
                parent = skeleton.PARENTS[j]
                bone = rest[j] - rest[parent]
                pose[j] = pose[parent] + rot[j] @ bone
            frames.append(pose + rng.normal(size=3))
        return np.stack(frames)[None].astype(np.float32)

    def test_constant_bones_rotating_limbs_is_zero(self):
        pred = self._rotating_skeleton(T)
        assert float(JITTED["mpjpe"](pred[:, 1:], pred[:, :-1])) > 0.05  # it does move
        assert float(JITTED["limb_var"](pred, pred)) == pytest.approx(0.0, abs=1e-9)

    def test_hand_computed_one_bone(self):
        pred = self._rotating_skeleton(3)
        parent, child = skeleton.BONES[15]  # r_elbow -> r_wrist, a leaf: nothing hangs off it
        assert child not in skeleton.PARENTS
        direction = pred[0, :, child] - pred[0, :, parent]
        unit = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
        pred[0, :, child] = pred[0, :, parent] + unit * np.array([[1.0], [2.0], [4.0]])
        var = np.var([1.0, 2.0, 4.0], ddof=1)
        assert var == pytest.approx(7 / 3)  # unbiased: sum of squares 14/3 over n-1 = 2
        got = float(JITTED["limb_var"](pred, pred))
        assert got == pytest.approx(var / skeleton.NUM_BONES, rel=1e-4)
        # Masking the middle frame leaves lengths 1 and 4: variance 4.5.
        got = float(JITTED["limb_var"](pred, pred, np.array([[1, 0, 1]])))
        assert got == pytest.approx(4.5 / skeleton.NUM_BONES, rel=1e-4)

    def test_target_is_ignored(self):
        pred, target = _poses(18, B, T, J)
        a = float(JITTED["limb_var"](pred, target))
        b = float(JITTED["limb_var"](pred, target * 5 + 1))
        c = float(jax.jit(lambda p: losses.limb_var(p))(pred))
        assert a == b == pytest.approx(c)


# ----------------------------------------------------------------------------- gradients
class TestGradients:
    @pytest.mark.parametrize("kind", MASK_KINDS)
    def test_matches_finite_differences(self, x64, kind):
        rng = np.random.default_rng(19)
        target = rng.normal(scale=0.3, size=(1, 3, J, 3))
        pred = target + rng.normal(scale=0.05, size=target.shape)
        mask = {"none": None, "frame": np.array([[1.0, 1.0, 0.0]]),
                "joint": rng.random((1, 3, J)) > 0.3}[kind]
        _, grads = _values_and_grads(pred, target, mask)
        for name, grad in grads.items():
            assert np.asarray(grad).dtype == np.float64
            assert np.abs(grad).max() > 1e-4, name
        _check_directional_fd(pred, target, mask, grads)

    def test_all_masked_gradient_is_zero(self, x64):
        rng = np.random.default_rng(22)
        pred = rng.normal(size=(1, 3, J, 3))
        _, grads = _values_and_grads(pred, pred + 1.0, np.zeros((1, 3, J), bool))
        for name in TERMS + ["weighted"]:
            assert np.all(np.asarray(grads[name]) == 0.0), name

    def test_at_pred_equals_target(self, x64):
        """Finite (sub)gradients where a naive norm's are NaN; zero at the minimum, and
        central differences agree (every |.| kink is symmetric there)."""
        target = np.random.default_rng(21).normal(scale=0.3, size=(1, 3, J, 3))
        target[:, :, 7] = target[:, :, 0]  # a zero-length bone too
        _, grads = _values_and_grads(target, target, None)
        for name in TERMS + ["weighted"]:
            grad = np.asarray(grads[name])
            assert np.all(np.isfinite(grad)), name
            if name not in ("limb_var", "weighted"):
                np.testing.assert_allclose(grad, 0.0, atol=1e-12, err_msg=name)
        naive = jax.grad(lambda p: jnp.linalg.norm(p - target, axis=-1).mean())(target)
        assert np.isnan(np.asarray(naive)).any()
        # n_mpjpe's residual is only symmetric to first order: O(eps) central differences.
        _check_directional_fd(target, target, None, grads, fd_abs=1e-7)


# ----------------------------------------------------------------------------- weighted_loss
class TestWeightedLoss:
    @pytest.mark.parametrize("kind", MASK_KINDS)
    def test_total_is_weighted_sum(self, kind):
        pred, target = _poses(22, B, T, J)
        mask = _masks(23)[kind]
        values = _values(pred, target, mask)
        total, terms = values["weighted"], values["weighted_terms"]
        assert set(terms) == set(losses.LOSS_TERMS)
        want = sum(w * NP_REFS[k](pred.astype(np.float64), target.astype(np.float64), mask)
                   for k, w in WEIGHTS.items())
        np.testing.assert_allclose(float(total), want, rtol=1e-4)
        np.testing.assert_allclose(
            float(total), sum(WEIGHTS[k] * float(v) for k, v in terms.items()), rtol=1e-6)
        for k, v in terms.items():
            np.testing.assert_allclose(float(v), float(values[k]), rtol=1e-6)

    def test_zero_weights_skip_terms(self, monkeypatch):
        pred, target = _poses(24, B, T, J)
        weights = {"mpjpe": 1.0, "n_mpjpe": 0.0, "velocity": 0.0, "limb_var": 0.5}
        called = []

        def spy(name):
            real = losses._TERM_FNS[name]
            return lambda *a: called.append(name) or real(*a)

        for name in losses.LOSS_TERMS:
            monkeypatch.setitem(losses._TERM_FNS, name, spy(name))
        total, terms = jax.jit(lambda p, t: losses.weighted_loss(p, t, None, weights))(
            pred, target)
        assert set(terms) == {"mpjpe", "limb_var"}
        assert sorted(called) == ["limb_var", "mpjpe"]
        want = np_mpjpe(pred, target) + 0.5 * np_limb_var(pred.astype(np.float64))
        np.testing.assert_allclose(float(total), want, rtol=1e-4)

    def test_unknown_term_raises(self):
        pred, target = _poses(25, B, T, J)
        with pytest.raises(ValueError, match="unknown"):
            losses.weighted_loss(pred, target, None, {"mpjpe": 1.0, "bone": 1.0})
        with pytest.raises(ValueError, match="unknown"):
            losses.weighted_loss(pred, target, None, {"mpjpe": 1.0, "bone": 0.0})

    def test_all_zero_weights_raise(self):
        pred, target = _poses(26, B, T, J)
        with pytest.raises(ValueError):
            losses.weighted_loss(pred, target, None, {"mpjpe": 0.0, "velocity": 0.0})
        with pytest.raises(ValueError):
            losses.weighted_loss(pred, target, None, {})

    def test_shape_mismatch_raises(self):
        pred, target = _poses(27, B, T, J)
        with pytest.raises(ValueError):
            jax.jit(lambda p, t: losses.weighted_loss(p, t, None, {"mpjpe": 1.0}))(
                pred, target[:, :, :-1])
        with pytest.raises(ValueError):  # limb_var alone ignores target, still checked
            jax.jit(lambda p, t: losses.weighted_loss(p, t, None, {"limb_var": 1.0}))(
                pred, target[:1])
