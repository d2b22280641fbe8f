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

Data parallel over every device of every process (``stride_jax.distributed``): the batch
axis is sharded over a 1-D mesh, params and optimiser state are replicated (or split
FSDP-style with ``config.pretrain.fsdp``), ``config.pretrain.batch_size`` is per device
(global batch = per-device batch x devices), and each process loads only its rows of the
global batch.  Multi-host: run the same command on every host with
``--coordinator_address``/``--num_processes``/``--process_id`` (or under Slurm / Open MPI /
a TPU pod, where JAX detects them); checkpoints are written and restored by all processes
together (Orbax), logs, CSVs and the prior by process 0.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from stride_jax import (
    checkpoint,
    corrupt,
    deepen,
    distributed,
    files,
    logs,
    metrics,
    model_input,
    train_step,
)
from stride_jax.data import augment, dataset, windows
from stride_jax.data.prefetch import Prefetcher
from stride_jax.evalset import EvalSet, make_eval_set
from stride_jax.interpolate import fill_missing
from stride_jax.model import build_model, count_params, init_params

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so modules can be
    imported together)."""
    config_flags.DEFINE_config_file(
        "config", str(Path(__file__).parent.parent / "configs" / "cpu.py"),
        "Config file (.py).", lock_config=True)
    flags.DEFINE_string("workdir", "runs/pretrain", "Output directory: checkpoints, "
                        "metrics.csv, loss_curve.png and the final prior/.")
    distributed.define_flags()

TRAIN_FIELDS = ("step", "loss", "mpjpe", "n_mpjpe", "velocity", "limb_var", "grad_norm", "lr",
                "steps_per_s")
EVAL_FIELDS = ("step", "val_mpjpe_occluded_input", "val_mpjpe_occluded_frames",
               "val_mpjpe_clean_input", "val_interp_mpjpe", "val_interp_occluded_frames")


def augment_clips(key: jax.Array, world: jax.Array, cfg: ml_collections.ConfigDict, *,
                  fps: float = 30.0) -> jax.Array:
    """World clips ``[B,T,17,3]`` -> root-relative camera-space targets.

    In order: time reversal (``cfg.reverse_prob``), body-part mixing between clips of the
    batch (``cfg.mix_prob``), whole-body rotation growing over time (``cfg.spin_prob``, up
    to ``cfg.spin_turns_per_s`` turns per second at ``fps``: spins, flips, cartwheels),
    bone scale, camera view, mirror.  (Vertical root paths such as jumps need no
    augmentation: inputs and targets are root-relative, so a lifted root changes nothing.)
    """
    k_bone, k_view, k_flip = jax.random.split(key, 3)
    # Later options draw from fold_in keys, so at probability 0 the draws are as before.
    k_rev, k_mix = jax.random.split(jax.random.fold_in(key, 1))
    k_spin = jax.random.fold_in(key, 2)
    if cfg.get("reverse_prob", 0.0) > 0:
        world = augment.random_reverse(k_rev, world, cfg.reverse_prob)
    if cfg.get("mix_prob", 0.0) > 0:
        world = augment.random_mix(k_mix, world, cfg.mix_prob)
    if cfg.get("spin_prob", 0.0) > 0:
        world = augment.random_spin(k_spin, world, cfg.spin_prob,
                                    max_turns_per_frame=cfg.spin_turns_per_s / float(fps))
    world = augment.scale_bones(k_bone, world, std=cfg.bone_scale_std)
    cam = augment.random_view(k_view, world, pitch_max_rad=np.deg2rad(cfg.pitch_max_deg))
    flip = jax.random.bernoulli(k_flip, cfg.mirror_prob, (world.shape[0], 1, 1, 1))
    cam = jnp.where(flip, augment.mirror(cam), cam)
    return augment.root_relative(cam)


def make_batch_fn(config: ml_collections.ConfigDict, dim_in: int):
    """``batch(k_aug, k_corrupt, world) -> {"inputs", "targets"[, "mask"]}``: one
    pretraining batch.

    Targets are the augmented clean clips (:func:`augment_clips`); the model sees them
    corrupted (:func:`corruption_settings`) plus, with ``dim_in = 4``, which joints were
    hidden and in-filled (0) or kept (1); ``mask`` weights hidden joints by
    ``config.pretrain.hidden_weight`` (absent at the default 1: every entry counts once).
    """
    corrupt_cfg = corruption_settings(config)
    hidden_weight = float(config.pretrain.get("hidden_weight", 1.0))
    if hidden_weight < 0:
        raise ValueError(f"config.pretrain.hidden_weight must be >= 0, got {hidden_weight}")
    model_input.check_dim_in(dim_in)

    def batch_fn(k_aug: jax.Array, k_cor: jax.Array, world: jax.Array) -> dict[str, jax.Array]:
        target = augment_clips(k_aug, world, config.pretrain, fps=config.fps)
        noisy, valid = corrupt.corrupt_for_pretraining(k_cor, target, per_joint=True,
                                                       **corrupt_cfg)
        inputs = model_input.make_input(augment.root_relative(noisy), valid, dim_in)
        batch = {"inputs": inputs, "targets": target}
        if hidden_weight != 1.0:
            batch["mask"] = jnp.where(valid, 1.0, hidden_weight)
        return batch

    return batch_fn


def make_update(config: ml_collections.ConfigDict, model, optimizer):
    """Jitted ``update(state, world_clips, rng) -> (state, metrics)`` with donated state
    (the batch from :func:`make_batch_fn`)."""
    step = train_step.make_step(model, config.pretrain.loss, optimizer, train=True)
    batch_fn = make_batch_fn(config, model.dim_in)

    def update(state, world, rng):
        k_aug, k_cor, k_drop = jax.random.split(rng, 3)
        batch = batch_fn(k_aug, k_cor, world)
        return step(state, batch, k_drop)

    return jax.jit(update, donate_argnums=0)


def corruption_settings(config: ml_collections.ConfigDict) -> dict:
    """``config.pretrain.corrupt`` plus the frame rate and the evaluation protocol's
    window/span (``config.simulator``) for ``corrupt.corrupt_for_pretraining``."""
    sim = config.simulator
    return {**dict(config.pretrain.corrupt), "fps": float(config.fps),
            "protocol_s": (float(sim["occ_window_s"]), float(sim["occ_span_s"]))}


def forward_in_batches(fwd: Callable[[Any, jax.Array], jax.Array], params: Any,
                       inputs: jax.Array, batch_size: int,
                       put: Callable[[jax.Array], Any] = jnp.asarray) -> np.ndarray:
    """``fwd(params, batch)`` over ``inputs`` in batches of ``batch_size``.

    The last batch is zero-padded to full size (its padding dropped from the result), so
    a jitted ``fwd`` compiles once; ``put`` places each batch (e.g. sharded on a mesh).
    """
    n = inputs.shape[0]
    pad = (-n) % batch_size
    x = jnp.concatenate([inputs, jnp.zeros((pad,) + inputs.shape[1:], inputs.dtype)])
    out = [np.asarray(fwd(params, put(x[i:i + batch_size])))
           for i in range(0, n + pad, batch_size)]
    return np.concatenate(out)[:n]


def evaluate_prior(model, params: Any, evalset: EvalSet, batch_size: int, *,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
    """Validation MPJPE (mm) of the prior on clean and on occluded+noisy windows.

    With a ``mesh`` (params placed on it, ``batch_size`` a multiple of its size) the
    windows are sharded over it and every process gets the same numbers.
    """
    if mesh is None:
        fwd = jax.jit(lambda p, x: model.apply({"params": p}, x))
        put = jnp.asarray
    else:
        fwd = jax.jit(lambda p, x: model.apply({"params": p}, x),
                      out_shardings=distributed.replicated(mesh))
        sharding = distributed.batch_sharding(mesh)
        put = lambda x: distributed.full_to_global(np.asarray(x), sharding)  # noqa: E731
    clean = augment.root_relative(jnp.asarray(evalset.clean))
    valid = jnp.asarray(evalset.valid)
    interp = augment.root_relative(fill_missing(jnp.asarray(evalset.observed), valid))
    dim_in = model.dim_in

    def run(inputs):
        return jnp.asarray(forward_in_batches(fwd, params, inputs, batch_size, put))

    occ = ~valid
    err_occ = metrics.mpjpe(run(model_input.make_input(interp, valid, dim_in)), clean)
    err_clean = metrics.mpjpe(run(model_input.make_input(clean, None, dim_in)), clean)
    err_interp = metrics.mpjpe(interp, clean)
    return {
        "val_mpjpe_occluded_input": float(err_occ.mean()),
        "val_mpjpe_occluded_frames": float(metrics.masked_mean(err_occ, occ)),
        "val_mpjpe_clean_input": float(err_clean.mean()),
        "val_interp_mpjpe": float(err_interp.mean()),
        "val_interp_occluded_frames": float(metrics.masked_mean(err_interp, occ)),
    }


def abstract_state(model, optimizer) -> Any:
    """The ``ShapeDtypeStruct`` tree of a training state ``{"params", "opt"}`` (no compute).

    What a checkpoint restore outside a run needs as its target (``scripts/ship_prior.py``);
    the init key does not change shapes.  A run takes the tree from its own init function
    (:func:`init_sharded_state`).
    """
    return jax.eval_shape(lambda: train_step.init_state(
        init_params(model, jax.random.key(0)), optimizer))


def _init_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The key of a fresh run's parameter initialisation."""
    return jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)


