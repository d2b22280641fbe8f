"""Savitzky-Golay smoothing of the TTT targets: equals SciPy, handles short windows."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.signal import savgol_filter

from configs import cpu
from stride_jax import smoothing, ttt
from stride_jax.model import build_model, init_params


def test_equals_scipy_savgol_along_time():
    x = np.random.default_rng(0).normal(size=(2, 40, 17, 3)).astype(np.float32)
    out = np.asarray(smoothing.savgol(x, 15))
    np.testing.assert_allclose(out, savgol_filter(x, 15, 2, axis=1), atol=1e-5)
    short = np.asarray(smoothing.savgol(x[:, :10], 15))  # 10 frames: the window becomes 9
    np.testing.assert_allclose(short, savgol_filter(x[:, :10], 9, 2, axis=1), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(smoothing.savgol(x, 0)), x)  # off
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
        curves[window] = float(jax.jit(ttt.make_run_one_video(model, cfg))(params, *args)[1][0])
    assert abs(curves[9] - curves[0]) > 1e-4
    cfg.target_smoothing = 8
    with pytest.raises(ValueError, match="smoothing window 8"):
        ttt.make_run_one_video(model, cfg)
