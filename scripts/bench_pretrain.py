"""Pretraining speed: the jitted, donated JAX update vs. an eager PyTorch training step.

    python scripts/bench_pretrain.py --sizes cpu --steps 20 --repeats 3 \
        --out runs/bench_pretrain [--config configs/cpu.py] [--batch B] [--clip_len T]

Both sides start from the same random prior (initialised from the config) and train on
the same batch of real-motion clips (the embedded demo clips, played forwards and
backwards):

* ``jax``: ``stride_jax.pretrain.make_update`` (augmentation, BERT-style corruption,
  forward, loss, backward, clip, AdamW; state donated), lowered and compiled once
  (compile time reported separately), then ``--steps`` steps per repeat;
* ``torch``: ``tests/torch_dstformer.pretrain_step_reference`` (forward, loss, backward,
  clip, AdamW on the CPU) on the same clips with pre-computed noisy inputs, i.e. without
  the augmentation and corruption, which are a negligible share of the work.

Steps/s is ``--steps`` / the median time of ``--repeats`` repeats (after ``--warmup``
untimed steps).  FLOPs per step are XLA's ``cost_analysis`` of the compiled update (both
sides get that count), divided by the step time and by a measured dense fp32 matmul rate
on the same device (the roofline fraction).  Writes ``bench_pretrain.json`` to ``--out``.
Exit code 2 when ``--device gpu`` has no GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_common as bc
import jax
import ml_collections
import numpy as np

from stride_jax import convert, pretrain, train_step
from stride_jax.data import augment
from stride_jax.model import build_model, count_params, init_params

COLUMNS = (("name", "impl"), ("batch", "B"), ("clip_len", "T"), ("compile_s", "compile_s"),
           ("step_s", "s/step"), ("steps_per_s", "steps/s"), ("clips_per_s", "clips/s"),
           ("gflops_per_s", "GF/s"), ("roofline_pct", "%peak"), ("speedup_vs_torch", "x torch"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=bc.DEFAULT_CONFIG,
                   help="config file[:arg], e.g. configs/cpu.py or configs/motionbert.py")
    p.add_argument("--sizes", default="cpu", choices=("config", *bc.SIZES),
                   help="model size preset (config = the config file's model)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default: config's)")
    p.add_argument("--clip_len", type=int, default=None,
                   help="frames per clip (default: the preset's, else the config's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--torch_threads", type=int, default=None,
                   help="PyTorch intra-op threads (default: all cores of this process)")
    p.add_argument("--matmul_n", type=int, default=4096, help="size of the peak matmul")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_pretrain", help="output directory")
    return p.parse_args(argv)


def bench_jax(config: ml_collections.ConfigDict, params: Any, world: np.ndarray,
              args: argparse.Namespace, device: jax.Device) -> dict[str, Any]:
    """Compile time, median step time and FLOPs of the jitted pretraining update.

    ``params`` are host arrays: the update donates (deletes) its device copy.
    """
    pcfg = config.pretrain
    model = build_model(config.model)
    optimizer = train_step.make_optimizer(pcfg.lr, weight_decay=pcfg.weight_decay,
                                          grad_clip=pcfg.grad_clip)
    update = pretrain.make_update(config, model, optimizer)
    state = jax.device_put(train_step.init_state(params, optimizer), device)
    clips = jax.device_put(world, device)
    base = jax.random.key(args.seed)
    t0 = time.perf_counter()
    compiled = update.lower(state, clips, base).compile()
    compile_s = time.perf_counter() - t0
    step = 0

    def steps(count: int) -> Any:
        nonlocal state, step
        metrics = None
        for _ in range(count):
            step += 1
            state, metrics = compiled(state, clips, jax.random.fold_in(base, step))
        return state, metrics

    bc.block(steps(args.warmup))
    seconds, times = bc.median_time(lambda: steps(args.steps), args.repeats)
    loss = float(jax.device_get(steps(1)[1]["loss"]))
    return {"name": "jax", "compile_s": compile_s, "flops_per_step": bc.cost_flops(compiled),
            "repeat_s": times, "step_s": seconds / args.steps, "final_loss": loss}


def bench_torch(torch: Any, config: ml_collections.ConfigDict, params: Any,
                world: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Median step time of eager PyTorch training on the same clips and host ``params``."""
    torch_dstformer = bc.torch_reference()

    pcfg = config.pretrain
    model = torch_dstformer.build_from_config(config.model.to_dict())
    state_dict = convert.params_to_state_dict(params)
    torch_dstformer.load_numpy_state_dict(model, {k: np.array(v) for k, v in state_dict.items()})
    optimizer = torch_dstformer.make_optimizer(model, pcfg.lr, pcfg.weight_decay)
    clean = np.array(augment.root_relative(augment.world_to_camera(world)), np.float32)
    noisy = clean + np.random.default_rng(args.seed).normal(0.0, 0.02, clean.shape)
    targets = torch.from_numpy(clean)
    inputs = torch.from_numpy(noisy.astype(np.float32))
    loss_weights = dict(pcfg.loss)
    losses: list[float] = []

    def steps(count: int) -> None:
        for _ in range(count):
            losses.append(torch_dstformer.pretrain_step_reference(
                model, optimizer, inputs, targets, loss_weights, pcfg.grad_clip))

    steps(args.warmup)
    seconds, times = bc.median_time(lambda: steps(args.steps), args.repeats)
    return {"name": "torch", "compile_s": None, "repeat_s": times,
            "step_s": seconds / args.steps, "final_loss": losses[-1], "device": "cpu",
            "threads": torch.get_num_threads()}


