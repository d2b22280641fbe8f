"""Logging set-up shared by the entry points."""

from __future__ import annotations

import logging as py_logging

from absl import logging


class _DropOrbaxInfo(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = any(s in record.pathname for s in ("orbax", "tensorstore", "xla_bridge"))
        return not (noisy and record.levelno < py_logging.WARNING)


def setup() -> None:
    """INFO-level absl logging without Orbax's per-save chatter."""
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _DropOrbaxInfo) for f in handler.filters):
        handler.addFilter(_DropOrbaxInfo())
    py_logging.getLogger("absl").addFilter(_DropOrbaxInfo())
