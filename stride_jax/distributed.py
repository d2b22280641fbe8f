"""Multi-device and multi-host plumbing on JAX's own distributed runtime.

Start-up (:func:`initialize`: ``jax.distributed.initialize`` from explicit coordinator /
process flags or JAX's cluster auto-detection, else a single process), meshes
(:func:`data_mesh` over every device of every process, :func:`local_mesh` over this
process's devices), the deterministic per-process split of a work list
(:func:`split_for_process`), the process's slice of a global batch
(:func:`process_batch_slice`, :func:`host_to_global`), parameter shardings (replicated or
FSDP-style, :func:`state_shardings`), gathering a sharded pytree to host numpy on every
process (:func:`to_host`) and summing per-process counters (:func:`sum_over_processes`).

Meshes list devices by ``(process_index, id)``, so process ``p`` of ``P`` owns rows
``[p * B / P, (p + 1) * B / P)`` of a batch sharded over the data axis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

T = TypeVar("T")

DATA_AXIS = "data"
# Leaves smaller than this many elements stay replicated under FSDP: sharding them saves
# nothing and costs one all-gather each.
FSDP_MIN_SIZE = 2**14


def define_flags() -> None:
    """Defines ``--coordinator_address``, ``--num_processes``, ``--process_id`` (absl)."""
    from absl import flags

    flags.DEFINE_string("coordinator_address", None,
                        "Multi-host: host:port of process 0's coordinator (the same on "
                        "every process). Unset with the two flags below: JAX's cluster "
                        "auto-detection (Slurm, Open MPI, TPU pods), else one process.")
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
    flags.DEFINE_integer("process_id", None,
                         "Multi-host: this process's id in [0, num_processes).")
    flags.DEFINE_integer("heartbeat_timeout_s", 100,
                         "Multi-host: a process silent this long counts as dead and stops "
                         "the run (raise it on oversubscribed machines).")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, heartbeat_timeout_s: int = 100) -> int:
    """Starts ``jax.distributed`` if this is a multi-process run; returns the process count.

    Call it before any other JAX call.  With no argument, JAX's cluster auto-detection
    (Slurm, Open MPI, Cloud TPU, ``JAX_COORDINATOR_ADDRESS``) decides; when it finds no
    cluster the run is a single process.  Explicit values override auto-detection; without
    a detected cluster all three are needed.

    Raises:
      ValueError: ``num_processes < 1``, ``process_id`` outside ``[0, num_processes)``, or
        an incomplete set of flags outside a detected cluster.
    """
    if heartbeat_timeout_s < 1:
        raise ValueError(f"heartbeat_timeout_s must be >= 1, got {heartbeat_timeout_s}")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and process_id < 0:
        raise ValueError(f"process_id must be >= 0, got {process_id}")
    if (process_id is not None and num_processes is not None
            and process_id >= num_processes):
        raise ValueError(f"process_id {process_id} is out of range for num_processes="
                         f"{num_processes} (valid: 0..{num_processes - 1})")
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        try:
            jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
        except ValueError as err:  # no cluster detected: one process
            logging.debug("no cluster detected (%s): single process", err)
            return 1
    else:
        try:
            jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                       heartbeat_timeout_seconds=heartbeat_timeout_s)
        except ValueError as err:
            raise ValueError(
                f"incomplete multi-host flags (coordinator_address={coordinator_address}, "
                f"num_processes={num_processes}, process_id={process_id}) and no cluster "
                f"detected to fill them in: {err}") from err
    logging.info("jax.distributed: process %d of %d, %d local / %d global device(s)",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    return jax.process_count()


def _sorted_devices(devices: Sequence[Any]) -> np.ndarray:
    return np.array(sorted(devices, key=lambda d: (d.process_index, d.id)))


def data_mesh(axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over every device of every process, grouped by process."""
    return Mesh(_sorted_devices(jax.devices()), (axis,))


def local_mesh(axis: str) -> Mesh | None:
    """A 1-D mesh over this process's devices, or None when it has one device."""
    devices = jax.local_devices()
    return Mesh(_sorted_devices(devices), (axis,)) if len(devices) > 1 else None


def split_for_process(items: Sequence[T], process_index: int | None = None,
                      process_count: int | None = None) -> list[T]:
    """This process's share of ``items``: every ``process_count``-th from ``process_index``.

    Deterministic in the order of ``items`` (pass a sorted list); the shares of all
    processes are disjoint and cover ``items``.  Defaults: this process of this run.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count < 1:
        raise ValueError(f"process_count must be >= 1, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} is out of range for process_count={count}")
    return list(items[index::count])


def process_batch_slice(global_batch: int, process_index: int | None = None,
                        process_count: int | None = None) -> slice:
    """Rows of a global batch that this process loads (contiguous, equal shares)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} is out of range for process_count={count}")
    if global_batch % count:
        raise ValueError(f"global batch {global_batch} is not divisible by the {count} "
                         "processes")
    per = global_batch // count
    return slice(index * per, (index + 1) * per)


def batch_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Sharding of a batch: leading axis split over ``axis``."""
    return NamedSharding(mesh, PartitionSpec(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of an array held whole on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def host_to_global(local: np.ndarray, sharding: NamedSharding,
                   global_batch: int) -> jax.Array:
    """Assembles each process's rows ``local [B / P, ...]`` into one global ``[B, ...]``."""
    local = np.asarray(local)
    shape = (global_batch,) + local.shape[1:]
    return jax.make_array_from_process_local_data(sharding, local, shape)


def full_to_global(full: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from host data that every process holds whole."""
    full = np.asarray(full)
    return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])


def _fsdp_spec(shape: tuple[int, ...], n: int, axis: str, min_size: int) -> PartitionSpec:
    if n <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):  # largest axis first
        if shape[dim] % n == 0:
            spec = [None] * len(shape)
            spec[dim] = axis
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(abstract: Any, mesh: Mesh, *, fsdp: bool = False,
                    axis: str = DATA_AXIS, min_size: int | None = None) -> Any:
    """Shardings for a params / optimiser-state pytree of ``ShapeDtypeStruct``.

    Replicated by default.  With ``fsdp`` every leaf of at least ``min_size`` elements is
    split along its largest axis divisible by the mesh size (ZeRO-3 style: XLA gathers
    the weights where a layer needs them); the others stay replicated.  ``min_size``
    defaults to ``FSDP_MIN_SIZE``.
    """
    n = mesh.shape[axis]
    min_size = FSDP_MIN_SIZE if min_size is None else min_size
    if not fsdp:
        return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract)
    return jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, _fsdp_spec(tuple(s.shape), n, axis, min_size)),
        abstract)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` tree carrying ``shardings`` (an Orbax restore target)."""
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)


def to_host(tree: Any, mesh: Mesh) -> Any:
    """Numpy copy of a (possibly sharded, multi-process) pytree, whole on every process."""
    gathered = jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)
    return jax.tree_util.tree_map(np.asarray, gathered)


def sum_over_processes(values: Sequence[float]) -> np.ndarray:
    """Element-wise sum of a vector of counters over all processes (every process calls)."""
    values = np.asarray(values, np.float64)
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values.astype(np.float32))).sum(0)


def max_over_processes(value: float) -> float:
    """Largest ``value`` over all processes (every process calls)."""
    if jax.process_count() == 1:
        return float(value)
    from jax.experimental import multihost_utils

    return float(np.max(multihost_utils.process_allgather(np.float32(value))))