def _derive(row: dict[str, Any], flops: float | None, batch: int, clip_len: int,
            peak: float) -> dict[str, Any]:
    rate = bc.achieved(flops, row["step_s"], peak)
    frac = rate["roofline_fraction"]
    row.update(batch=batch, clip_len=clip_len, flops_per_step=flops,
               steps_per_s=1.0 / row["step_s"], clips_per_s=batch / row["step_s"],
               gflops_per_s=rate["gflops_per_s"], roofline_fraction=frac,
               roofline_pct=100.0 * frac if frac is not None else None)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark and writes ``bench_pretrain.json``; returns the results."""
    device = bc.select_device(args.device)
    config, preset_frames = bc.apply_sizes(bc.load_config(args.config), args.sizes)
    batch = args.batch or config.pretrain.batch_size
    clip_len = args.clip_len or preset_frames or config.pretrain.clip_len
    if clip_len > config.model.maxlen:
        raise ValueError(f"--clip_len {clip_len} exceeds the model's maxlen "
                         f"{config.model.maxlen}")
    load = bc.warn_if_busy()
    torch = bc.import_torch(args.torch_threads or bc.num_cores()) if args.torch else None
    if args.torch and torch is None:
        print("torch is not installed: skipping the PyTorch baseline")
    world = bc.demo_world_clips(batch, clip_len, seed=args.seed)
    with jax.default_device(device):
        model = build_model(config.model)
        params = jax.device_get(init_params(model, jax.random.key(args.seed)))
        peak = bc.matmul_peak_gflops(device, n=args.matmul_n)
        machine = bc.machine_info(device, torch)
        machine.update(load_average_at_start=load, peak_matmul_gflops=peak,
                       peak_matmul_n=args.matmul_n)
        if device.platform == "gpu":
            machine["peak_matmul_gflops_highest"] = bc.matmul_peak_gflops(
                device, n=args.matmul_n, precision="highest")
        print(f"model {bc.model_summary(config.model)}, {count_params(params):,} params "
              f"(--sizes {args.sizes}); batch {batch} x {clip_len} frames; "
              f"{machine['device_kind']} ({machine['cpu_model']}, {machine['cores']} cores); "
              f"peak matmul {peak:.1f} GF/s", flush=True)
        jax_row = bench_jax(config, params, world, args, device)
    flops = jax_row["flops_per_step"]
    rows = [_derive(jax_row, flops, batch, clip_len, peak)]
    if torch is not None:
        rows.append(_derive(bench_torch(torch, config, params, world, args), flops, batch,
                            clip_len, peak))
        rows[0]["speedup_vs_torch"] = rows[1]["step_s"] / rows[0]["step_s"]
    result = {"setup": {"sizes": args.sizes, "config": args.config,
                        "model": config.model.to_dict(),
                        "model_summary": bc.model_summary(config.model),
                        "params": count_params(params), "batch": batch, "clip_len": clip_len,
                        "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
                        "loss": dict(config.pretrain.loss), "grad_clip": config.pretrain.grad_clip,
                        "flops_note": "XLA cost_analysis of the compiled JAX update; torch "
                                      "uses the same count"},
              "machine": machine, "results": {r["name"]: r for r in rows}}
    out = Path(args.out)
    bc.write_json(out / "bench_pretrain.json", result)
    print(bc.format_table(rows, COLUMNS))
    if torch is not None and device.platform != "cpu":
        print("note: PyTorch ran on the CPU, JAX on the GPU")
    print(f"wrote {out / 'bench_pretrain.json'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: the requested device is missing)."""
    return bc.run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
