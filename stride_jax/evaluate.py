"""Accuracy protocol on held-out real mocap: ``python -m stride_jax.evaluate``.

    python -m stride_jax.evaluate [--checkpoint PRIOR] [--seeds 0,1,2] [--max_videos 8]
                                  [--split test] [--out runs/eval]

The test split (performers never seen in training) is cut into videos of
``--video_len`` frames, each seen from a seeded random camera yaw and passed through the
occlusion / estimator simulator (``config.simulator``: in every 3.2 s a 1.6 s span
undetected, jitter, depth and scale errors, swaps, outliers).  Methods compared, each
scored with MPJPE, PA-MPJPE and acceleration error (mm) on all / occluded / visible
frames, mean and spread over seeds:

- ``input``: the simulated estimate, on the frames where it exists;
- ``interpolation``: linear in-filling (= STRIDE's pseudo-labels);
- ``savgol``: a Savitzky-Golay smoother on the interpolation (classical baseline);
- ``prior``: the pretrained prior alone, no test-time training;
- the loss ablation of the paper's Table 5, ending in full STRIDE:
  ``+mpjpe`` -> ``+velocity`` -> ``+limb_var`` -> ``stride`` (``+n_mpjpe``).

Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from scipy.signal import savgol_filter

from stride_jax import checkpoint, corrupt, logs
from stride_jax.aligner import Video, align_videos
from stride_jax.data import augment, dataset
from stride_jax.scoring import score

_DEFAULT_CONFIG = str(Path(__file__).parent.parent / "configs" / "cpu.py")
FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so modules can be
    imported together)."""
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                    "Config (ttt and simulator sections).",
                                    lock_config=True)
    flags.DEFINE_string("checkpoint", str(Path(__file__).parent / "assets" /
                                          "prior_cpu"), "Prior directory.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Simulator / camera seeds.")
    flags.DEFINE_enum("split", "test", ["val", "test"], "Held-out split to score.")
    flags.DEFINE_integer("video_len", 243, "Frames per evaluation video.")
    flags.DEFINE_integer("max_videos", 0, "Use at most this many videos (0: all), "
                         "taken evenly across the split.")
    flags.DEFINE_bool("ablation", True, "Also run the loss ablation rows.")
    flags.DEFINE_string("out", "runs/eval", "Output directory.")

# Loss weights added step by step (paper, Table 5); the last row is full STRIDE.
ABLATION = (("+mpjpe", ("mpjpe",)), ("+velocity", ("mpjpe", "velocity")),
            ("+limb_var", ("mpjpe", "velocity", "limb_var")),
            ("stride", ("mpjpe", "velocity", "limb_var", "n_mpjpe")))
SAVGOL = dict(window_length=15, polyorder=2)


def make_videos(sequences: list, *, video_len: int, fps: float, seed: int, simulator: dict,
                max_videos: int = 0, pitch_max_deg: float = 10.0,
                ) -> tuple[list[Video], list[np.ndarray]]:
    """Cuts sequences into videos, views and corrupts them; returns (videos, ground truths)."""
    chunks = []
    for seq in sequences:
        n = seq.joints.shape[0]
        for start in range(0, n, video_len):
            stop = min(start + video_len, n)
            if stop - start >= min(video_len, 60):
                chunks.append((f"{seq.name}@{start}", seq.joints[start:stop]))
    if max_videos and len(chunks) > max_videos:
        keep = np.linspace(0, len(chunks) - 1, max_videos).round().astype(int)
        chunks = [chunks[i] for i in keep]
    videos, truths = [], []
    key = jax.random.key(seed)
    for i, (name, world) in enumerate(chunks):
        k_view, k_sim = jax.random.split(jax.random.fold_in(key, i))
        clean = augment.random_view(k_view, world, pitch_max_rad=np.deg2rad(pitch_max_deg))
        observed, valid = corrupt.simulate_estimator(k_sim, clean, fps=fps, **simulator)
        videos.append(Video(np.asarray(observed), np.asarray(valid), name))
        truths.append(np.asarray(clean))
    return videos, truths


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


def _ttt_variant(ttt: ml_collections.ConfigDict, terms: tuple[str, ...] | None,
                 epochs: int | None = None) -> ml_collections.ConfigDict:
    variant = copy.deepcopy(ttt.to_dict())
    if terms is not None:
        variant["loss"] = {k: (v if k in terms else 0.0) for k, v in variant["loss"].items()}
    if epochs is not None:
        variant["epochs"] = epochs
    return ml_collections.ConfigDict(variant)


def evaluate(config: ml_collections.ConfigDict, params, model_config: dict, sequences: list,
             *, seeds: list[int], video_len: int, max_videos: int = 0,
             ablation: bool = True) -> dict:
    """Runs every method for every seed; returns ``{method: {metric: [per-seed values]}}``."""
    methods = ["prior"] + [name for name, _ in (ABLATION if ablation else ABLATION[-1:])]
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
        pseudo = None
        for method in methods:
            terms = dict(ABLATION).get(method)
            ttt = _ttt_variant(config.ttt, terms, epochs=0 if method == "prior" else None)
            t0 = time.perf_counter()
            out, tm = align_videos(videos, params, model_config, ttt, seed=seed,
                                   max_batch=config.ttt.max_batch)
            timing[method] = timing.get(method, 0.0) + time.perf_counter() - t0
            failed = [r.name for r in out if not r.ok]
            if failed:
                logging.warning("%s: %d video(s) diverged: %s", method, len(failed), failed)
            add(method, score_videos([r.refined for r in out], truths, videos))
            pseudo = [r.pseudo for r in out]
            logging.info("seed %d %-10s MPJPE %.1f (occluded %.1f) mm, %.1f s", seed, method,
                         results[method]["mpjpe"][-1], results[method]["mpjpe_occ"][-1],
                         time.perf_counter() - t0)
        add("interpolation", score_videos(pseudo, truths, videos))
        add("savgol", score_videos([savgol_filter(p, axis=0, **SAVGOL) for p in pseudo],
                                 truths, videos))
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


def main(argv: list[str]) -> None:
    del argv
    logs.setup()
    config = FLAGS.config
    params, model_config, meta = checkpoint.load_prior(FLAGS.checkpoint)
    sequences = dataset.load_split(FLAGS.split)
    report = evaluate(config, params, model_config, sequences,
                      seeds=[int(s) for s in FLAGS.seeds], video_len=FLAGS.video_len,
                      max_videos=FLAGS.max_videos, ablation=FLAGS.ablation)
    report.update(split=FLAGS.split, checkpoint=FLAGS.checkpoint, video_len=FLAGS.video_len,
                  max_videos=FLAGS.max_videos, simulator=dict(config.simulator),
                  ttt=config.ttt.to_dict(), savgol=SAVGOL)
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    table = to_markdown(report)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(table + "\n")
    print(table)
    logging.info("wrote %s and %s", out / "results.json", out / "results.md")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
