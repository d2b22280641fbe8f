"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from stride_jax.data import dataset


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
