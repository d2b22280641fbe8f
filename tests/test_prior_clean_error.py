"""scripts/prior_clean_error.py: the per-split clean-input error against hand-made answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prior_clean_error.py"
spec = importlib.util.spec_from_file_location("prior_clean_error", SCRIPT)
pce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pce)

NAMES = ("a@0", "a@243", "b@0")


def _poses(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, (3, 10, 17, 3)).astype(np.float32)


def test_identity_scores_zero():
    r = pce.clean_errors(lambda x: x, _poses(), NAMES)
    assert r["mpjpe"] == pytest.approx(0.0, abs=1e-4)
    assert r["pa_mpjpe"] == pytest.approx(0.0, abs=1e-2)
    assert list(r["per_sequence"]) == ["a", "b"]
    assert all(v == pytest.approx(0.0, abs=1e-4) for v in r["per_group"].values())


def test_known_offsets_per_group_and_sequence():
    """3 cm along x on the wrists and ankles only, and only in sequence b's window."""
    ends = list(pce.GROUPS["ankles+wrists"])

    def predict(x):
        out = x.copy()
        out[2][..., ends, 0] += 0.03
        return out

    r = pce.clean_errors(predict, _poses(1), NAMES)
    assert r["per_sequence"]["a"] == pytest.approx(0.0, abs=1e-4)
    assert r["per_sequence"]["b"] == pytest.approx(30.0 * 4 / 17, rel=1e-4)
    assert r["mpjpe"] == pytest.approx(30.0 * 4 / 17 / 3, rel=1e-4)
    assert r["per_group"]["ankles+wrists"] == pytest.approx(10.0, rel=1e-4)
    assert r["per_group"]["torso+head"] == pytest.approx(0.0, abs=1e-4)
    # A pure translation of the whole pose is removed by pelvis alignment.
    shifted = pce.clean_errors(lambda x: x + 0.5, _poses(2), NAMES)
    assert shifted["mpjpe"] == pytest.approx(0.0, abs=1e-3)


def test_groups_cover_every_joint_once():
    joints = sorted(j for g in pce.GROUPS.values() for j in g)
    assert joints == list(range(17))


def test_wrong_output_shape_is_named():
    with pytest.raises(ValueError, match="predict returned"):
        pce.clean_errors(lambda x: x[:, :5], _poses(), NAMES)
