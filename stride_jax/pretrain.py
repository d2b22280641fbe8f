"""Pretrains the motion prior BERT-style on real mocap: ``python -m stride_jax.pretrain``.

    python -m stride_jax.pretrain --config configs/cpu.py --workdir runs/pretrain_cpu \
        [--config.pretrain.num_steps=...]

Each step (one jitted, donated function): bone-length scaling, random camera view and
mirroring of clean world-space clips, BERT-style corruption (frame spans, joint masks,
noise, scale errors, outliers, then linear in-filling like the test-time pseudo-labels),
the shared loss (``stride_jax.losses``), AdamW.  Killing the process and rerunning the same
command resumes from the newest intact checkpoint (same step, optimiser state, data
position; the per-step key is ``fold_in(seed, step)``), and ``<workdir>/prior`` holds the
best-by-validation prior for ``stride_jax.align``.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from stride_jax import checkpoint, corrupt, logs, metrics, train_step
from stride_jax.data import augment, dataset, windows
from stride_jax.data.prefetch import Prefetcher
from stride_jax.evalset import EvalSet, make_eval_set
from stride_jax.interpolate import fill_missing
from stride_jax.model import build_model, count_params, init_params

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so modules can be
    imported together)."""
    config_flags.DEFINE_config_file("config", str(Path(__file__).parent.parent / "configs" / "cpu.py"), "Config file (.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", "runs/pretrain", "Output directory: checkpoints, "
                        "metrics.csv, loss_curve.png and the final prior/.")

TRAIN_FIELDS = ("step", "loss", "mpjpe", "n_mpjpe", "velocity", "limb_var", "grad_norm", "lr",
                "steps_per_s")
EVAL_FIELDS = ("step", "val_mpjpe_occluded_input", "val_mpjpe_occluded_frames",
               "val_mpjpe_clean_input", "val_interp_mpjpe", "val_interp_occluded_frames")


def augment_clips(key: jax.Array, world: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """World clips ``[B,T,17,3]`` -> root-relative camera-space targets (bone scale, view, flip)."""
    k_bone, k_view, k_flip = jax.random.split(key, 3)
    world = augment.scale_bones(k_bone, world, std=cfg.bone_scale_std)
    cam = augment.random_view(k_view, world, pitch_max_rad=np.deg2rad(cfg.pitch_max_deg))
    flip = jax.random.bernoulli(k_flip, cfg.mirror_prob, (world.shape[0], 1, 1, 1))
    cam = jnp.where(flip, augment.mirror(cam), cam)
    return augment.root_relative(cam)


def make_update(config: ml_collections.ConfigDict, model, optimizer):
    """Jitted ``update(state, world_clips, rng) -> (state, metrics)`` with donated state."""
    step = train_step.make_step(model, config.pretrain.loss, optimizer, train=True)
    corrupt_cfg = dict(config.pretrain.corrupt)

    def update(state, world, rng):
        k_aug, k_cor, k_drop = jax.random.split(rng, 3)
        target = augment_clips(k_aug, world, config.pretrain)
        noisy, _ = corrupt.corrupt_for_pretraining(k_cor, target, **corrupt_cfg)
        batch = {"inputs": augment.root_relative(noisy), "targets": target}
        return step(state, batch, k_drop)

    return jax.jit(update, donate_argnums=0)


def evaluate_prior(model, params: Any, evalset: EvalSet, batch_size: int) -> dict[str, float]:
    """Validation MPJPE (mm) of the prior on clean and on occluded+noisy windows."""
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x))
    clean = augment.root_relative(jnp.asarray(evalset.clean))
    valid = jnp.asarray(evalset.valid)
    interp = augment.root_relative(fill_missing(jnp.asarray(evalset.observed), valid))

    def run(inputs):
        n = inputs.shape[0]
        pad = (-n) % batch_size
        x = jnp.concatenate([inputs, jnp.zeros((pad,) + inputs.shape[1:], inputs.dtype)])
        out = [fwd(params, x[i:i + batch_size]) for i in range(0, n + pad, batch_size)]
        return jnp.concatenate(out)[:n]

    occ = ~valid
    err_occ = metrics.mpjpe(run(interp), clean)
    err_interp = metrics.mpjpe(interp, clean)
    return {
        "val_mpjpe_occluded_input": float(err_occ.mean()),
        "val_mpjpe_occluded_frames": float(metrics.masked_mean(err_occ, occ)),
        "val_mpjpe_clean_input": float(metrics.mpjpe(run(clean), clean).mean()),
        "val_interp_mpjpe": float(err_interp.mean()),
        "val_interp_occluded_frames": float(metrics.masked_mean(err_interp, occ)),
    }


