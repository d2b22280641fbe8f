"""Plots STRIDE alignment results: skeletons, per-frame errors, an animation, the TTT loss.

Usage::

    python scripts/visualize.py RESULTS.npz [--index 0] [--out DIR] [--gif/--no-gif] [--fps 10]

``RESULTS.npz`` is either the demo output of ``python -m stride_jax.align``
(``<output>/demo_results.npz``: ``clean``, ``observed``, ``valid``, ``pseudo``, ``refined``
``[K,T,17,3]``, ``loss_curve [K,E]``, ``fps``) or one per-track file of
``python -m stride_jax.align --input ...`` (``refined``, ``pseudo``, ``valid``, ``loss_curve``;
no ground truth: the error curves are skipped).  ``--index`` picks the sequence ``k``.

Writes into ``--out`` (default: the results file's directory), prefixed ``<stem>_<index>_``:

* ``skeleton.png``: frames sampled across the longest undetected span, root-aligned, front
  view (x vs -y) and side view (z vs -y): ground truth black, interpolation (pseudo-label)
  orange, STRIDE blue, raw input grey; left limbs dashed.
* ``errors.png``: per-frame root-aligned MPJPE (mm) of interpolation and STRIDE, undetected
  frames shaded; the legend gives the mean over undetected frames.
* ``anim.gif``: the sequence in front view (frames subsampled to stay under 2 MB).
* ``loss.png``: the test-time-training loss curve.

Pure numpy + matplotlib (no JAX).  Exit codes: 0 written; 2 missing/unreadable file, missing
keys, bad shapes or ``--index`` out of range.
"""

from __future__ import annotations

import argparse
import math
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from stride_jax import plotting, skeleton  # noqa: E402  (after matplotlib.use)

REQUIRED_KEYS = ("refined", "pseudo", "valid")
GT_COLOUR, INTERP_COLOUR, STRIDE_COLOUR, RAW_COLOUR = "black", "tab:orange", "tab:blue", "0.6"
OCC_COLOUR = "tab:red"
MAX_GIF_BYTES = 2 * 1024 * 1024
_LEFT_BONES = [i for i, (_, child) in enumerate(skeleton.BONES) if child in skeleton.LEFT]


class VisualizeError(Exception):
    """A problem with the input; the message says what and how to fix it."""


# ----------------------------------------------------------------------------- loading


