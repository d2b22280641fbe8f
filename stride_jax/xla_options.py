"""XLA CPU options the package sets for itself, because they measured faster.

``--xla_cpu_experimental_ynn_fusion_type=dot`` has XLA's CPU backend run its dot
fusions through YNNPACK.  Measured on a 2-core Xeon (docs/speed.md), alternating with
and without: one CPU-size training step 1.10-1.17 s against 1.23-1.24 s, test-time
training 3-11 % less time per video at the small and CPU sizes (all 6 pairs), with the
same results (the model's equality tests against the PyTorch reference pass with it).
The compiled HLO text looks the same either way; the option changes which kernels run
the dots.

``apply()`` runs when ``stride_jax`` is imported and appends the options to
``XLA_FLAGS``; they take effect only if JAX has not started its backends yet (import
``stride_jax`` before running JAX code).  An option already named in the user's
``XLA_FLAGS`` keeps the user's value; ``STRIDE_JAX_XLA_DEFAULTS=0`` turns them all off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=dot",)
OPT_OUT = "STRIDE_JAX_XLA_DEFAULTS"


def _backends_started() -> bool:
    if "jax" not in sys.modules:  # not imported: nothing started (and no import here)
        return False
    try:  # a private JAX function: if a JAX version lacks it, assume not started
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def _named_options(xla_flags: str) -> set[str]:
    """``{"--xla_foo", ...}``: the options ``XLA_FLAGS`` sets, without their values."""
    return {part.split("=", 1)[0] for part in xla_flags.split()}


def apply(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Appends each of ``CPU_FLAGS`` whose option ``XLA_FLAGS`` does not name yet.

    Returns the flags added (none when ``STRIDE_JAX_XLA_DEFAULTS=0`` or, for the real
    environment, when JAX's backends already started and the flags would be ignored).
    """
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    if environ is None and _backends_started():
        return []
    current = env.get("XLA_FLAGS", "")
    named = _named_options(current)
    added = [flag for flag in CPU_FLAGS if flag.split("=", 1)[0] not in named]
    if added:
        env["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
