"""How fast a training step could be with each side's own matmul kernels.

    python scripts/bench_matmul_bound.py --sizes cpu --out runs/bench_bound \
        [--frames T] [--repeats 5] [--min_time 0.2] [--target 0.6] [--no-torch] [--no-blas]

Lists every matmul of one training step on one window
(``stride_jax.flops.train_step_matmuls``: the forward pass, autodiff's backward and the
temporal attention's own recomputing backward, grouped by shape and operand layout) and
times each shape alone, with XLA's CPU kernels (a jitted ``lax.dot_general`` in the
layout the step runs), with PyTorch's (``torch.matmul`` on transposed views) and with the
OpenBLAS that NumPy ships (``np.matmul`` on transposed views: what a native BLAS call
from XLA could use without a new dependency).  count
x time summed over the shapes is what the step's matmuls alone cost with those kernels,
as if nothing else ran.  Beside it, one measured training step on one window of each
side (``bench_pretrain``'s JAX update and PyTorch reference at batch 1: the work of one
test-time-training step on one window).

The JAX step runs its matmuls on XLA's kernels, so when their sum is more than
``--target`` x the measured PyTorch step, the speed target (vmap s/video <= ``target`` x
PyTorch) is out of reach without faster kernels or less work.  It also prints the ratio
the JAX step would have with PyTorch's matmul times (``parity_ratios``: JAX's other work as
measured, and none at all), i.e. what native kernels inside XLA could reach at best.  It
is an estimate, not a
strict bound: inside the step the temporal attention runs in chunks of rows and the
kernels share the caches with other work, so their times there differ somewhat from
their times alone.  Each timed
call includes its dispatch (some microseconds), so shapes that take microseconds (the
``tiny`` preset) read slow; at the ``cpu`` and ``small`` sizes the matmuls take
milliseconds.  XLA options (``XLA_FLAGS``) apply to both the single matmuls and the
JAX step.  Writes ``bench_matmul_bound.json`` to ``--out``.  CPU only.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench_common as bc
import bench_pretrain
import jax
import numpy as np

from stride_jax import flops
from stride_jax.model import build_model, init_params

COLUMNS = (("name", "matmul"), ("layout", "layout"), ("shape", "batch x [m,k]@[k,n]"),
           ("count", "n"), ("gflop", "GFLOP/step"), ("xla_ms", "XLA ms"),
           ("xla_pct", "XLA %peak"), ("torch_ms", "torch ms"), ("torch_pct", "torch %peak"),
           ("blas_ms", "BLAS ms"), ("blas_pct", "BLAS %peak"), ("xla_step_share", "XLA share"))
SIDES = ("xla", "torch", "blas")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=bc.DEFAULT_CONFIG, help="config file[:arg]")
    p.add_argument("--sizes", default="cpu", choices=("config", *bc.SIZES),
                   help="model size preset (config = the config file's model)")
    p.add_argument("--frames", type=int, default=None,
                   help="window length (default: the preset's, else the config's clip_len)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per matmul (median)")
    p.add_argument("--min_time", type=float, default=0.2,
                   help="seconds each timed repeat of one matmul lasts at least (calls "
                        "are looped to reach it)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat of the "
                   "whole-step measurement (0: skip it)")
    p.add_argument("--step_repeats", type=int, default=3)
    p.add_argument("--target", type=float, default=0.6,
                   help="the speed target as a fraction of the PyTorch step")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--blas", action=argparse.BooleanOptionalAction, default=True,
                   help="also time NumPy's matmul (the OpenBLAS it ships), the kernel a "
                        "native call from XLA could use without a new dependency")
    p.add_argument("--torch_threads", type=int, default=None,
                   help="PyTorch intra-op threads (default: all cores of this process)")
    p.add_argument("--matmul_n", type=int, default=4096, help="size of the peak matmul")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_bound", help="output directory")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.min_time <= 0 or args.steps < 0 or args.step_repeats < 1:
        p.error("--repeats and --step_repeats must be >= 1, --min_time > 0, --steps >= 0")
    return args


def xla_matmul(op: flops.Matmul) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A jitted ``dot_general`` computing ``op`` from operands of ``op.operand_shapes()``."""
    nd = 3 if op.batch > 1 else 2
    contract_a = nd - 2 if op.layout == "tn" else nd - 1
    contract_b = nd - 1 if op.layout == "nt" else nd - 2
    batch_dims = ((0,), (0,)) if nd == 3 else ((), ())
    numbers = (((contract_a,), (contract_b,)), batch_dims)
    return jax.jit(lambda a, b: jax.lax.dot_general(a, b, numbers))


