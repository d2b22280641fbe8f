"""Background-thread prefetching of host batches, tracking the sampler position of each."""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol


class Sampler(Protocol):
    def __next__(self) -> Any: ...

    def state_dict(self) -> dict: ...


class Prefetcher:
    """Iterates ``(batch, sampler_state_after_batch)`` while a thread fills a queue.

    The state paired with each batch is the sampler position right after producing it,
    so a checkpoint that stores it resumes exactly at the next unconsumed batch.
    """

    def __init__(self, sampler: Sampler, size: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._sampler = sampler
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                item = (next(self._sampler), self._sampler.state_dict())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # surfaced to the consumer on its next call
            self._queue.put(err)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> tuple[Any, dict]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stops the thread (pending batches are dropped)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
