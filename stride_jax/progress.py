"""Per-epoch progress of a long compiled call: a bar with an ETA on a terminal, log lines
otherwise.

``stride_jax.ttt`` reports each finished epoch from inside the compiled ``lax.scan``
(``jax.debug.callback``) to the sinks registered with :func:`reporting`; an
:class:`EpochProgress` is such a sink.  With several devices every device reports the
same epoch; a sink counts each epoch once.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from absl import logging

_SINKS: list[Callable[[int], None]] = []
_LOCK = threading.Lock()


def report_epoch(epoch) -> None:
    """Host side of the in-loop callback: passes the finished epoch (0-based) to the sinks."""
    with _LOCK:
        sinks = list(_SINKS)
    for sink in sinks:
        sink(int(epoch))


@contextlib.contextmanager
def reporting(sink: Callable[[int], None] | None) -> Iterator[None]:
    """Routes the epochs reported while the block runs to ``sink`` (None: nowhere)."""
    if sink is None:
        yield
        return
    with _LOCK:
        _SINKS.append(sink)
    try:
        yield
    finally:
        with _LOCK:
            _SINKS.remove(sink)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class EpochProgress:
    """Counts finished epochs of one call and shows them.

    On a terminal (``stream.isatty()``) it redraws one line: ``label [#####-----] 12/30
    epochs, 40 s, ETA 1:00 min``.  Otherwise it logs a line at most every ``every_s``
    seconds and at the end.
    """

    def __init__(self, total: int, label: str = "test-time training", *,
                 stream: TextIO | None = None, log: Callable[[str], None] = logging.info,
                 every_s: float = 10.0, width: int = 24,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.label, self.width = int(total), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.log, self.every_s, self.clock = log, every_s, clock
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.start = clock()
        self._last_log = self.start

    def line(self) -> str:
        """The status text for the epochs done so far."""
        elapsed = self.clock() - self.start
        text = f"{self.label}: {self.done}/{self.total} epochs, {_duration(elapsed)}"
        if 0 < self.done < self.total:
            text += f", ETA {_duration(elapsed / self.done * (self.total - self.done))}"
        return text

    def __call__(self, epoch: int) -> None:
        done = min(int(epoch) + 1, self.total)
        if done <= self.done:  # the same epoch from another device
            return
        self.done = done
        if self.tty:
            filled = round(self.width * done / max(self.total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            text = self.line().replace(": ", f" [{bar}] ", 1)
            end = "\n" if done == self.total else ""
            self.stream.write(f"\r{text}\x1b[K{end}")
            self.stream.flush()
            return
        now = self.clock()
        if done == self.total or now - self._last_log >= self.every_s:
            self._last_log = now
            self.log(self.line())
