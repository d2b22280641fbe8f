"""TTT options: the cosine schedule, per-window smoothing choice, time-reversal averaging,
and config overrides (stride_jax.config_util.with_overrides)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.signal import savgol_filter

from configs import cpu
from stride_jax import train_step, ttt
from stride_jax.config_util import with_overrides
from stride_jax.model import build_model, init_params


def _ttt(**overrides) -> ml_collections.ConfigDict:
    return with_overrides(cpu.get_config().ttt, overrides)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    sched = ttt.lr_schedule(_ttt(schedule="cosine", warmup_epochs=2, epochs=10, lr=1e-3))
    lrs = np.array([float(sched(i)) for i in range(11)])
    np.testing.assert_allclose(lrs[:3], [0.0, 5e-4, 1e-3], rtol=1e-6)
    mid = 2 + 4  # halfway through the decay: half the peak
    assert lrs[mid] == pytest.approx(5e-4, rel=1e-5)
    assert lrs[10] == pytest.approx(0.0, abs=1e-9) and np.all(np.diff(lrs[2:]) < 0)
    exp = ttt.lr_schedule(_ttt(lr=1e-3, lr_decay=0.9))
    np.testing.assert_allclose([float(exp(i)) for i in range(3)], [1e-3, 9e-4, 8.1e-4],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        ttt.lr_schedule(_ttt(schedule="linear"))
    with pytest.raises(ValueError, match="warmup_epochs"):
        ttt.lr_schedule(_ttt(schedule="cosine", warmup_epochs=10, epochs=10))


def test_smoothing_candidates_exclude_a_fixed_window():
    assert ttt.smoothing_choice(_ttt(target_smoothing=0, smoothing_candidates=(0, 9))) == (
        0, (0, 9))
    with pytest.raises(ValueError, match="set one"):
        ttt.smoothing_choice(_ttt(target_smoothing=15, smoothing_candidates=(0, 9)))
    with pytest.raises(ValueError, match="odd"):
        ttt.smoothing_choice(_ttt(target_smoothing=0, smoothing_candidates=(0, 8)))


def test_pick_smoothing_takes_the_window_closest_to_the_reference():
    rng = np.random.default_rng(0)
    t = np.arange(40)[:, None, None] / 40
    slow = np.sin(2 * t + np.zeros((1, 17, 3)))
    noisy = (slow + rng.normal(0, 0.05, slow.shape)).astype(np.float32)
    poses = jnp.asarray(np.stack([noisy, noisy]))  # two windows
    mask = jnp.ones((2, 40), bool)
    detected = jnp.ones((2, 40, 17), bool)
    smooth9 = savgol_filter(noisy, 9, 2, axis=0, mode="interp")
    reference = jnp.asarray(np.stack([noisy, smooth9]))  # window 0 wants raw, 1 wants 9
    out = np.asarray(ttt.pick_smoothing(poses, mask, detected, reference, (0, 9, 15)))
    np.testing.assert_allclose(out[0], noisy, atol=1e-6)
    np.testing.assert_allclose(out[1], smooth9, atol=1e-5)


def test_reverse_average_is_the_mean_with_the_reversed_real_frames():
    config = cpu.get_config("runlocal")
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 27, 17, 3))
    mask = jnp.arange(27)[None] < jnp.array([[20], [27]])
    rev = train_step.reverse_real_frames(x, mask)
    np.testing.assert_array_equal(np.asarray(rev[0, :20]), np.asarray(x[0, 19::-1]))
    np.testing.assert_array_equal(np.asarray(rev[0, 20:]), np.asarray(x[0, 20:]))
    np.testing.assert_array_equal(np.asarray(train_step.reverse_real_frames(rev, mask)), x)
    both = train_step.predict(model, params, x, frame_mask=mask, reverse_average=True)
    fwd = model.apply({"params": params}, x, frame_mask=mask)
    back = model.apply({"params": params}, rev, frame_mask=mask)
    want = 0.5 * (fwd + train_step.reverse_real_frames(back, mask))
    np.testing.assert_allclose(np.asarray(both)[0, :20], np.asarray(want)[0, :20], atol=1e-5)
    np.testing.assert_allclose(np.asarray(both)[1], np.asarray(want)[1], atol=1e-5)
    assert not np.allclose(np.asarray(both), np.asarray(fwd), atol=1e-4)


def test_overrides_name_unknown_settings():
    out = with_overrides(cpu.get_config().ttt, {"epochs": 3, "loss": {"mpjpe": 2.0}})
    assert out.epochs == 3 and out.loss.mpjpe == 2.0 and out.loss.limb_var == 50.0
    with pytest.raises(KeyError, match="epoch"):
        with_overrides(cpu.get_config().ttt, {"epoch": 3})
    with pytest.raises(KeyError, match="mpjp"):
        with_overrides(cpu.get_config().ttt, {"loss": {"mpjp": 1.0}})


def test_detection_ramp_fades_over_the_frames_next_to_a_gap():
    detected = np.ones((1, 20, 2), bool)
    detected[0, 8:11, 0] = False
    mask = np.arange(20)[None] < 17
    ramp = np.asarray(ttt.detection_ramp(jnp.asarray(detected), jnp.asarray(mask), 4))
    np.testing.assert_allclose(ramp[0, :, 0], [1, 1, 1, 1, 1, .75, .5, .25, 0, 0, 0, .25, .5,
                                               .75, 1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(ramp[0, :, 1], 1.0)  # the other joint has no gap
    with pytest.raises(ValueError, match="gap_output"):
        ttt.gap_output_ramp(_ttt(gap_output="both"))
    with pytest.raises(ValueError, match="gap_ramp"):
        ttt.gap_output_ramp(_ttt(gap_output="prior", gap_ramp=0))
    assert ttt.gap_output_ramp(_ttt(gap_output="ttt", gap_ramp=0)) == 0


def test_ttt_presets_are_applied_in_full_and_unknown_ones_named():
    assert cpu.get_config().ttt.epochs == 6
    assert cpu.get_config("runlocal").ttt.epochs == 2
    prior = cpu.get_config("runlocal,ttt=prior").ttt  # the preset wins over runlocal
    assert prior.epochs == 0 and prior.window == 27
    paper = cpu.get_config("ttt=paper").ttt
    assert (paper.epochs, paper.lr, paper.gap_output, paper.loss.velocity) == (
        30, 2e-4, "ttt", 20.0)
    assert paper.loss.limb_var == 200.0  # merged term by term
    with pytest.raises(ValueError, match="ttt='fastest'"):
        cpu.get_config("ttt=fastest")


def test_adam_b1_reaches_the_optimizer():
    """Two AdamW steps of ttt.make_optimizer against a NumPy AdamW with that b1."""
    cfg = _ttt(adam_b1=0.5, lr=1e-2, lr_decay=1.0, weight_decay=0.1)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = [np.array([0.3, -0.1, 2.0]), np.array([-0.2, 0.4, 1.0])]
    opt = ttt.make_optimizer(cfg)
    state, p = opt.init(params), params
    w, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t, g in enumerate(grads, start=1):
        updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, p)
        p = {"w": p["w"] + updates["w"]}
        m, v = 0.5 * m + 0.5 * g, 0.999 * v + 0.001 * g * g
        step = (m / (1 - 0.5 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        w = w - 1e-2 * (step + 0.1 * w)
    np.testing.assert_allclose(np.asarray(p["w"]), w, rtol=1e-5)
    with pytest.raises(ValueError, match="b1"):
        ttt.make_optimizer(_ttt(adam_b1=1.0))