def init_sharded_state(config: ml_collections.ConfigDict, model, optimizer,
                       mesh: jax.sharding.Mesh) -> tuple[dict, Any, Any]:
    """Initial ``{"params", "opt"}`` placed on ``mesh``: ``(state, abstract, shardings)``.

    Params and optimiser state are replicated, or FSDP-sharded with
    ``config.pretrain.fsdp``; ``abstract`` is the ``ShapeDtypeStruct`` tree.
    """
    key = _init_key(config)

    def init():
        return train_step.init_state(init_params(model, key), optimizer)

    abstract = jax.eval_shape(init)
    shardings = distributed.state_shardings(abstract, mesh,
                                            fsdp=bool(config.pretrain.get("fsdp", False)))
    return jax.jit(init, out_shardings=shardings)(), abstract, shardings


def warm_start_params(prior_dir: str | os.PathLike, abstract_params: Any,
                      shardings: Any, fresh_params: Callable[[], Any] | None = None) -> Any:
    """A prior's params placed like a fresh run's (``config.pretrain.init_from``).

    A 3-channel prior going into a ``dim_in=4`` model gets a zero validity row
    (``model_input.adapt_params``: the widened model starts equal to the prior).  A
    prior with fewer block pairs than the model gets identity blocks on top
    (``deepen.deepen_params``: the deeper model starts equal to the prior); their other
    parameters come from ``fresh_params()``, a fresh initialisation of the model.

    Raises:
      ValueError: the prior's parameters differ from the model's in structure or in any
        other shape (the message names the parameter and both shapes); ``CheckpointError``
        when the prior is missing or damaged.
    """
    prior = checkpoint.load_prior(prior_dir)
    params = prior.params
    depth, model_depth = deepen.block_depth(params), deepen.block_depth(abstract_params)
    if depth < model_depth and fresh_params is not None:
        params = deepen.deepen_params(params, jax.device_get(fresh_params()))
        logging.info("init_from: the prior's %d block pairs copied, %d identity pairs added "
                     "on top", depth, model_depth - depth)
    params = model_input.adapt_params(params, abstract_params,
                                      source=f"init_from prior {prior_dir}")
    return jax.tree_util.tree_map(distributed.full_to_global, params, shardings)


