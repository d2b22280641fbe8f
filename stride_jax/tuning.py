"""Comparing test-time-training settings on held-out videos, on both evaluation views.

Shared by ``scripts/tune_ttt.py`` (accuracy of TTT variants) and
``scripts/bench_time_to_accuracy.py`` (accuracy against seconds per video).  Each variant
is a set of overrides of a config's ``ttt`` section
(:func:`stride_jax.config_util.with_overrides`: ``loss`` merged term by term).  The
videos are those of :func:`stride_jax.evalset.make_videos` for every (seed, view); linear
interpolation and the Savitzky-Golay smoother are scored beside the variants.  Choose
settings on the validation split, never on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from stride_jax.aligner import align_videos
from stride_jax.checkpoint import Prior
from stride_jax.config_util import with_overrides
from stride_jax.evalset import VIEWS, make_videos
from stride_jax.evaluation import baselines, score_videos
from stride_jax.rotation_infill import pseudo_labels

KEYS = ("mpjpe", "mpjpe_occ", "mpjpe_vis", "pa_mpjpe", "accel")
BASELINES = ("interpolation", "savgol", "rotation_infill")


def sweep(variants: Mapping[str, Mapping], prior: Prior, config: ml_collections.ConfigDict,
          sequences: list, *, seeds: Sequence[int], views: Sequence[str] = VIEWS,
          max_videos: int = 0, video_len: int = 243,
          on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Aligns the videos of every (seed, view) with every variant.

    Returns one row per (seed, view, method): ``seed``, ``view``, ``method``, ``videos``,
    ``run_s`` and ``compile_s`` (TTT seconds, summed over the videos; 0 for the
    baselines) and the scores of :data:`KEYS` (mm).  ``on_row`` sees each row as it is made.
    """
    for view in views:
        if view not in VIEWS:
            raise ValueError(f"view={view!r}: choose from {VIEWS}")
    settings = {name: with_overrides(config.ttt, o) for name, o in variants.items()}
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for seed in seeds:
        for view in views:
            videos, truths = make_videos(sequences, video_len=video_len, fps=config.fps,
                                         seed=seed, simulator=dict(config.simulator),
                                         max_videos=max_videos, view=view)
            base = dict(seed=seed, view=view, videos=len(videos))
            for name, ttt in settings.items():
                t0 = time.perf_counter()
                out, timing = align_videos(videos, prior, ttt, seed=seed,
                                           max_batch=config.ttt.max_batch)
                scores = score_videos([r.refined for r in out], truths, videos)
                add({**base, "method": name, "run_s": timing.run_s,
                     "compile_s": timing.compile_s, "wall_s": time.perf_counter() - t0,
                     **scores})
            rotation = [pseudo_labels(v.poses, v.valid, "rotation") for v in videos]
            for name, preds in {**baselines(videos), "rotation_infill": rotation}.items():
                add({**base, "method": name, "run_s": 0.0, "compile_s": 0.0, "wall_s": 0.0,
                     **score_videos(preds, truths, videos)})
    return rows


def summarize(rows: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {view or "mean": {key: value}}}``: per view the mean over seeds of each
    score and ``s_per_video`` (TTT run seconds per video); ``"mean"`` averages the views
    (equal weight) and adds ``occ_vs_interp``, its occluded-frame MPJPE over
    interpolation's."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        per_view = {}
        for view in dict.fromkeys(r["view"] for r in rows):
            sel = [r for r in rows if r["method"] == method and r["view"] == view]
            if not sel:
                continue
            stats = {k: float(np.mean([r[k] for r in sel])) for k in KEYS}
            stats["s_per_video"] = float(sum(r["run_s"] for r in sel)
                                         / max(sum(r["videos"] for r in sel), 1))
            stats["compile_s"] = float(np.mean([r["compile_s"] for r in sel]))
            per_view[view] = stats
        per_view["mean"] = {k: float(np.mean([v[k] for v in per_view.values()]))
                            for k in (*KEYS, "s_per_video", "compile_s")}
        out[method] = per_view
    interp = out.get("interpolation", {}).get("mean", {}).get("mpjpe_occ")
    for per_view in out.values():
        if interp:
            per_view["mean"]["occ_vs_interp"] = per_view["mean"]["mpjpe_occ"] / interp
    return out


def to_table(summary: Mapping, views: Sequence[str]) -> str:
    """Markdown: one row per method, all / occluded / visible MPJPE and Accel per view
    and their mean, seconds per video and the occluded ratio to interpolation."""
    cols = [*views, "mean"]
    head = ("| method | " + " | ".join(f"{v}: all / occ / vis / Accel" for v in cols)
            + " | occ / interp | TTT s/video |")
    lines = [head, "|---|" + "---|" * len(cols) + "---:|---:|"]
    for method, per_view in summary.items():
        cells = [" / ".join(f"{per_view[v][k]:.1f}" for k in
                            ("mpjpe", "mpjpe_occ", "mpjpe_vis", "accel")) for v in cols]
        ratio = per_view["mean"].get("occ_vs_interp", float("nan"))
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {ratio:.2f} | "
                     f"{per_view['mean']['s_per_video']:.2f} |")
    return "\n".join(lines)
