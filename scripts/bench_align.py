"""Test-time-training speed: ``jit(vmap(scan))`` vs. a Python loop vs. eager PyTorch.

    python scripts/bench_align.py --sizes cpu --K 1,4,16,64 --T 243 --epochs 30 \
        --repeats 3 --out runs/bench_align [--config configs/cpu.py] [--device cpu|gpu]

For every K (videos per call) the same random prior (initialised from the config) is
fine-tuned on K videos of T frames of real motion (the embedded demo clips, played
forwards and backwards), cut into N windows of W = min(T, ttt.window) frames, in one
process:

* ``vmap``: one compiled call of K videos, ``stride_jax.ttt.compile_ttt`` with the
  default ``ttt.vmap_width`` (column ``w``: videos vmapped side by side; the call runs
  K / w such groups one after another; auto = 1 on CPU), compile time reported
  separately, median of ``--repeats`` runs after ``--warmup`` untimed ones;
* ``vmapK`` (``--full_vmap``, when w < K): the same call with all K videos vmapped
  (w = K), the plain ``jit(vmap(scan))``;
* ``loop``: the same per-video jitted function looped over the K videos in Python
  (``make_looped_ttt``; its first call, on one video, compiles; then as ``vmap``);
* ``torch``: ``tests/torch_dstformer.ttt_reference`` (eager PyTorch on the CPU, same
  weights, steps and windows) looped over ``min(K, --torch_max_k)`` videos and scaled
  linearly to K (marked ``*`` / ``torch_extrapolated``).

FLOPs are analytic (``stride_jax.flops.ttt_flops``: the model's matmuls, epochs x a
training step + the final prediction, x K; XLA's ``cost_analysis`` counts a scan body once,
so its figure is only recorded, as ``xla_flops_scan_body_once``), divided by run time and
by a measured dense fp32 matmul rate on the same device (the roofline fraction); PyTorch
gets the same FLOP count.  Peak memory per call (``memory_analysis``: arguments, outputs,
XLA temporaries) is reported for the vmap call of K videos and the one-video call of the
loop.  ``--cpu_devices N`` splits the CPU into N JAX devices (K sharded over them, one
per core) instead of one device with intra-op threads.  Writes ``bench_align.json`` and
``bench_align.png`` (time vs K; time vs T) to ``--out``.
Exit code 2 when ``--device gpu`` has no GPU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_common as bc
import jax
import ml_collections
import numpy as np

from stride_jax import convert, flops
from stride_jax import ttt as ttt_lib
from stride_jax.aligner import Video, align_videos
from stride_jax.checkpoint import Prior
from stride_jax.data import windows
from stride_jax.model import build_model, count_params, init_params

COLUMNS = (("K", "K"), ("T", "T"), ("windows", "NxW"), ("width", "w"),
           ("compile_s", "compile_s"), ("vmap_s", "vmap_s"), ("loop_s", "loop_s"),
           ("torch_label", "torch_s"), ("vmap_per_video_s", "vmap/vid"),
           ("full_vmap_per_video_s", "vmapK/vid"), ("loop_per_video_s", "loop/vid"),
           ("torch_per_video_s", "torch/vid"), ("vmap_over_torch", "vmap/torch"),
           ("loop_over_torch", "loop/torch"), ("loop_over_vmap", "loop/vmap"),
           ("vmap_gflops_per_s", "vmap GF/s"), ("vmap_roofline_pct", "vmap %peak"),
           ("loop_roofline_pct", "loop %peak"), ("torch_roofline_pct", "torch %peak"),
           ("vmap_peak_gib", "vmap GiB"), ("loop_peak_gib", "loop GiB"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=bc.DEFAULT_CONFIG,
                   help="config file[:arg], e.g. configs/cpu.py or configs/cpu.py:runlocal")
    p.add_argument("--sizes", default="cpu", choices=("config", *bc.SIZES),
                   help="model size preset (config = the config file's model)")
    p.add_argument("--K", default="1,4,16,64", help="comma-separated videos per call")
    p.add_argument("--T", type=int, default=None, help="frames per video (default: preset's)")
    p.add_argument("--epochs", type=int, default=None, help="TTT steps (default: config's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed vmap and loop runs before timing (torch: one 1-step "
                        "video per shape)")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--torch_threads", type=int, default=None,
                   help="PyTorch intra-op threads (default: all cores of this process)")
    p.add_argument("--torch_max_k", type=int, default=4,
                   help="largest K run in PyTorch; larger K are extrapolated per video")
    p.add_argument("--T_sweep", default="81,243,486",
                   help="comma-separated T for the time-vs-T panel ('' to skip)")
    p.add_argument("--sweep_k", type=int, default=4, help="K of the time-vs-T panel")
    p.add_argument("--matmul_n", type=int, default=4096, help="size of the peak matmul")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--short_clips", default="",
                   help="comma-separated clip lengths (e.g. 46,64,91,113): aligner time with "
                        "length buckets vs padded to full windows ('' to skip)")
    p.add_argument("--full_vmap", action=argparse.BooleanOptionalAction, default=True,
                   help="also time all K videos vmapped at once when the default vmap "
                        "width is smaller than K")
    p.add_argument("--cpu_devices", type=int, default=1,
                   help="JAX CPU devices (jax_num_cpu_devices); >1 shards K over them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_align", help="output directory")
    return p.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def make_videos(k: int, frames: int, ttt: ml_collections.ConfigDict, *,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K`` root-relative videos cut into windows: ``inputs [K,N,W,17,3]``, weights, mask.

    ``W = min(frames, ttt.window)``; windows start every ``ttt.stride`` frames (the last
    one flush with the end), as ``stride_jax.aligner`` cuts them.
    """
    width = min(frames, ttt.window)
    poses = bc.demo_root_relative(k, frames, seed=seed)
    inputs = np.stack([windows.cut_windows(p, width, min(ttt.stride, width)) for p in poses])
    shape = inputs.shape[:3]
    return inputs, np.ones(shape, np.float32), np.ones(shape, bool)


