"""The campaign's validation curve: the committed log parses and plots; a bad row is named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("plot_campaign", REPO / "scripts/plot_campaign.py")
plot_campaign = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_campaign)


def test_committed_log_plots(tmp_path):
    rows = plot_campaign.read_rows(REPO / "stride_jax/assets/campaign_validation.csv")
    steps = [r["total_steps"] for r in rows]
    assert steps == sorted(steps)
    # the last shipped row is the shipped prior, with its validation numbers
    meta = json.loads((REPO / "stride_jax/assets/prior_cpu/prior.json").read_text())["meta"]
    shipped = [r for r in rows if r["shipped"] == "yes"][-1]
    assert shipped["total_steps"] == meta["total_steps"]
    assert shipped["clean_input"] == pytest.approx(meta["validation"]["val_mpjpe_clean_input"],
                                                   abs=0.05)
    assert shipped["occluded_frames"] == pytest.approx(
        meta["validation"]["val_mpjpe_occluded_frames"], abs=0.05)
    out = plot_campaign.plot(rows, tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_value_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("total_steps,occluded_input,occluded_frames,clean_input,shipped\n"
                   "700,87.2,,61.2,yes\n")
    with pytest.raises(ValueError, match="line 2: missing occluded_frames"):
        plot_campaign.read_rows(bad)
