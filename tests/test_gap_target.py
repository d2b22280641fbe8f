"""The prior's own in-fill on undetected joints: as their pseudo-labels
(``ttt.gap_target = "prior"``) and as their output (``ttt.gap_output = "prior"``)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import cpu
from stride_jax import model_input, train_step, ttt
from stride_jax.config_util import with_overrides
from stride_jax.model import build_model, init_params

W, GAP = 27, slice(8, 19)


@pytest.fixture(scope="module")
def setup():
    config = cpu.get_config("runlocal")
    config.model.dim_in = 4
    model = build_model(config.model)
    params = init_params(model, jax.random.key(3))
    params = jax.tree_util.tree_map(  # a trained-looking prior: every weight matters
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, W, dtype=np.float32)[:, None, None]
    poses = (0.2 * np.sin(5 * t + np.arange(17)[None, :, None] / 4)
             + rng.normal(0, 0.02, (W, 17, 3))).astype(np.float32)
    detected = np.ones(W, bool)
    detected[GAP] = False
    inputs = np.asarray(model_input.make_input(poses[None], detected[None], 4))  # [1,W,J,4]
    return config, model, params, inputs, detected


def _first_loss(config, model, params, inputs, weights, gap_target):
    cfg = config.ttt.copy_and_resolve_references()
    cfg.update(epochs=1, lr=0.0, target_smoothing=0, smoothing_candidates=(),
               gap_target=gap_target, output_blend=0.0,
               loss=dict(mpjpe=1.0, n_mpjpe=0.0, velocity=0.0, limb_var=0.0))
    run = jax.jit(ttt.make_run_one_video(model, cfg))
    pred, curve, ok = run(params, inputs, weights, np.ones((1, W), bool), jax.random.key(0))
    assert bool(ok)
    return float(curve[0]), np.asarray(pred)


def test_prior_gap_targets_are_the_prior_prediction(setup):
    config, model, params, inputs, detected = setup
    before = np.asarray(model.apply({"params": params}, inputs,
                                    frame_mask=np.ones((1, W), bool)))
    poses = inputs[..., :3]
    weights = np.ones((1, W), np.float32)
    # Independent reference: MPJPE against detections on detected frames and against the
    # prior's own prediction on the gap (where that error is 0).
    err = np.linalg.norm(before - poses, axis=-1)[0]  # [W, J]
    ref_prior = err[detected].sum() / (W * 17)
    ref_interp = err.mean()
    loss_prior, pred = _first_loss(config, model, params, inputs, weights, "prior")
    loss_interp, _ = _first_loss(config, model, params, inputs, weights, "interp")
    np.testing.assert_allclose(loss_prior, ref_prior, rtol=1e-5)
    np.testing.assert_allclose(loss_interp, ref_interp, rtol=1e-5)
    assert loss_interp - loss_prior > 1e-3
    np.testing.assert_allclose(pred, before, atol=1e-5)  # lr 0: the prior's prediction

    gap_only = (~detected).astype(np.float32)[None]  # only the gap counts: nothing to fit
    assert _first_loss(config, model, params, inputs, gap_only, "prior")[0] < 1e-7


def test_bad_gap_target_is_named(setup):
    config, model, _, _, _ = setup
    cfg = config.ttt.copy_and_resolve_references()
    cfg.gap_target = "pose"
    with pytest.raises(ValueError, match="gap_target='pose': choose one of"):
        ttt.make_run_one_video(model, cfg)
    cfg.gap_target = "prior"
    three = build_model({**config.model.to_dict(), "dim_in": 3})
    with pytest.raises(ValueError, match="needs the detection channel"):
        ttt.make_run_one_video(three, cfg)
    cfg.gap_target = "auto"  # the default: the prior's in-fill when it has the channel
    assert ttt.gap_targets_from_prior(model, cfg)
    assert not ttt.gap_targets_from_prior(three, cfg)
    assert cpu.get_config().ttt.gap_target == "auto"


def test_gap_output_prior_keeps_the_prior_in_fill_on_undetected_joints(setup):
    config, model, params, inputs, detected = setup
    weights = np.where(detected, 1.0, 0.3)[None].astype(np.float32)
    mask = np.ones((1, W), bool)

    def run(**o):
        cfg = with_overrides(config.ttt, dict(epochs=3, lr=1e-3, output_blend=0.0, **o))
        pred, _, ok = jax.jit(ttt.make_run_one_video(model, cfg))(
            params, inputs, weights, mask, jax.random.key(0))
        assert bool(ok)
        return np.asarray(pred)[0]

    tuned = run(gap_output="ttt")
    kept = run(gap_output="prior", gap_ramp=3)
    prior = np.asarray(train_step.predict(model, params, inputs, frame_mask=mask))[0]
    np.testing.assert_allclose(kept[GAP], prior[GAP], atol=1e-6)
    assert not np.allclose(tuned[GAP], prior[GAP], atol=1e-3)  # TTT moved the gap
    far = np.r_[0:GAP.start - 2, GAP.stop + 2:W]  # 3 frames or more from the gap
    np.testing.assert_allclose(kept[far], tuned[far], atol=1e-6)
    edge = GAP.start - 2  # 2 frames from the gap: 2/3 fine-tuned, 1/3 the prior
    np.testing.assert_allclose(kept[edge], (2 * tuned[edge] + prior[edge]) / 3, atol=1e-5)


@pytest.mark.parametrize("epochs", [0, 1])
def test_output_blend_moves_detected_joints_toward_their_detections(setup, epochs):
    config, model, params, inputs, detected = setup
    weights = np.where(detected, 1.0, 0.3)[None].astype(np.float32)
    mask = np.ones((1, W), bool)
    cfg = with_overrides(config.ttt, dict(epochs=epochs, lr=0.0, output_blend=0.25,
                                          target_smoothing=0, smoothing_candidates=(),
                                          gap_output="prior", gap_ramp=4))
    pred, curve, ok = jax.jit(ttt.make_run_one_video(model, cfg))(
        params, inputs, weights, mask, jax.random.key(0))
    assert bool(ok) and curve.shape == (epochs,)
    pred = np.asarray(pred)[0]
    prior = np.asarray(train_step.predict(model, params, inputs, frame_mask=mask))[0]
    poses = inputs[0, ..., :3]
    far = np.r_[0:GAP.start - 3, GAP.stop + 3:W]  # 4 frames or more from the gap
    np.testing.assert_allclose(pred[far], 0.75 * prior[far] + 0.25 * poses[far], atol=1e-5)
    np.testing.assert_allclose(pred[GAP], prior[GAP], atol=1e-6)  # gaps untouched
    edge = GAP.start - 2  # 2 frames from the gap: half the blend
    np.testing.assert_allclose(pred[edge], 0.875 * prior[edge] + 0.125 * poses[edge],
                               atol=1e-5)


def test_output_blend_out_of_range_is_named(setup):
    config, model, _, _, _ = setup
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"ttt.output_blend=.* must be in \[0, 1\)"):
            ttt.make_run_one_video(model, with_overrides(config.ttt, dict(output_blend=bad)))