def load_results(path: str | Path, index: int) -> dict:
    """Reads one sequence from a results file -> dict of ``[T,17,3]``/``[T]`` arrays.

    Keys: ``refined``, ``pseudo``, ``valid`` always; ``clean``, ``observed`` or None;
    ``loss_curve`` ``[E]`` (maybe empty); ``fps`` float or None; ``num_sequences``.
    """
    path = Path(path)
    if not path.is_file():
        raise VisualizeError(f"{path}: no such file (run `python -m stride_jax.align` first; "
                             "the demo writes <output>/demo_results.npz)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise VisualizeError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from err
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise VisualizeError(f"{path}: missing key(s) {', '.join(missing)} (found: {found}); "
                             "expected the output of `python -m stride_jax.align`")
    refined = np.asarray(arrays["refined"], np.float64)
    if refined.ndim == 3:  # one align-CLI track: add the sequence axis
        arrays = {k: (v[None] if k in ("refined", "pseudo", "valid", "clean", "observed",
                                        "loss_curve") else v) for k, v in arrays.items()}
        refined = refined[None]
    if refined.ndim != 4 or refined.shape[-2:] != (skeleton.NUM_JOINTS, 3):
        raise VisualizeError(f"{path}: `refined` has shape {refined.shape}; expected "
                             f"[K,T,{skeleton.NUM_JOINTS},3] or [T,{skeleton.NUM_JOINTS},3]")
    k, t = refined.shape[:2]
    for key in ("pseudo", "clean", "observed"):
        if key in arrays and np.shape(arrays[key]) != refined.shape:
            raise VisualizeError(f"{path}: `{key}` has shape {np.shape(arrays[key])}, "
                                 f"`refined` {refined.shape}")
    if np.shape(arrays["valid"]) != (k, t):
        raise VisualizeError(f"{path}: `valid` has shape {np.shape(arrays['valid'])}; "
                             f"expected {(k, t)}")
    if not -k <= index < k:
        raise VisualizeError(f"{path}: --index {index} out of range: the file holds {k} "
                             f"sequence(s) (0..{k - 1})")
    if t == 0:
        raise VisualizeError(f"{path}: the sequence has no frames")
    if "ok" in arrays and not bool(np.asarray(arrays["ok"]).reshape(-1)[0]):
        msg = str(np.asarray(arrays.get("error", "")).reshape(-1)[0]) if "error" in arrays else ""
        if not np.isfinite(refined[index]).all():
            raise VisualizeError(f"{path}: alignment failed, nothing to plot "
                                 f"({msg or 'no reason'})")
        print(f"warning: alignment failed ({msg or 'no reason'}); STRIDE shows the "
              "pseudo-label", file=sys.stderr)

    def seq(key):
        return np.asarray(arrays[key][index], np.float64) if key in arrays else None

    loss = np.zeros(0)
    if "loss_curve" in arrays and np.size(arrays["loss_curve"]):
        curve = np.asarray(arrays["loss_curve"], np.float64)
        loss = (curve[index] if curve.ndim == 2 and curve.shape[0] == k else curve).reshape(-1)
    fps = float(np.asarray(arrays["fps"]).reshape(-1)[0]) if "fps" in arrays else None
    return {"refined": seq("refined"), "pseudo": seq("pseudo"),
            "valid": np.asarray(arrays["valid"][index]).astype(bool),
            "clean": seq("clean"), "observed": seq("observed"), "loss_curve": loss,
            "fps": fps, "num_sequences": k, "index": index % k}


# ----------------------------------------------------------------------------- helpers


root_align = skeleton.root_relative  # subtracts the pelvis of every frame


def mpjpe_per_frame(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Root-aligned mean per-joint position error per frame, in millimetres."""
    return 1000.0 * np.linalg.norm(root_align(pred) - root_align(gt), axis=-1).mean(-1)


def invalid_spans(valid: np.ndarray) -> list[tuple[int, int]]:
    """Runs of undetected frames as ``(start, stop)`` half-open intervals."""
    bad = np.concatenate([[0], (~np.asarray(valid, bool)).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(bad))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def sample_frames(valid: np.ndarray, n: int = 6) -> np.ndarray:
    """``n`` frames from just before to just after the longest undetected span (evenly
    across the sequence when every frame is detected)."""
    t = len(valid)
    spans = invalid_spans(valid)
    if not spans:
        return np.unique(np.linspace(0, t - 1, min(n, t)).round().astype(int))
    start, stop = max(spans, key=lambda s: s[1] - s[0])
    lo, hi = max(0, start - 1), min(t - 1, stop)  # stop is the first detected frame after
    frames = np.unique(np.linspace(lo, hi, n).round().astype(int))
    return frames


def _limits(views: list[np.ndarray], pad: float = 0.08) -> tuple[tuple[float, float],
                                                                  tuple[float, float]]:
    """Shared square-ish limits for 2D points ``[..., 2]`` (NaNs ignored)."""
    pts = np.concatenate([v.reshape(-1, 2) for v in views])
    pts = pts[np.isfinite(pts).all(-1)]
    if not len(pts):
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 0.1) * (1 + pad)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def _project(poses: np.ndarray, view: str) -> np.ndarray:
    """Root-aligned ``[..., 17, 3]`` -> 2D plot coordinates: front (x, -y) or side (z, -y)."""
    horiz = poses[..., 0] if view == "front" else poses[..., 2]
    return np.stack([horiz, -poses[..., 1]], axis=-1)


def _series(seq: dict) -> list[tuple[str, np.ndarray, str, float, int]]:
    """(label, root-aligned poses, colour, line width, zorder) to draw, back to front."""
    out = []
    if seq["observed"] is not None:
        out.append(("raw input (detected frames)", root_align(seq["observed"]), RAW_COLOUR,
                    1.0, 1))
    if seq["clean"] is not None:
        out.append(("ground truth", root_align(seq["clean"]), GT_COLOUR, 2.6, 2))
    out.append(("interpolation (pseudo-label)", root_align(seq["pseudo"]), INTERP_COLOUR,
                1.8, 3))
    out.append(("STRIDE", root_align(seq["refined"]), STRIDE_COLOUR, 1.8, 4))
    return out


def _legend_handles(series, extra_left: bool = True) -> list:
    handles = [Line2D([], [], color=c, lw=lw, label=label) for label, _, c, lw, _ in series]
    if extra_left:
        handles.append(Line2D([], [], color="0.3", lw=1.5, ls="--", label="left limbs (dashed)"))
    return handles


# ----------------------------------------------------------------------------- figures


def plot_skeletons(seq: dict, out: Path, n_frames: int = 6) -> Path:
    valid = seq["valid"]
    frames = sample_frames(valid, n_frames)
    series = _series(seq)
    views = ("front", "side")
    fig, axes = plt.subplots(len(views), len(frames), squeeze=False,
                             figsize=(2.3 * len(frames) + 0.4, 2.6 * len(views) + 1.2))
    for row, view in enumerate(views):
        proj = [_project(p[frames], view) for _, p, *_ in series]
        # raw input of undetected frames is zeros: keep it out of the limits
        if seq["observed"] is not None:
            proj[0] = np.where(valid[frames][:, None, None], proj[0], np.nan)
        xlim, ylim = _limits(proj)
        for col, t in enumerate(frames):
            ax = axes[row, col]
            for (label, poses, colour, lw, z), _ in zip(series, proj):
                if label.startswith("raw") and not valid[t]:
                    continue
                plotting.draw_skeleton(ax, _project(poses[t], view), colour, lw=lw, zorder=z,
                                       alpha=0.9 if label.startswith("raw") else 1.0,
                                       dashed_left=True)
            ax.set_xlim(xlim)
            ax.set_ylim(ylim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            occluded = not valid[t]
            if occluded:
                ax.set_facecolor("#fdecec")
                for spine in ax.spines.values():
                    spine.set_color(OCC_COLOUR)
            if row == 0:
                ax.set_title(f"frame {t}\n{'occluded' if occluded else 'visible'}", fontsize=10,
                             color=OCC_COLOUR if occluded else "black")
            if col == 0:
                ax.set_ylabel("front (x, up)" if view == "front" else "side (z, up)",
                              fontsize=9)
    spans = invalid_spans(valid)
    longest = max(spans, key=lambda s: s[1] - s[0]) if spans else None
    span_txt = (f"longest undetected span: frames {longest[0]}-{longest[1] - 1} "
                f"({longest[1] - longest[0]} frames)" if longest else "no undetected frames")
    no_gt = "" if seq["clean"] is not None else " (no ground truth in the file)"
    fig.suptitle(f"sequence {seq['index']}: root-aligned poses; {span_txt}{no_gt}", fontsize=11)
    fig.legend(handles=_legend_handles(series), loc="lower center",
               ncol=min(5, len(series) + 1), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _shade(ax, valid: np.ndarray, x: np.ndarray) -> None:
    step = x[1] - x[0] if len(x) > 1 else 1.0
    for i, (a, b) in enumerate(invalid_spans(valid)):
        ax.axvspan(x[a] - step / 2, x[b - 1] + step / 2, color=OCC_COLOUR, alpha=0.12, lw=0,
                   label="undetected (occluded)" if i == 0 else None)


def plot_errors(seq: dict, out: Path) -> Path:
    valid, gt = seq["valid"], seq["clean"]
    frames = np.arange(len(valid))
    err = {"interpolation": mpjpe_per_frame(seq["pseudo"], gt),
           "STRIDE": mpjpe_per_frame(seq["refined"], gt)}
    fig, ax = plt.subplots(figsize=(9, 3.8))
    _shade(ax, valid, frames)
    occ = ~valid
    for (name, e), colour in zip(err.items(), (INTERP_COLOUR, STRIDE_COLOUR)):
        occ_mean = f"{e[occ].mean():.1f}" if occ.any() else "n/a"
        vis_mean = f"{e[valid].mean():.1f}" if valid.any() else "n/a"
        ax.plot(frames, e, color=colour, lw=1.6,
                label=f"{name}: occluded {occ_mean} mm, visible {vis_mean} mm")
    ax.set_xlim(-0.5, len(frames) - 0.5)
    top = max(float(np.nanmax([e.max() for e in err.values()])), 1.0)
    ax.set_ylim(0, 1.45 * top)  # headroom for the legend
    ax.set_xlabel("frame" + (f" ({seq['fps']:g} fps)" if seq["fps"] else ""))
    ax.set_ylabel("MPJPE, root-aligned (mm)")
    ax.set_title(f"sequence {seq['index']}: per-frame error vs ground truth "
                 f"({100 * occ.mean():.0f}% of frames undetected)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=9, title="mean error", title_fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_loss(seq: dict, out: Path) -> Path:
    curve = seq["loss_curve"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = np.arange(1, len(curve) + 1)
    ax.plot(steps, curve, color=STRIDE_COLOUR, marker="o" if len(curve) <= 40 else None, ms=3)
    if np.all(np.isfinite(curve)) and np.all(curve > 0) and curve.max() / curve.min() > 20:
        ax.set_yscale("log")
    ax.set_xlabel("test-time training step")
    ax.set_ylabel("loss")
    ax.set_title(f"sequence {seq['index']}: test-time training loss "
                 f"({curve[0]:.4g} -> {curve[-1]:.4g})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _render_gif(seq: dict, out: Path, fps: float, step: int, dpi: int) -> None:
    valid = seq["valid"]
    gt = None if seq["clean"] is None else _project(root_align(seq["clean"]), "front")
    panels = [("interpolation", _project(root_align(seq["pseudo"]), "front"), INTERP_COLOUR),
              ("STRIDE", _project(root_align(seq["refined"]), "front"), STRIDE_COLOUR)]
    err = ({name: mpjpe_per_frame(seq["pseudo" if name == "interpolation" else "refined"],
                                  seq["clean"]) for name, *_ in panels} if gt is not None else None)
    xlim, ylim = _limits([p for _, p, _ in panels] + ([gt] if gt is not None else []))
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.9))
    artists = []
    for ax, (name, _, colour) in zip(axes, panels):
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name + (" vs ground truth" if gt is not None else ""), fontsize=10,
                     color=colour)
        lines = {}
        for who, c, lw in (("gt", GT_COLOUR, 2.4), ("pred", colour, 1.8)):
            if who == "gt" and gt is None:
                continue
            lines[who] = [ax.plot([], [], color=c, lw=lw, alpha=0.75 if i in _LEFT_BONES else 1,
                                  ls="--" if i in _LEFT_BONES else "-")[0]
                          for i in range(len(skeleton.BONES))]
        text = ax.text(0.03, 0.03, "", transform=ax.transAxes, fontsize=9)
        artists.append((lines, text))
    handles = ([Line2D([], [], color=GT_COLOUR, lw=2, label="ground truth")] if gt is not None
               else []) + [Line2D([], [], color="0.3", lw=1.5, ls="--", label="left limbs")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    title = fig.suptitle("", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.93))
    idx = list(range(0, len(valid), step))

    def update(t):
        for (lines, text), (name, pred, _) in zip(artists, panels):
            for who, pts in (("gt", gt), ("pred", pred)):
                if who not in lines:
                    continue
                for line, (a, b) in zip(lines[who], skeleton.BONES):
                    line.set_data(pts[t, [a, b], 0], pts[t, [a, b], 1])
            text.set_text(f"MPJPE {err[name][t]:.0f} mm" if err is not None else "")
        occluded = not valid[t]
        title.set_text(f"sequence {seq['index']}, frame {t}/{len(valid) - 1}: "
                       + ("OCCLUDED (no detection)" if occluded else "visible"))
        title.set_color(OCC_COLOUR if occluded else "black")
        for ax in axes:
            ax.set_facecolor("#fdecec" if occluded else "white")
        return []

    anim = animation.FuncAnimation(fig, update, frames=idx, blit=False)
    anim.save(out, writer=animation.PillowWriter(fps=fps), dpi=dpi)
    plt.close(fig)


def write_gif(seq: dict, out: Path, fps: float, max_frames: int = 90) -> Path:
    """Renders the animation, subsampling frames (and lowering resolution) to stay < 2 MB."""
    t = len(seq["valid"])
    step, dpi = max(1, math.ceil(t / max_frames)), 90
    for _ in range(4):
        _render_gif(seq, out, fps, step, dpi)
        if out.stat().st_size < MAX_GIF_BYTES:
            break
        step, dpi = step * 2, max(54, dpi - 18)
    return out


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Plot STRIDE alignment results (demo_results.npz or an align output).")
    parser.add_argument("results", help="results .npz from `python -m stride_jax.align`")
    parser.add_argument("--index", type=int, default=0, help="sequence to plot (default 0)")
    parser.add_argument("--out", default=None,
                        help="output directory (default: the results file's directory)")
    parser.add_argument("--gif", action=argparse.BooleanOptionalAction, default=True,
                        help="write the animated GIF (default: yes)")
    parser.add_argument("--fps", type=float, default=10.0, help="GIF frame rate (default 10)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fps <= 0:
        print("error: --fps must be positive", file=sys.stderr)
        return 2
    try:
        seq = load_results(args.results, args.index)
    except VisualizeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    src = Path(args.results)
    out_dir = Path(args.out) if args.out else src.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{src.stem}_{seq['index']}_"
    written = [plot_skeletons(seq, Path(f"{prefix}skeleton.png"))]
    if seq["clean"] is not None:
        written.append(plot_errors(seq, Path(f"{prefix}errors.png")))
    else:
        print("no ground truth (`clean`) in the file: skipping the error curves; the skeleton "
              "plot and GIF show interpolation and STRIDE only")
    if args.gif:
        written.append(write_gif(seq, Path(f"{prefix}anim.gif"), args.fps))
    if seq["loss_curve"].size:
        written.append(plot_loss(seq, Path(f"{prefix}loss.png")))
    else:
        print("no loss_curve in the file: skipping the loss plot")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