def _schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps,
                                              max(cfg.num_steps, cfg.warmup_steps + 1),
                                              end_value=cfg.lr * 0.05)


def make_optimizer(pcfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay to 5 % of ``pcfg.lr``, global-norm clip."""
    return train_step.make_optimizer(_schedule(pcfg), weight_decay=pcfg.weight_decay,
                                     grad_clip=pcfg.grad_clip)


class _CsvLog:
    """Appends rows to a CSV; on resume drops rows past the restored step."""

    def __init__(self, path: Path, fields: tuple[str, ...], resume_step: int):
        self.path, self.fields = path, fields
        rows = []
        if path.exists() and resume_step > 0:
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)


def plot_loss_curve(workdir: Path) -> Path:
    """Writes ``loss_curve.png`` from ``metrics.csv`` / ``eval.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def read(name):
        path = workdir / name
        if not path.exists():
            return []
        with path.open() as f:
            return list(csv.DictReader(f))

    train, evals = read("metrics.csv"), read("eval.csv")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        axes[0].plot([int(r["step"]) for r in train], [float(r["loss"]) for r in train])
    axes[0].set(xlabel="step", ylabel="train loss", yscale="log", title="pretraining loss")
    for key in ("val_mpjpe_occluded_input", "val_mpjpe_clean_input", "val_interp_mpjpe"):
        if evals:
            axes[1].plot([int(r["step"]) for r in evals], [float(r[key]) for r in evals],
                         marker="o", label=key)
    axes[1].set(xlabel="step", ylabel="MPJPE (mm)", title="validation")
    axes[1].legend()
    fig.tight_layout()
    out = workdir / "loss_curve.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       train_sequences: list | None = None,
                       val_sequences: list | None = None,
                       stop_after: int | None = None) -> dict[str, Any]:
    """Runs (or resumes) pretraining and writes ``<workdir>/prior``.

    Args:
      config: a ``configs/*.py`` config.
      workdir: output directory (created).
      train_sequences / val_sequences: ``dataset.Sequence`` lists; default: the prepared
        real-mocap ``train`` / ``val`` splits.
      stop_after: stop right after this step as if the process were killed (no final
        prior); for time-boxed runs and the resume tests.

    Returns:
      Summary: final step, steps/s, wall time, best validation numbers, prior path.
    """
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    pcfg = config.pretrain
    train_seqs = train_sequences if train_sequences is not None else dataset.load_split("train")
    val_seqs = val_sequences if val_sequences is not None else dataset.load_split("val")
    sampler = windows.ClipSampler([s.joints for s in train_seqs], length=pcfg.clip_len,
                                  stride=pcfg.clip_stride, batch_size=pcfg.batch_size,
                                  seed=config.seed, speed_range=tuple(pcfg.speed_range))
    evalset = make_eval_set(val_seqs, length=pcfg.clip_len, stride=pcfg.clip_len // 3,
                            fps=config.fps, seed=config.seed + 1, simulator=config.simulator)

    model = build_model(config.model)
    optimizer = make_optimizer(pcfg)
    base_key = jax.random.key(config.seed)
    state = train_step.init_state(init_params(model, jax.random.fold_in(base_key, 2**31 - 1)), optimizer)
    logging.info("model: %d parameters; train clips/epoch ~%d; val windows %d",
                 count_params(state["params"]), sampler.clips_per_epoch, len(evalset.names))

    ckpts = checkpoint.TrainCheckpoints(workdir, keep=pcfg.keep_checkpoints)
    start, best = 0, float("inf")
    restored = ckpts.restore_latest(jax.eval_shape(lambda: state))
    if restored is not None:
        start, state, extra = restored
        sampler.load_state_dict(extra["sampler"])
        best = float(extra.get("best_val", best))
        logging.info("resumed from step %d in %s", start, workdir)
    train_log = _CsvLog(workdir / "metrics.csv", TRAIN_FIELDS, start)
    eval_log = _CsvLog(workdir / "eval.csv", EVAL_FIELDS, start)
    update = make_update(config, model, optimizer)
    schedule = _schedule(pcfg)

    t_start, t_last, last_step = time.time(), time.time(), start
    batches = Prefetcher(sampler, size=3)
    step = start
    try:
        for step in range(start + 1, pcfg.num_steps + 1):
            world, sampler_state = next(batches)
            state, m = update(state, jnp.asarray(world), jax.random.fold_in(base_key, step))
            if step % pcfg.log_every_steps == 0 or step == pcfg.num_steps:
                m = jax.device_get(m)
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(f"loss is {m['loss']} at step {step}")
                now = time.time()
                sps = (step - last_step) / max(now - t_last, 1e-9)
                t_last, last_step = now, step
                eta = (pcfg.num_steps - step) / max(sps, 1e-9)
                logging.info("step %d/%d loss %.4f mpjpe %.1f mm | %.2f steps/s, ETA %.0f s",
                             step, pcfg.num_steps, m["loss"], 1000 * m.get("mpjpe", np.nan),
                             sps, eta)
                train_log.write({**{k: float(v) for k, v in m.items()}, "step": step,
                                 "lr": float(schedule(step)), "steps_per_s": sps})
            is_eval = step % pcfg.eval_every_steps == 0 or step == pcfg.num_steps
            is_ckpt = step % pcfg.checkpoint_every_steps == 0 or step == pcfg.num_steps
            if is_eval:
                ev = evaluate_prior(model, state["params"], evalset, pcfg.batch_size)
                logging.info("eval step %d: %s", step, json.dumps({k: round(v, 1)
                                                                   for k, v in ev.items()}))
                eval_log.write({"step": step, **ev})
                if ev["val_mpjpe_occluded_input"] < best:
                    best = ev["val_mpjpe_occluded_input"]
                    ckpts.save_best(step, state, {"step": step, **ev},
                                    ev["val_mpjpe_occluded_input"])
            if is_ckpt:
                ckpts.save(step, state, {"step": step, "sampler": sampler_state,
                                         "best_val": best})
            if stop_after is not None and step >= stop_after:
                ckpts.close()
                return {"step": step, "stopped": True}
    finally:
        batches.close()
    wall = time.time() - t_start

    best_step = ckpts.best_step()
    if best_step is not None:
        _, best_state, best_extra = ckpts.restore_best(jax.eval_shape(lambda: state))
    else:
        best_state, best_extra = state, {"step": step}
    ckpts.close()
    meta = {"trained_steps": int(step), "best_step": int(best_extra.get("step", step)),
            "validation": {k: v for k, v in best_extra.items() if k.startswith("val_")},
            "config": json.loads(config.to_json_best_effort()),
            "data_manifest_hash": _manifest_hash()}
    prior_dir = checkpoint.save_prior(workdir / "prior", best_state["params"],
                                      config.model.to_dict(), meta)
    plot_loss_curve(workdir)
    summary = {"step": int(step), "wall_s": wall,
               "steps_per_s": (step - start) / max(wall, 1e-9), "prior": str(prior_dir),
               **meta["validation"]}
    logging.info("done: %s", json.dumps(summary))
    return summary


def _manifest_hash() -> str | None:
    try:
        return dataset.load_manifest().get("dataset_sha256")
    except (FileNotFoundError, ValueError):
        return None


def main(argv: list[str]) -> None:
    del argv
    logs.setup()
    logging.info("devices: %s", jax.devices())
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
