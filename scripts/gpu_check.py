"""One-shot GPU measurement (``scripts/gpu_check.sh`` runs it): paper-size alignment, the
official recipe in PyTorch on the same GPU, and pretraining steps; JSON to ``--out``.

    python scripts/gpu_check.py --out $OUT            # on the GPU machine, < 8 minutes
    python scripts/gpu_check.py --dry-run --out DIR   # tiny sizes on the CPU (CI)

1. ``bench_align.py``: the paper-size DSTformer (512/512, depth 5, 8 heads; T 243) at
   K = 1, 4, 16 videos per call with the default TTT settings (``configs/cpu.py``),
   compile time apart;
2. the official STRIDE recipe (30 epochs at the paper's lr, one 243-frame window per
   video) in eager PyTorch on the same GPU (``bench_common.official_ttt_seconds``);
3. ``bench_pretrain.py``: 100 pretraining steps of the paper size (batch 8).

Writes ``gpu_check.json`` (the summary: GPU, s/video per K, the ratio to the official
recipe, pretraining steps/s) beside the two benchmarks' own JSON.  Exit code 2 when no GPU
is found (not in a dry run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import bench_align
import bench_common as bc
import bench_pretrain
import jax

from configs import cpu


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="tiny sizes on the CPU: checks the script, measures nothing useful")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    size, device = ("tiny", "cpu") if dry else ("paper", "gpu")
    ks, frames, steps = ("1", 27, 3) if dry else ("1,4,16", 243, 100)
    official_epochs = 2 if dry else 30
    epochs = 2 if dry else int(cpu.get_config().ttt.epochs)
    if not dry and not any(d.platform == "gpu" for d in jax.devices()):
        print(f"no GPU: jax sees {jax.devices()}", flush=True)
        return bc.EXIT_NO_DEVICE
    t0 = time.perf_counter()
    align_args = ["--sizes", size, "--K", ks, "--T", str(frames), "--epochs", str(epochs),
                  "--repeats", "1", "--warmup", "1", "--T_sweep", "", "--no-torch",
                  "--no-full_vmap", "--device", device, "--matmul_n", "512" if dry else "8192",
                  "--out", str(out / "align")]
    code = bench_align.main(align_args)
    if code:
        return code
    align = json.loads((out / "align" / "bench_align.json").read_text())
    torch = bc.import_torch(bc.num_cores())
    official_s = None
    if torch is not None and (dry or torch.cuda.is_available()):
        model = {**cpu.get_config().model.to_dict(), **bc.SIZES[size]["model"],
                 "residual": False}
        clips = bc.demo_root_relative(2 if dry else 4, frames)
        official_s = bc.official_ttt_seconds(torch, model, clips, official_epochs,
                                             "cpu" if dry else "cuda")
    code = bench_pretrain.main(["--sizes", size, "--steps", str(steps), "--repeats", "1",
                                "--warmup", "2", "--no-torch", "--device", device,
                                "--matmul_n", "512" if dry else "8192",
                                "--out", str(out / "pretrain")])
    if code:
        return code
    pretrain = json.loads((out / "pretrain" / "bench_pretrain.json").read_text())
    rows = [{"K": r["K"], "s_per_video": r.get("vmap_per_video_s"),
             "compile_s": r.get("compile_s"), "width": r.get("width"),
             "x_official": (r["vmap_per_video_s"] / official_s
                            if official_s and r.get("vmap_per_video_s") else None)}
            for r in align["k_sweep"]]
    summary = {"dry_run": dry, "date": time.strftime("%Y-%m-%d"),
               "device": align["machine"].get("device_kind"),
               "machine": align["machine"], "size": size, "T": frames,
               "ttt_epochs": epochs, "align": rows,
               "official_recipe": {"epochs": official_epochs, "framework": "torch eager",
                                   "device": "cpu" if dry else "cuda",
                                   "s_per_video": official_s},
               "pretrain": pretrain["results"], "wall_s": time.perf_counter() - t0}
    bc.write_json(out / "gpu_check.json", summary)
    for r in rows:
        print(f"K={r['K']}: {r['s_per_video']} s/video (compile {r['compile_s']} s), "
              f"x official {r['x_official']}")
    print(f"official recipe: {official_s} s/video; wrote {out / 'gpu_check.json'} "
          f"in {summary['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