class Bench:
    """Holds the model, params and per-shape caches for all measurements of one run."""

    def __init__(self, config: ml_collections.ConfigDict, args: argparse.Namespace,
                 device: jax.Device, torch: Any | None):
        self.config, self.args, self.device, self.torch = config, args, device, torch
        self.ttt = config.ttt
        self.model = build_model(config.model)
        self.params = jax.device_put(init_params(self.model, jax.random.key(args.seed)), device)
        self.loop_bytes: dict[tuple[int, int], int] = {}
        self.looped: dict[tuple[int, int], tuple[Any, float]] = {}
        self.torch_model = None
        if torch is not None:
            torch_dstformer = bc.torch_reference()

            self.torch_model = torch_dstformer.build_from_config(config.model.to_dict())
            state = convert.params_to_state_dict(jax.device_get(self.params))
            torch_dstformer.load_numpy_state_dict(
                self.torch_model, {k: np.array(v) for k, v in state.items()})
        self.torch_warm: set[tuple[int, int]] = set()

    def _loop_fn(self, inputs, weights, mask, keys) -> tuple[Any, float]:
        shape = inputs.shape[1:3]
        if shape not in self.looped:
            fn = ttt_lib.make_looped_ttt(self.model, self.ttt)
            first, _ = bc.median_time(lambda: fn(self.params, inputs[:1], weights[:1], mask[:1],
                                                 keys[:1]), 1)
            self.looped[shape] = (fn, first)
        return self.looped[shape]

    def _torch_seconds(self, inputs: np.ndarray) -> tuple[float, list[float], int]:
        """Median (and all) seconds of eager PyTorch TTT over ``min(K, torch_max_k)`` videos."""
        torch_dstformer = bc.torch_reference()

        count = max(1, min(inputs.shape[0], self.args.torch_max_k))
        videos = [self.torch.from_numpy(np.array(v)) for v in inputs[:count]]
        if self.args.warmup and inputs.shape[1:3] not in self.torch_warm:
            self.torch_warm.add(inputs.shape[1:3])
            torch_dstformer.ttt_reference(self.torch_model, videos[0], 1, self.ttt.lr,
                                          self.ttt.weight_decay, dict(self.ttt.loss))

        def run() -> None:
            for v in videos:
                torch_dstformer.ttt_reference(self.torch_model, v, self.ttt.epochs, self.ttt.lr,
                                              self.ttt.weight_decay, dict(self.ttt.loss))

        seconds, times = bc.median_time(run, self.args.repeats)
        return seconds, times, count

    def _time_call(self, compiled: ttt_lib.CompiledTTT, params, put, inputs, dev_w, dev_m,
                   keys) -> tuple[float, list[float]]:
        """Median seconds (and all) of one compiled K-video call, after the warm-up."""
        for _ in range(self.args.warmup):
            bc.block(compiled.fn(params, put(inputs), dev_w, dev_m, keys))
        return bc.median_time(lambda x: compiled.fn(params, x, dev_w, dev_m, keys),
                              self.args.repeats, setup=lambda: (put(inputs),))

    def measure(self, k: int, frames: int, peak: float) -> dict[str, Any]:
        """One row of the table: all three methods for ``K`` videos of ``frames`` frames."""
        inputs, weights, mask = make_videos(k, frames, self.ttt, seed=self.args.seed + k)
        _, n, w = inputs.shape[:3]
        keys = jax.random.split(jax.random.key(self.args.seed), k)
        row: dict[str, Any] = {"K": k, "T": frames, "N": n, "W": w, "windows": f"{n}x{w}"}
        per_video_flops = flops.ttt_flops(self.config.model, w, n, self.ttt.epochs,
                                          flip_average=self.ttt.flip_average)
        row["flops"] = per_video_flops * k if per_video_flops else None
        mesh = ttt_lib.video_mesh()
        if mesh is not None and k % mesh.size:
            row["vmap_error"] = f"K={k} is not a multiple of the {mesh.size} CPU devices"
            return _derive(row, peak)
        put = lambda x: jax.device_put(x, self.device)  # noqa: E731
        dev_w, dev_m = put(weights), put(mask)
        try:
            compiled = ttt_lib.compile_ttt(self.model, self.ttt, self.params, (k, n, w), mesh)
            if compiled.sharding is not None:  # K sharded over the CPU devices
                put = lambda x: jax.device_put(x, compiled.sharding)  # noqa: E731
                dev_w, dev_m = put(weights), put(mask)
            vmap_keys = put(keys) if compiled.sharding is not None else keys
            params = self.params if mesh is None else jax.device_put(
                self.params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
            row["compile_s"] = compiled.compile_s
            row["width"] = compiled.width
            row["xla_flops_scan_body_once"] = bc.cost_flops(compiled.fn)
            row["vmap_peak_gib"] = compiled.bytes / 2**30
            row["vmap_s"], row["vmap_times"] = self._time_call(compiled, params, put, inputs,
                                                               dev_w, dev_m, vmap_keys)
            per_device = k // (mesh.size if mesh is not None else 1)
            if self.args.full_vmap and compiled.width < per_device:
                full = ttt_lib.compile_ttt(self.model, self.ttt, self.params, (k, n, w), mesh,
                                           width=per_device)
                row["full_vmap_compile_s"] = full.compile_s
                row["full_vmap_peak_gib"] = full.bytes / 2**30
                row["full_vmap_s"], row["full_vmap_times"] = self._time_call(
                    full, params, put, inputs, dev_w, dev_m, vmap_keys)
        except (jax.errors.JaxRuntimeError, MemoryError) as err:
            row["vmap_error"] = str(err).splitlines()[0]
        put = lambda x: jax.device_put(x, self.device)  # noqa: E731
        dev_w, dev_m = put(weights), put(mask)
        try:
            dev_x = put(inputs)
            loop, first = self._loop_fn(dev_x, dev_w, dev_m, keys)
            if (n, w) not in self.loop_bytes:
                self.loop_bytes[(n, w)] = ttt_lib.compile_ttt(
                    self.model, self.ttt, self.params, (1, n, w)).bytes
            row["loop_peak_gib"] = self.loop_bytes[(n, w)] / 2**30
            row["loop_first_call_s"] = first
            for _ in range(self.args.warmup):
                bc.block(loop(self.params, dev_x, dev_w, dev_m, keys))
            row["loop_s"], row["loop_times"] = bc.median_time(
                lambda: loop(self.params, dev_x, dev_w, dev_m, keys), self.args.repeats)
        except (jax.errors.JaxRuntimeError, MemoryError) as err:
            row["loop_error"] = str(err).splitlines()[0]
        if self.torch_model is not None:
            seconds, times, count = self._torch_seconds(inputs)
            row.update(torch_measured_videos=count, torch_measured_s=seconds, torch_times=times,
                       torch_s=seconds / count * k, torch_extrapolated=count < k)
        return _derive(row, peak)


def measure_short_clips(config: ml_collections.ConfigDict, params: Any,
                        lengths: Sequence[int]) -> dict[str, Any]:
    """``align_videos`` run time of clips of ``lengths`` frames with the config's length
    buckets against every clip padded to one full window (compile excluded: each
    configuration runs twice and the second run is timed)."""
    poses = bc.demo_root_relative(len(lengths), max(lengths), seed=1)
    videos = [Video(p[:n].astype(np.float32), np.ones(n, bool), f"clip{n}")
              for p, n in zip(poses, lengths)]
    prior = Prior(jax.device_get(params), config.model.to_dict())
    out: dict[str, Any] = {"frames": list(lengths)}
    for name, buckets in (("bucketed", tuple(config.ttt.length_buckets)), ("full", ())):
        ttt = config.ttt.copy_and_resolve_references()
        ttt.length_buckets = buckets
        for _ in range(2):
            _, timing = align_videos(videos, prior, ttt)
        out[f"{name}_s"] = timing.run_s
        out[f"{name}_shapes"] = [b["shape"] for b in timing.buckets]
    out["ratio"] = out["bucketed_s"] / out["full_s"]
    return out


def _derive(row: dict[str, Any], peak: float) -> dict[str, Any]:
    """Adds per-video times, ratios, achieved GF/s and roofline fractions to ``row``."""
    k = row["K"]
    for name in ("vmap", "full_vmap", "loop", "torch"):
        seconds = row.get(f"{name}_s")
        row[f"{name}_per_video_s"] = seconds / k if seconds else None
        rate = bc.achieved(row.get("flops"), seconds, peak)
        row[f"{name}_gflops_per_s"] = rate["gflops_per_s"]
        row[f"{name}_roofline_fraction"] = rate["roofline_fraction"]
        frac = rate["roofline_fraction"]
        row[f"{name}_roofline_pct"] = 100.0 * frac if frac is not None else None

    def ratio(a: str, b: str) -> float | None:
        return row[f"{a}_s"] / row[f"{b}_s"] if row.get(f"{a}_s") and row.get(f"{b}_s") else None

    row["vmap_over_torch"] = ratio("vmap", "torch")
    row["loop_over_torch"] = ratio("loop", "torch")
    row["loop_over_vmap"] = ratio("loop", "vmap")
    row["loop_over_full_vmap"] = ratio("loop", "full_vmap")
    if row.get("torch_s") is not None:
        row["torch_label"] = f"{row['torch_s']:.3g}" + ("*" if row["torch_extrapolated"] else "")
    return row


def plot(result: dict[str, Any], path: Path) -> Path:
    """``bench_align.png``: run time vs K (log-log) and vs T at ``sweep_k`` videos."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], result["k_sweep"], "K", "videos per call K"),
              (axes[1], result["t_sweep"], "T", "frames per video T"))
    styles = {"vmap": ("C0", "one call of K videos (default vmap width)"),
              "full_vmap": ("C3", "jit(vmap(scan)) of all K"),
              "loop": ("C1", "jit per video, Python loop"), "torch": ("C2", "PyTorch eager")}
    for ax, rows, key, label in panels:
        if not rows:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            continue
        for name, (color, text) in styles.items():
            pts = [(r[key], r[f"{name}_s"]) for r in rows if r.get(f"{name}_s")]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=text)
            extra = [(r[key], r["torch_s"]) for r in rows if name == "torch"
                     and r.get("torch_extrapolated")]
            if extra:
                ax.plot(*zip(*extra), "x", color=color, ms=10, label="torch (extrapolated)")
        ax.set(xlabel=label, ylabel="seconds (median)", xscale="log", yscale="log")
        ticks = sorted({r[key] for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    t = result["setup"]
    axes[0].set_title(f"TTT, T={t['T']}, {t['epochs']} epochs")
    axes[1].set_title(f"TTT, K={t['sweep_k']}, W<={t['window']}")
    fig.suptitle(f"{t['model_summary']} on {result['machine']['device_kind']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark and writes ``bench_align.json`` / ``.png``; returns the results."""
    if args.cpu_devices > 1:  # before JAX starts its CPU backend
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    device = bc.select_device(args.device)
    config, preset_frames = bc.apply_sizes(bc.load_config(args.config), args.sizes)
    if args.epochs is not None:
        config.ttt.epochs = args.epochs
    frames = args.T or preset_frames or config.ttt.window
    config.ttt.window = min(config.ttt.window, config.model.maxlen)
    load = bc.warn_if_busy()
    torch = bc.import_torch(args.torch_threads or bc.num_cores()) if args.torch else None
    if args.torch and torch is None:
        print("torch is not installed: skipping the PyTorch baseline")
    with jax.default_device(device):
        bench = Bench(config, args, device, torch)
        peak = bc.matmul_peak_gflops(device, n=args.matmul_n)
        machine = bc.machine_info(device, torch)
        machine.update(load_average_at_start=load, peak_matmul_gflops=peak,
                       jax_devices=len(jax.devices()),
                       peak_matmul_n=args.matmul_n,
                       torch_device="cpu" if torch is not None else None)
        if device.platform == "gpu":
            machine["peak_matmul_gflops_highest"] = bc.matmul_peak_gflops(
                device, n=args.matmul_n, precision="highest")
        print(f"model {bc.model_summary(config.model)}, {count_params(bench.params):,} params "
              f"(--sizes {args.sizes}); T={frames}, window {config.ttt.window}, "
              f"{config.ttt.epochs} epochs; {machine['device_kind']} ({machine['cpu_model']}, "
              f"{machine['cores']} cores); peak matmul {peak:.1f} GF/s", flush=True)
        k_rows = []
        for k in _ints(args.K):
            k_rows.append(bench.measure(k, frames, peak))
            print(f"  K={k}: done", flush=True)
        t_rows = []
        for t in _ints(args.T_sweep):
            same = [r for r in k_rows if r["K"] == args.sweep_k and r["T"] == t]
            t_rows.append(same[0] if same else bench.measure(args.sweep_k, t, peak))
            print(f"  T={t}: done", flush=True)
        short = (measure_short_clips(config, bench.params, _ints(args.short_clips))
                 if args.short_clips else None)
    result = {"setup": {"sizes": args.sizes, "config": args.config,
                        "model": config.model.to_dict(), "model_summary":
                            bc.model_summary(config.model),
                        "params": count_params(bench.params), "T": frames,
                        "window": config.ttt.window, "stride": config.ttt.stride,
                        "epochs": config.ttt.epochs, "repeats": args.repeats,
                        "torch_max_k": args.torch_max_k, "sweep_k": args.sweep_k,
                        "flops_note": "analytic (stride_jax.flops.ttt_flops), x K; torch "
                                      "uses the same count"},
              "machine": machine, "k_sweep": k_rows, "t_sweep": t_rows,
              "short_clips": short}
    out = Path(args.out)
    bc.write_json(out / "bench_align.json", result)
    plot(result, out / "bench_align.png")
    print(bc.format_table(k_rows, COLUMNS))
    if t_rows:
        print(f"time vs T (K={args.sweep_k}):")
        print(bc.format_table(t_rows, COLUMNS))
    for r in k_rows + t_rows:
        for name in ("vmap", "loop"):
            if f"{name}_error" in r:
                print(f"K={r['K']} T={r['T']}: {name} failed: {r[f'{name}_error']}")
    for r in k_rows + t_rows:
        for name, text in (("vmap", f"the K-video call (vmap width {r.get('width')})"),
                           ("full_vmap", "vmap of all K videos at once")):
            if not r.get(f"loop_over_{name}") or r[f"loop_over_{name}"] >= 1.0:
                continue
            if name == "vmap" and r.get("width") == 1 and args.cpu_devices == 1:
                why = ("at width 1 on one device the call runs the loop's own one-video "
                       "program once per video (stride_jax.ttt.OneByOne), so the gap is "
                       "run-to-run noise: rerun with more --repeats")
            else:
                why = ("each video has its own parameters, so under vmap every dense layer "
                       "is a K-batched matmul over K times the activations (more memory "
                       "traffic, less cache reuse), while one video already keeps the "
                       "cores busy; on CPU the default vmap width is 1 (ttt.vmap_width 0: "
                       "the call trains its videos one after another)")
            print(f"K={r['K']} T={r['T']}: {text} is {1 / r[f'loop_over_{name}']:.2f}x "
                  f"slower than the loop: {why}")
    if any(r.get("torch_extrapolated") for r in k_rows + t_rows):
        print(f"* torch measured on {args.torch_max_k} video(s), scaled linearly to K")
    if torch is not None and device.platform != "cpu":
        print("note: PyTorch ran on the CPU, JAX on the GPU")
    if short:
        print(f"short clips {short['frames']}: length buckets {short['bucketed_s']:.2f} s, "
              f"padded to full {config.ttt.window}-frame windows {short['full_s']:.2f} s "
              f"(ratio {short['ratio']:.2f}; compile excluded)")
    print(f"wrote {out / 'bench_align.json'} and {out / 'bench_align.png'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: the requested device is missing)."""
    return bc.run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
