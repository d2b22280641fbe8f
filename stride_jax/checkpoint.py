"""Orbax checkpoints: a standalone prior (params + model config) and resumable training state.

Prior layout (``save_prior`` / ``load_prior``)::

    <dir>/params/      Orbax StandardCheckpointer tree of float32 params
    <dir>/prior.json   {"model": {...model config...}, "meta": {...}}

A prior is written into a temporary sibling directory and renamed into place, so an
interrupted save never destroys the previous prior.  Training checkpoints use Orbax's
``CheckpointManager`` (itself atomic: it finalises a step directory only when complete).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from stride_jax import model as model_lib

PRIOR_JSON = "prior.json"
# Abandoned reads (upstream behaviour after a failed restore of a damaged checkpoint): when
# one array fails to read, Orbax (``asyncio_utils.run_sync``) closes its event loop while
# the reads of the other arrays are still in flight.  Their coroutines are dropped
# unfinished and their TensorStore completion callbacks find the loop closed, so Python
# later prints ignored exceptions ("Event loop is closed"; "Exception ignored in:
# <coroutine ... _read_array_index_and_device_put>"), from TensorStore threads or the
# garbage collector.  Harmless: the restore has already raised; nothing reads the results.
DEFAULT_FPS: float = 30.0  # the rate of every prior this project trains or converts


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or does not match the expected structure."""


@dataclasses.dataclass(frozen=True)
class Prior:
    """A pretrained motion prior: what :func:`load_prior` returns and alignment takes.

    Attributes:
      params: the DSTFormer parameter tree.
      model: its model config (``config.model`` as a dict: ``maxlen``, ``dim_feat``, ...).
      meta: free-form metadata from ``prior.json`` (description, training command, ...).
      path: the directory it was loaded from (None for a prior built in memory).
    """

    params: Any
    model: dict
    meta: dict = dataclasses.field(default_factory=dict)
    path: Path | None = None

    @property
    def fps(self) -> float:
        """Frame rate the prior was trained at (``meta["fps"]``, default 30)."""
        return float(self.meta.get("fps", DEFAULT_FPS))


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


def _local_checkpointer() -> ocp.StandardCheckpointer:
    """A checkpointer used by this process alone (a prior is a small host-side file that
    each process of a multi-host run reads, and only process 0 writes)."""
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def save_prior(directory: str | os.PathLike, params: Any, model_config: dict,
               meta: dict | None = None) -> Path:
    """Atomically writes a prior checkpoint (replacing any previous one at ``directory``)."""
    directory = Path(directory).absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        with _local_checkpointer() as ckptr:
            ckptr.save(tmp / "params", _to_numpy(params))
            ckptr.wait_until_finished()
        payload = {"model": dict(model_config), "meta": meta or {}}
        (tmp / PRIOR_JSON).write_text(json.dumps(payload, indent=2, sort_keys=True))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_prior_config(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Returns ``(model_config, meta)`` of a prior without loading its params."""
    directory = Path(directory)
    path = directory / PRIOR_JSON
    if not directory.is_dir():
        raise CheckpointError(f"prior checkpoint directory not found: {directory}")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {directory} is not a stride_jax prior "
                              "(convert MotionBERT weights with "
                              "scripts/convert_motionbert_checkpoint.py)")
    try:
        payload = json.loads(path.read_text())
        return dict(payload["model"]), dict(payload.get("meta", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupted or truncated: {err}") from err


def load_prior(directory: str | os.PathLike) -> Prior:
    """Loads a :class:`Prior`; raises ``CheckpointError`` on any damage."""
    directory = Path(directory).absolute()
    model_config, meta = read_prior_config(directory)
    model = model_lib.build_model(model_config)
    abstract = jax.eval_shape(lambda: model_lib.init_params(model, jax.random.key(0)))
    abstract = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), abstract)
    try:
        with _local_checkpointer() as ckptr:
            params = ckptr.restore(directory / "params", abstract)
    except Exception as err:  # Orbax raises many types for damaged files.
        # (abandoned reads, see the note at PRIOR_JSON)
        raise CheckpointError(
            f"prior params at {directory / 'params'} are corrupted, truncated or do not match "
            f"the model config in {PRIOR_JSON}: {type(err).__name__}: {err}") from err
    return Prior(params, model_config, meta, directory)


class TrainCheckpoints:
    """Periodic (keep-N) and best-by-validation checkpoints of a training state pytree.

    The state is saved with ``StandardSave`` and a JSON sidecar (``extra``: data-iterator
    position, metrics) with ``JsonSave``.  ``restore_latest`` falls back to the previous
    step when the newest one is damaged, logging which step was skipped and why.  The
    state may be sharded over the devices of several processes: all of them call every
    method (Orbax writes each shard once); restore places arrays by the shardings of the
    abstract state.
    """

    def __init__(self, workdir: str | os.PathLike, *, keep: int = 3):
        workdir = Path(workdir).absolute()
        self.latest = ocp.CheckpointManager(
            workdir / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self.best = ocp.CheckpointManager(
            workdir / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, best_fn=lambda m: m["val_mpjpe"], best_mode="min"),
        )

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Saves ``state`` and ``extra`` (JSON-serialisable) at ``step``."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  extra=ocp.args.JsonSave(extra))
        self.latest.save(step, args=args, force=True)
        self.latest.wait_until_finished()

    def save_best(self, step: int, state: Any, extra: dict, val_mpjpe: float) -> None:
        """Offers ``state`` to the best-by-validation slot (kept if ``val_mpjpe`` is lowest)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  extra=ocp.args.JsonSave(extra))
        self.best.save(step, args=args, metrics={"val_mpjpe": float(val_mpjpe)}, force=True)
        self.best.wait_until_finished()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """Returns ``(step, state, extra)`` of the newest intact checkpoint, or None."""
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                state, extra = _restore(self.latest, step, abstract_state)
            except Exception as err:  # damaged step: report it and try the previous one
                # (abandoned reads, see the note at PRIOR_JSON)
                logging.error("checkpoint step %d in %s is corrupted or truncated (%s: %s); "
                              "trying the previous one", step, self.latest.directory,
                              type(err).__name__, err)
                continue
            return step, state, extra
        return None

    def steps(self) -> list[int]:
        """Steps of the kept training checkpoints, oldest first."""
        return sorted(self.latest.all_steps())

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Returns ``(state, extra)`` saved at ``step`` (one of :meth:`steps`)."""
        if step not in self.steps():
            raise CheckpointError(f"step {step} is not among the checkpoints in "
                                  f"{self.latest.directory}: {self.steps()}")
        return _restore(self.latest, step, abstract_state)

    def best_step(self) -> int | None:
        """Step of the best-by-validation checkpoint, if any."""
        return self.best.best_step()

    def restore_best(self, abstract_state: Any) -> tuple[int, Any, dict]:
        """Returns ``(step, state, extra)`` of the best-by-validation checkpoint."""
        step = self.best.best_step()
        if step is None:
            raise CheckpointError(f"no best checkpoint in {self.best.directory}")
        return (step, *_restore(self.best, step, abstract_state))

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any
             ) -> tuple[Any, dict]:
    """``(state, extra)`` that :meth:`TrainCheckpoints.save` wrote at ``step``."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["extra"])
