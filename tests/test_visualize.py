"""scripts/visualize.py on synthetic results (numpy + matplotlib only; no JAX)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stride_jax import skeleton

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "visualize.py"


@pytest.fixture(scope="module")
def visualize():
    spec = importlib.util.spec_from_file_location("visualize_script", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# T-pose offsets from each joint's parent, metres, camera axes (x right, y down, z forward).
_OFFSETS = {1: (-0.12, 0, 0), 2: (0, 0.45, 0), 3: (0, 0.42, 0),
            4: (0.12, 0, 0), 5: (0, 0.45, 0), 6: (0, 0.42, 0),
            7: (0, -0.23, 0), 8: (0, -0.25, 0), 9: (0, -0.10, 0), 10: (0, -0.13, 0),
            11: (0.17, 0, 0), 12: (0.28, 0, 0), 13: (0.25, 0, 0),
            14: (-0.17, 0, 0), 15: (-0.28, 0, 0), 16: (-0.25, 0, 0)}


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def walking_sequence(t: int = 60, fps: float = 30.0) -> np.ndarray:
    """A T-pose (forward kinematics over skeleton.PARENTS) walking with sine limb swings."""
    poses = np.zeros((t, skeleton.NUM_JOINTS, 3))
    for f in range(t):
        phase = 2 * np.pi * 1.0 * f / fps
        swing = 0.5 * np.sin(phase)
        local = {j: np.eye(3) for j in range(skeleton.NUM_JOINTS)}
        local[1], local[4] = _rot_x(swing), _rot_x(-swing)  # hips
        local[2] = _rot_x(-0.4 * max(0.0, np.sin(phase + 1.2)))  # knees bend backwards
        local[5] = _rot_x(-0.4 * max(0.0, np.sin(phase + 1.2 + np.pi)))
        local[11] = _rot_z(1.3) @ _rot_x(0.4 * np.sin(phase))  # arms down, swinging
        local[14] = _rot_z(-1.3) @ _rot_x(-0.4 * np.sin(phase))
        local[12], local[15] = _rot_z(0.3), _rot_z(-0.3)
        glob = [None] * skeleton.NUM_JOINTS
        glob[0] = np.eye(3)
        poses[f, 0] = (0.3 * np.sin(phase / 4), 0.02 * np.sin(2 * phase), 4.0 - 0.01 * f)
        for j in range(1, skeleton.NUM_JOINTS):
            p = skeleton.PARENTS[j]
            poses[f, j] = poses[f, p] + glob[p] @ np.asarray(_OFFSETS[j], float)
            glob[j] = glob[p] @ local[j]
    return poses.astype(np.float32)


def make_results(path: Path, *, t: int = 60, span: tuple[int, int] = (20, 38),
                 ground_truth: bool = True) -> Path:
    """Writes a demo-style results npz (K=1) with one undetected span; or, with
    ``ground_truth=False``, an align-CLI-style per-track file (no clean/observed)."""
    rng = np.random.default_rng(0)
    clean = walking_sequence(t)
    valid = np.ones(t, bool)
    valid[span[0]:span[1]] = False
    observed = clean + rng.normal(0, 0.01, clean.shape).astype(np.float32)
    observed[~valid] = 0.0
    pseudo = observed.copy()
    a, b = span[0] - 1, span[1]
    w = ((np.arange(t) - a) / (b - a))[:, None, None]
    pseudo[~valid] = ((1 - w) * observed[a] + w * observed[b])[~valid]
    refined = clean + rng.normal(0, 0.006, clean.shape).astype(np.float32)
    refined[~valid] += 0.02
    loss = (0.05 * np.exp(-np.arange(30) / 8) + 0.004).astype(np.float32)
    if ground_truth:
        arrays = dict(clean=clean[None], observed=observed[None], valid=valid[None],
                      pseudo=pseudo[None], refined=refined[None], loss_curve=loss[None],
                      fps=np.float32(30))
    else:
        arrays = dict(refined=refined, pseudo=pseudo, valid=valid, loss_curve=loss,
                      ok=np.bool_(True), error=np.str_(""), track=np.str_(""))
    np.savez(path, **arrays)
    return path


def _check_image(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as im:
        im.load()
        assert im.size[0] > 0 and im.size[1] > 0


def test_demo_results_all_outputs(visualize, tmp_path, capsys):
    results = make_results(tmp_path / "demo_results.npz")
    out = tmp_path / "plots"
    assert visualize.main([str(results), "--out", str(out), "--fps", "15"]) == 0
    printed = capsys.readouterr().out
    names = ["skeleton.png", "errors.png", "anim.gif", "loss.png"]
    for name in names:
        path = out / f"demo_results_0_{name}"
        _check_image(path)
        assert str(path) in printed
    gif = out / "demo_results_0_anim.gif"
    assert gif.stat().st_size < 2 * 1024 * 1024
    with Image.open(gif) as im:
        assert getattr(im, "n_frames", 1) > 10


def test_align_output_without_ground_truth(visualize, tmp_path, capsys):
    results = make_results(tmp_path / "clip.npz", ground_truth=False)
    assert visualize.main([str(results), "--no-gif"]) == 0
    printed = capsys.readouterr().out
    assert "skipping the error curves" in printed
    _check_image(tmp_path / "clip_0_skeleton.png")
    _check_image(tmp_path / "clip_0_loss.png")
    assert not (tmp_path / "clip_0_errors.png").exists()
    assert not (tmp_path / "clip_0_anim.gif").exists()


def test_bad_inputs_exit_2(visualize, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, refined=np.zeros((1, 5, 17, 3)), valid=np.ones((1, 5), bool))
    assert visualize.main([str(bad)]) == 2
    assert "pseudo" in capsys.readouterr().err
    assert visualize.main([str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    good = make_results(tmp_path / "r.npz")
    assert visualize.main([str(good), "--index", "3", "--no-gif"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_helpers(visualize):
    valid = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 1], bool)
    assert visualize.invalid_spans(valid) == [(1, 3), (5, 9)]
    frames = visualize.sample_frames(valid, 6)
    assert frames[0] == 4 and frames[-1] == 9 and len(frames) == 6
    assert len(visualize.sample_frames(np.ones(4, bool), 6)) == 4
    gt = walking_sequence(5)
    assert np.allclose(visualize.mpjpe_per_frame(gt + 1.0, gt), 0.0, atol=1e-3)
