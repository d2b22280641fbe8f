"""stride_jax: JAX/Flax STRIDE — test-time training of a motion prior for occluded 3D pose.

The library face::

    from stride_jax import align_videos, load_prior, Video, AlignResult

    prior = load_prior(DEFAULT_PRIOR)                 # a Prior: params, model config, meta
    results, timing = align_videos([Video(poses, valid, fps=25.0)], prior, config.ttt)

The names are imported on first use, so ``import stride_jax.io`` does not import JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from stride_jax import xla_options as _xla_options

_xla_options.apply()  # XLA CPU options measured faster (stride_jax/xla_options.py)

_EXPORTS = {
    "AlignResult": "stride_jax.aligner",
    "AlignTiming": "stride_jax.aligner",
    "Video": "stride_jax.aligner",
    "align_videos": "stride_jax.aligner",
    "Prior": "stride_jax.checkpoint",
    "load_prior": "stride_jax.checkpoint",
    "DEFAULT_PRIOR": "stride_jax.pipeline",
    "align_files": "stride_jax.pipeline",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from stride_jax.aligner import AlignResult, AlignTiming, Video, align_videos  # noqa: F401
    from stride_jax.checkpoint import Prior, load_prior  # noqa: F401
    from stride_jax.pipeline import DEFAULT_PRIOR, align_files  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stride_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
