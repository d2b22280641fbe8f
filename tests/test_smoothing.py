"""TTT settings chosen on validation: Savitzky-Golay smoothing of the targets (equals
SciPy, handles short windows) and the ablation rows that follow the loss weights."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.signal import savgol_filter

from configs import cpu
from stride_jax import smoothing, ttt
from stride_jax.model import build_model, init_params


def test_equals_scipy_savgol_on_the_real_frames():
    x = np.random.default_rng(0).normal(size=(3, 40, 17, 3)).astype(np.float32)
    mask = np.arange(40)[None] < np.array([40, 23, 10])[:, None]  # padding at the end
    out = np.asarray(smoothing.savgol(x, mask, 15))
    np.testing.assert_allclose(out[0], savgol_filter(x[0], 15, 2, axis=0), atol=1e-4)
    np.testing.assert_allclose(out[1, :23], savgol_filter(x[1, :23], 15, 2, axis=0), atol=1e-4)
    # 10 real frames: the window shrinks to 9
    np.testing.assert_allclose(out[2, :10], savgol_filter(x[2, :10], 9, 2, axis=0), atol=1e-4)
    np.testing.assert_array_equal(out[1, 23:], x[1, 23:])  # padding passes through
    np.testing.assert_allclose(np.asarray(smoothing.savgol(x, mask, 5, polyorder=3))[0],
                               savgol_filter(x[0], 5, 3, axis=0), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(smoothing.savgol(x, mask, 0)), x)  # off
    assert smoothing.effective_window(15, 2) == 0  # nothing longer than the order fits


@pytest.mark.parametrize("bad", [4, 1, -3])
def test_bad_window_is_named(bad):
    with pytest.raises(ValueError, match=f"smoothing window {bad} must be 0"):
        smoothing.check_window(bad)


def test_ttt_fits_the_smoothed_targets():
    """With ``target_smoothing`` the first loss is the loss against the smoothed poses:
    on a noisy input it differs from the raw-target loss."""
    config = cpu.get_config("runlocal")
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 27, dtype=np.float32)[:, None, None]
    poses = 0.2 * np.sin(6 * t + np.arange(17)[None, :, None] / 3) + rng.normal(
        0, 0.03, (27, 17, 3)).astype(np.float32)
    args = (poses[None].astype(np.float32), np.ones((1, 27), np.float32),
            np.ones((1, 27), bool), jax.random.key(0))
    curves = {}
    for window in (0, 9):
        cfg = config.ttt.copy_and_resolve_references()
        cfg.epochs, cfg.lr, cfg.target_smoothing = 1, 0.0, window
        cfg.smoothing_candidates = ()
        curves[window] = float(jax.jit(ttt.make_run_one_video(model, cfg))(params, *args)[1][0])
    assert abs(curves[9] - curves[0]) > 1e-4
    cfg.target_smoothing = 8
    with pytest.raises(ValueError, match="smoothing window 8"):
        ttt.make_run_one_video(model, cfg)


def test_ablation_leaves_out_rows_of_switched_off_terms():
    from stride_jax.evaluation import ablation_methods

    paper = dict(mpjpe=1.0, n_mpjpe=0.5, velocity=20.0, limb_var=200.0)
    assert ablation_methods(paper) == ["+mpjpe", "+velocity", "+limb_var", "stride"]
    assert ablation_methods({**paper, "velocity": 0.0}) == ["+mpjpe", "+limb_var", "stride"]