def views_matmul(matmul: Callable[[Any, Any], Any], op: flops.Matmul
                 ) -> Callable[[Any, Any], Any]:
    """``matmul`` computing ``op`` on transposed views of its operands (no copies)."""
    def fn(a: Any, b: Any) -> Any:
        if op.layout == "tn":
            a = a.swapaxes(-1, -2)
        if op.layout == "nt":
            b = b.swapaxes(-1, -2)
        return matmul(a, b)
    return fn


def torch_matmul(torch: Any, op: flops.Matmul) -> Callable[[Any, Any], Any]:
    """``torch.matmul`` computing ``op`` on transposed views, as eager runs it."""
    return views_matmul(torch.matmul, op)


def blas_matmul(op: flops.Matmul) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``np.matmul`` computing ``op`` on transposed views (NumPy passes them to its BLAS
    ``sgemm`` as transpose flags, one call per batch item)."""
    return views_matmul(np.matmul, op)


def time_call(fn: Callable[[], Any], sync: Callable[[Any], Any], repeats: int,
              min_time: float) -> float:
    """Median seconds of one ``fn()`` call, looping calls so each repeat lasts ``min_time``."""
    sync(fn())
    t0 = time.perf_counter()
    sync(fn())
    calls = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))

    def loop() -> Any:
        out = None
        for _ in range(calls):
            out = fn()
        return sync(out)

    seconds, _ = bc.median_time(loop, repeats)
    return seconds / calls


def time_ops(ops: Sequence[flops.Matmul], args: argparse.Namespace, device: jax.Device,
             torch: Any | None) -> list[dict[str, Any]]:
    """Seconds per call of every op alone, on XLA (and PyTorch when given, and NumPy's
    BLAS with ``args.blas``)."""
    rng = np.random.default_rng(args.seed)
    rows = []
    for op in ops:
        shape_a, shape_b = op.operand_shapes()
        a_np = rng.standard_normal(shape_a, dtype=np.float32)
        b_np = rng.standard_normal(shape_b, dtype=np.float32)
        a, b = jax.device_put(a_np, device), jax.device_put(b_np, device)
        fn = xla_matmul(op)
        row = {"name": op.name, "layout": op.layout, "batch": op.batch, "m": op.m, "k": op.k,
               "n": op.n, "count": op.count, "flops": op.flops,
               "xla_s": time_call(functools.partial(fn, a, b), bc.block, args.repeats,
                                   args.min_time)}
        if torch is not None:
            ta, tb = torch.from_numpy(a_np), torch.from_numpy(b_np)
            tfn = torch_matmul(torch, op)
            row["torch_s"] = time_call(functools.partial(tfn, ta, tb), lambda x: x,
                                       args.repeats, args.min_time)
        if args.blas:
            row["blas_s"] = time_call(functools.partial(blas_matmul(op), a_np, b_np),
                                      lambda x: x, args.repeats, args.min_time)
        rows.append(row)
        print(f"  {op.name}: " + ", ".join(f"{side} {row[side + '_s'] * 1e3:.3f} ms"
                                           for side in SIDES if side + "_s" in row),
              flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], peak: float) -> dict[str, Any]:
    """Per-row rates and shares, the summed matmul time per step of each side, and the
    step's matmul FLOPs at the best rate any side reached on any shape
    (``best_rate_step_s``: a floor for the matmul time with any of the timed kernels)."""
    totals: dict[str, Any] = {"flops": sum(r["flops"] for r in rows)}
    for side in SIDES:
        if not all(f"{side}_s" in r for r in rows):
            continue
        step = sum(r[f"{side}_s"] * r["count"] for r in rows)
        totals[f"{side}_matmul_step_s"] = step
        totals[f"{side}_matmul_pct_peak"] = 100.0 * totals["flops"] / step / 1e9 / peak
        for r in rows:
            per_call = r["flops"] / r["count"]
            r[f"{side}_ms"] = 1e3 * r[f"{side}_s"]
            r[f"{side}_pct"] = 100.0 * per_call / r[f"{side}_s"] / 1e9 / peak
            r[f"{side}_step_share"] = r[f"{side}_s"] * r["count"] / step
    rates = [r["flops"] / r["count"] / r[f"{side}_s"] for r in rows for side in SIDES
             if f"{side}_s" in r]
    totals["best_gflops_per_s"] = max(rates) / 1e9
    totals["best_rate_step_s"] = totals["flops"] / max(rates)
    for r in rows:
        r["gflop"] = r["flops"] / 1e9
        r["shape"] = f"{r['batch']} x [{r['m']},{r['k']}]@[{r['k']},{r['n']}]"
    return totals


def measure_steps(config: Any, frames: int, args: argparse.Namespace, device: jax.Device,
                  torch: Any | None) -> dict[str, float]:
    """Measured seconds of one whole training step on one window, JAX and PyTorch."""
    config.pretrain.batch_size = 1
    world = bc.demo_world_clips(1, frames, seed=args.seed)
    step_args = argparse.Namespace(seed=args.seed, warmup=1, steps=args.steps,
                                   repeats=args.step_repeats)
    with jax.default_device(device):
        params = jax.device_get(init_params(build_model(config.model),
                                            jax.random.key(args.seed)))
        out = {"jax_step_s": bench_pretrain.bench_jax(config, params, world, step_args,
                                                      device)["step_s"]}
    if torch is not None:
        out["torch_step_s"] = bench_pretrain.bench_torch(torch, config, params, world,
                                                         step_args)["step_s"]
    return out


def verdict(totals: dict[str, Any], steps: dict[str, float], ratios: dict[str, float],
            target: float) -> list[str]:
    """The lines that compare the summed matmul times with the measured steps
    (``ratios``: :func:`parity_ratios`)."""
    lines = []
    xla, jax_step = totals["xla_matmul_step_s"], steps.get("jax_step_s")
    if jax_step:
        lines.append(f"JAX step {jax_step:.3f} s; XLA matmuls alone {xla:.3f} s "
                     f"({100 * xla / jax_step:.0f} % of it)")
    torch_step = steps.get("torch_step_s")
    if torch_step:
        lines.append(f"PyTorch step {torch_step:.3f} s; its matmuls alone "
                     f"{totals['torch_matmul_step_s']:.3f} s "
                     f"({100 * totals['torch_matmul_step_s'] / torch_step:.0f} % of it)")
        if jax_step:
            lines.append(f"JAX / PyTorch step: {jax_step / torch_step:.2f}")
        bound = xla / torch_step
        reach = "out of reach" if bound > target else "not excluded by the matmuls"
        lines.append(f"XLA matmuls alone = {bound:.2f} x the PyTorch step: a JAX step of "
                     f"<= {target} x PyTorch is {reach} with XLA's CPU kernels (timed "
                     "one by one)")
        if "parity" in ratios:
            lines.append(f"With PyTorch's matmul kernels (e.g. a native BLAS call inside "
                         f"XLA) and JAX's other work as measured: {ratios['parity']:.2f} x "
                         f"the PyTorch step")
        lines.append(f"With PyTorch's matmul kernels and nothing else: "
                     f"{ratios['matmuls_only']:.2f} x the PyTorch step")
        if "best_rate" in ratios:
            lines.append(f"Every matmul at the best rate measured here "
                         f"({totals['best_gflops_per_s']:.0f} GF/s, any kernel, any shape): "
                         f"{ratios['best_rate_only']:.2f} x the PyTorch step alone, "
                         f"{ratios['best_rate']:.2f} x with JAX's other work as measured")
        if "blas_parity" in ratios:
            lines.append(f"With NumPy's BLAS kernels ({totals['blas_matmul_step_s']:.3f} s "
                         f"summed, {totals['blas_matmul_step_s'] / xla:.2f} x XLA's) and "
                         f"JAX's other work as measured: {ratios['blas_parity']:.2f} x the "
                         "PyTorch step")
    return lines


def parity_ratios(totals: dict[str, Any], steps: dict[str, float]) -> dict[str, float]:
    """JAX step / PyTorch step if XLA's matmuls took PyTorch's time: ``parity`` keeps JAX's
    measured other work (JAX step - XLA matmuls), ``matmuls_only`` drops it;
    ``best_rate`` / ``best_rate_only`` put every matmul at the best measured rate instead;
    ``blas_parity`` is ``parity`` with NumPy's BLAS times instead of PyTorch's (when
    timed); empty without the PyTorch side."""
    if "torch_step_s" not in steps or "torch_matmul_step_s" not in totals:
        return {}
    torch_matmuls, torch_step = totals["torch_matmul_step_s"], steps["torch_step_s"]
    out = {"matmuls_only": torch_matmuls / torch_step,
           "best_rate_only": totals["best_rate_step_s"] / torch_step}
    if steps.get("jax_step_s"):
        other = steps["jax_step_s"] - totals["xla_matmul_step_s"]
        out["parity"] = (other + torch_matmuls) / torch_step
        out["best_rate"] = (other + totals["best_rate_step_s"]) / torch_step
        if "blas_matmul_step_s" in totals:
            out["blas_parity"] = (other + totals["blas_matmul_step_s"]) / torch_step
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark and writes ``bench_matmul_bound.json``; returns the results."""
    device = bc.select_device("cpu")
    config, preset_frames = bc.apply_sizes(bc.load_config(args.config), args.sizes)
    frames = args.frames or preset_frames or config.pretrain.clip_len
    if frames > config.model.maxlen:
        raise ValueError(f"--frames {frames} exceeds the model's maxlen {config.model.maxlen}")
    load = bc.warn_if_busy()
    torch = bc.import_torch(args.torch_threads or bc.num_cores()) if args.torch else None
    if args.torch and torch is None:
        print("torch is not installed: skipping the PyTorch side")
    model_config = config.model.to_dict()
    ops = flops.train_step_matmuls(model_config, frames, 1)
    with jax.default_device(device):
        peak = bc.matmul_peak_gflops(device, n=args.matmul_n)
    machine = bc.machine_info(device, torch)
    machine.update(load_average_at_start=load, peak_matmul_gflops=peak,
                   peak_matmul_n=args.matmul_n)
    print(f"model {bc.model_summary(config.model)} (--sizes {args.sizes}), one window of "
          f"{frames} frames: {len(ops)} matmul shapes, "
          f"{sum(o.flops for o in ops) / 1e9:.2f} GFLOP per training step; "
          f"{machine['cpu_model']}, {machine['cores']} cores, peak matmul {peak:.1f} GF/s",
          flush=True)
    rows = time_ops(ops, args, device, torch)
    totals = summarise(rows, peak)
    steps = measure_steps(config, frames, args, device, torch) if args.steps else {}
    ratios = parity_ratios(totals, steps)
    lines = verdict(totals, steps, ratios, args.target)
    print(bc.format_table(rows, COLUMNS))
    print("\n".join(lines))
    result = {"setup": {"sizes": args.sizes, "config": args.config, "model": model_config,
                        "frames": frames, "repeats": args.repeats, "min_time": args.min_time,
                        "steps": args.steps, "step_repeats": args.step_repeats,
                        "target": args.target, "blas": args.blas},
              "machine": machine, "matmuls": rows, "totals": totals, "steps": steps,
              "verdict": lines, "parity_ratios": ratios}
    out = Path(args.out)
    bc.write_json(out / "bench_matmul_bound.json", result)
    print(f"wrote {out / 'bench_matmul_bound.json'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return bc.run_main(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
