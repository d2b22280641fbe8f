"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import pytest

from stride_jax.data import dataset

# Tests compile many small programs and run each briefly: XLA's LLVM backend at
# optimisation level 0 compiles them ~40 % faster (a tiny-model TTT: 12.7 -> 7.8 s) and
# computes the same functions.  Set in the environment, so the subprocesses the tests
# start inherit it; a level the user already set wins.  Library and benchmarks keep
# XLA's default level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()


# One XLA compilation cache for the whole pytest run, shared with the subprocesses the
# tests start (environment): the same small programs (pretraining step, validation
# forward, simulator) are otherwise compiled again in every process.  A fresh directory
# per run, so nothing outlives it.  Programs with host callbacks (the TTT
# progress report) are never cached by JAX.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="stride_jax_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def raw_data_root() -> Path:
    """Cache root holding the fetched raw motion files; skips when they are absent."""
    root = dataset.data_root()
    if not (dataset.raw_dir(root) / "manifest.json").is_file():
        pytest.skip(f"fetched motion data absent at {dataset.raw_dir(root)}; run: python -m stride_jax.data.fetch")
    return root


@pytest.fixture(scope="session")
def prepared_data_root() -> Path:
    """Cache root holding the prepared splits; skips when they are absent."""
    root = dataset.data_root()
    if not (dataset.processed_dir(root) / "manifest.json").is_file():
        pytest.skip(f"prepared motion data absent at {dataset.processed_dir(root)}; run: {dataset.PREPARE_COMMAND}")
    return root
