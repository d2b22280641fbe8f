"""The accuracy protocol (``python -m stride_jax.evaluate`` is its CLI).

Methods compared on videos from :func:`stride_jax.evalset.make_videos`, each scored with
MPJPE, PA-MPJPE and acceleration error (mm) on all / occluded / visible frames: the input,
linear interpolation, a Savitzky-Golay smoother, the prior alone, and the loss ablation of
the paper's Table 5 ending in full STRIDE (see ``stride_jax.evaluate``).
"""

from __future__ import annotations

import copy
import time

import ml_collections
import numpy as np
from absl import logging
from scipy.signal import savgol_filter

from stride_jax.aligner import Video, align_videos
from stride_jax.checkpoint import Prior
from stride_jax.evalset import make_videos
from stride_jax.rotation_infill import pseudo_labels
from stride_jax.scoring import score

# Loss weights added step by step (paper, Table 5); the last row is full STRIDE.
ABLATION = (("+mpjpe", ("mpjpe",)), ("+velocity", ("mpjpe", "velocity")),
            ("+limb_var", ("mpjpe", "velocity", "limb_var")),
            ("stride", ("mpjpe", "velocity", "limb_var", "n_mpjpe")))
SAVGOL = dict(window_length=15, polyorder=2)


def ablation_methods(loss: dict) -> list[str]:
    """The ablation rows worth running: a row that adds a term whose weight in ``loss``
    is 0 would repeat the row before it, so it is left out; ``stride`` always runs."""
    return [name for i, (name, terms) in enumerate(ABLATION)
            if name == "stride" or float(loss.get(terms[-1], 0.0)) != 0.0 or i == 0]


def baselines(videos: list[Video]) -> dict[str, list[np.ndarray]]:
    """The classical baselines' outputs per video: ``interpolation`` (the paper's linear
    in-fill of the detections) and ``savgol`` (:data:`SAVGOL` applied to it)."""
    linear = [pseudo_labels(v.poses, v.valid, "linear") for v in videos]
    return {"interpolation": linear,
            "savgol": [savgol_filter(p, axis=0, **SAVGOL) for p in linear]}


def score_videos(preds: list[np.ndarray], truths: list[np.ndarray],
                 videos: list[Video]) -> dict[str, float]:
    """Frame-weighted scores over videos of different lengths."""
    per = [score(p[None], t[None], v.valid[None]) for p, t, v in zip(preds, truths, videos)]
    frames = np.array([v.valid.size for v in videos], float)
    occ = np.array([(~v.valid).sum() for v in videos], float)
    vis = frames - occ
    out = {}
    for key in per[0]:
        w = occ if key.endswith("_occ") else vis if key.endswith("_vis") else frames
        vals = np.array([p[key] for p in per])
        ok = np.isfinite(vals) & (w > 0)
        out[key] = float(np.sum(vals[ok] * w[ok]) / max(np.sum(w[ok]), 1))
    return out


def ttt_variant(ttt: ml_collections.ConfigDict, terms: tuple[str, ...] | None,
                 epochs: int | None = None) -> ml_collections.ConfigDict:
    variant = copy.deepcopy(ttt.to_dict())
    if terms is not None:
        variant["loss"] = {k: (v if k in terms else 0.0) for k, v in variant["loss"].items()}
    if epochs is not None:
        variant["epochs"] = epochs
    return ml_collections.ConfigDict(variant)


def evaluate(config: ml_collections.ConfigDict, prior: Prior, sequences: list,
             *, seeds: list[int], video_len: int, max_videos: int = 0,
             ablation: bool = True) -> dict:
    """Runs every method for every seed; returns ``{method: {metric: [per-seed values]}}``."""
    methods = ["prior"] + [name for name in ablation_methods(config.ttt.loss)
                           if ablation or name == "stride"]
    results: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, float] = {}

    def add(method: str, scores: dict[str, float]) -> None:
        for k, v in scores.items():
            results.setdefault(method, {}).setdefault(k, []).append(v)

    for seed in seeds:
        videos, truths = make_videos(sequences, video_len=video_len, fps=config.fps, seed=seed,
                                     simulator=dict(config.simulator), max_videos=max_videos)
        logging.info("seed %d: %d videos, %d frames, %.0f%% undetected", seed, len(videos),
                     sum(v.valid.size for v in videos),
                     100 * np.mean(np.concatenate([~v.valid for v in videos])))
        for method in methods:
            terms = dict(ABLATION).get(method)
            ttt = ttt_variant(config.ttt, terms, epochs=0 if method == "prior" else None)
            t0 = time.perf_counter()
            out, tm = align_videos(videos, prior, ttt, seed=seed,
                                   max_batch=config.ttt.max_batch)
            timing[method] = timing.get(method, 0.0) + time.perf_counter() - t0
            failed = [r.name for r in out if not r.ok]
            if failed:
                logging.warning("%s: %d video(s) diverged: %s", method, len(failed), failed)
            add(method, score_videos([r.refined for r in out], truths, videos))
            logging.info("seed %d %-10s MPJPE %.1f (occluded %.1f) mm, %.1f s", seed, method,
                         results[method]["mpjpe"][-1], results[method]["mpjpe_occ"][-1],
                         time.perf_counter() - t0)
        for name, preds in baselines(videos).items():
            add(name, score_videos(preds, truths, videos))
        inputs = [np.where(v.valid[:, None, None], v.poses, t) for v, t in zip(videos, truths)]
        visible = score_videos(inputs, truths, videos)
        add("input", {k: v for k, v in visible.items() if k.endswith("_vis")})
    return {"results": results, "seconds": timing, "seeds": seeds}


def to_markdown(report: dict) -> str:
    """Table: mean ± std over seeds for each method and metric."""
    order = ["input", "interpolation", "savgol", "prior"] + [n for n, _ in ABLATION]
    cols = [("mpjpe", "MPJPE"), ("mpjpe_occ", "MPJPE occl."), ("mpjpe_vis", "MPJPE vis."),
            ("pa_mpjpe", "PA-MPJPE"), ("pa_mpjpe_occ", "PA occl."), ("accel", "Accel"),
            ("accel_occ", "Accel occl.")]
    lines = ["| method | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for method in order:
        if method not in report["results"]:
            continue
        row = report["results"][method]
        cells = []
        for key, _ in cols:
            vals = np.array(row.get(key, [np.nan]), float)
            cells.append("–" if not np.isfinite(vals).any() else
                         f"{np.nanmean(vals):.1f} ± {np.nanstd(vals):.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