def make_sharded_update(config: ml_collections.ConfigDict, model, optimizer,
                        mesh: jax.sharding.Mesh, shardings: Any):
    """``update(state, world, step) -> (state, metrics)`` jitted over ``mesh``.

    ``world`` is the global ``[B, T, 17, 3]`` batch sharded over the data axis, ``step``
    an int (the key is ``fold_in(seed, step)``); ``state`` keeps ``shardings`` (donated)
    and the metrics come back replicated.
    """
    inner = make_update(config, model, optimizer)
    base_key = jax.random.key(config.seed)
    rep = distributed.replicated(mesh)

    def update(state, world, step):
        return inner(state, world, jax.random.fold_in(base_key, step))

    return jax.jit(update, in_shardings=(shardings, distributed.batch_sharding(mesh), rep),
                   out_shardings=(shardings, rep), donate_argnums=0)


def _schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps,
                                              max(cfg.num_steps, cfg.warmup_steps + 1),
                                              end_value=cfg.lr * 0.05)


def make_optimizer(pcfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay to 5 % of ``pcfg.lr``, global-norm clip."""
    return train_step.make_optimizer(_schedule(pcfg), weight_decay=pcfg.weight_decay,
                                     grad_clip=pcfg.grad_clip)


class _CsvLog:
    """Appends rows to a CSV; on resume drops rows past the restored step.  Disabled (no
    file access) on processes other than 0."""

    def __init__(self, path: Path, fields: tuple[str, ...], resume_step: int,
                 enabled: bool = True):
        self.path, self.fields, self.enabled = path, fields, enabled
        if not enabled:
            return
        rows = []
        if path.exists() and resume_step > 0:
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        files.write_text_atomic(path, text.getvalue())

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
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
    mesh = distributed.data_mesh()
    n_proc, primary = jax.process_count(), jax.process_index() == 0
    global_batch = pcfg.batch_size * mesh.size
    train_seqs = train_sequences if train_sequences is not None else dataset.load_split("train")
    val_seqs = val_sequences if val_sequences is not None else dataset.load_split("val")
    sampler = windows.ClipSampler([s.joints for s in train_seqs], length=pcfg.clip_len,
                                  stride=pcfg.clip_stride, batch_size=global_batch,
                                  seed=config.seed, speed_range=tuple(pcfg.speed_range),
                                  shard=(jax.process_index(), n_proc))
    evalset = make_eval_set(val_seqs, length=pcfg.clip_len, stride=pcfg.clip_len // 3,
                            fps=config.fps, seed=config.seed + 1, simulator=config.simulator)

    model = build_model(config.model)
    optimizer = make_optimizer(pcfg)
    state, abstract, shardings = init_sharded_state(config, model, optimizer, mesh)
    fsdp = bool(pcfg.get("fsdp", False))
    logging.info("data parallel: %d device(s) in %d process(es), per-device batch %d, "
                 "global batch %d, params %s", mesh.size, n_proc, pcfg.batch_size,
                 global_batch, "FSDP-sharded" if fsdp else "replicated")
    logging.info("model: %d parameters; train clips/epoch ~%d; val windows %d",
                 count_params(abstract["params"]), sampler.clips_per_epoch, len(evalset.names))

    ckpts = checkpoint.TrainCheckpoints(workdir, keep=pcfg.keep_checkpoints)
    start, best = 0, float("inf")
    target = distributed.with_shardings(abstract, shardings)
    restored = ckpts.restore_latest(target)
    init_from = str(pcfg.get("init_from", "") or "")
    if restored is not None:
        start, state, extra = restored
        sampler.load_state_dict(extra["sampler"])
        best = float(extra.get("best_val", best))
        logging.info("resumed from step %d in %s%s", start, workdir,
                     f" (config.pretrain.init_from={init_from} ignored: the run's own "
                     "checkpoint wins)" if init_from else "")
    elif init_from:
        state = {**state, "params": warm_start_params(
            init_from, abstract["params"], shardings["params"],
            fresh_params=lambda: init_params(model, _init_key(config)))}
        logging.info("fresh run: params warm-started from the prior %s "
                     "(config.pretrain.init_from)", init_from)
    else:
        logging.info("fresh run: params randomly initialised (seed %d)", config.seed)
    train_log = _CsvLog(workdir / "metrics.csv", TRAIN_FIELDS, start, primary)
    eval_log = _CsvLog(workdir / "eval.csv", EVAL_FIELDS, start, primary)
    update = make_sharded_update(config, model, optimizer, mesh, shardings)
    data_sharding = distributed.batch_sharding(mesh)
    schedule = _schedule(pcfg)

    t_start, t_last, last_step = time.time(), time.time(), start
    batches = Prefetcher(sampler, size=3)
    step = start
    try:
        for step in range(start + 1, pcfg.num_steps + 1):
            world, sampler_state = next(batches)
            world = distributed.host_to_global(world, data_sharding, global_batch)
            state, m = update(state, world, np.int32(step))
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
                ev = evaluate_prior(model, state["params"], evalset, global_batch, mesh=mesh)
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
        _, best_state, best_extra = ckpts.restore_best(target)
    else:
        best_state, best_extra = state, {"step": step}
    ckpts.close()
    meta = {"trained_steps": int(step), "best_step": int(best_extra.get("step", step)),
            "validation": {k: v for k, v in best_extra.items() if k.startswith("val_")},
            "config": json.loads(config.to_json_best_effort()),
            "data_manifest_hash": _manifest_hash()}
    best_params = distributed.to_host(best_state["params"], mesh)
    prior_dir = workdir / "prior"
    if primary:
        checkpoint.save_prior(prior_dir, best_params, config.model.to_dict(), meta)
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
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           heartbeat_timeout_s=FLAGS.heartbeat_timeout_s)
    logging.info("devices: %s", jax.devices())
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
