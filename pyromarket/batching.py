"""Group commit: many threads submit items, one worker applies them in batches.

Pure threading, no Pyro5 and no I/O of its own. The warehouse uses it so that one
SQLite transaction (one fsync) covers every operation that arrived meanwhile; the
trader uses it so that one warehouse call carries every order forwarded meanwhile.
Nothing waits on purpose: a batch is whatever queued up while the last one ran.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Sequence, TypeVar

from .errors import Unavailable

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot:
    __slots__ = ("item", "done", "result")

    def __init__(self, item):
        self.item = item
        self.done = threading.Event()
        self.result = None


class Batcher(Generic[T, R]):
    """Feed `handler(batch) -> results` (same length, same order) from one worker thread.

    A result that is an exception is raised in the submitter. If the handler itself
    raises, every item of that batch gets the exception.
    """

    def __init__(self, handler: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 max_batch: int, name: str = "batcher"):
        self._handler = handler
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T, timeout: float) -> R:
        """Apply one item; wait at most `timeout` seconds for its result."""
        if self._closed:
            raise Unavailable("shutting down")
        slot = _Slot(item)
        self._queue.put(slot)
        if not slot.done.wait(timeout):
            raise Unavailable(f"no result within {timeout:.1f} s; retry with the same request_id")
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the queued items; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    def _take_batch(self) -> list[_Slot] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)     # finish this batch, stop on the next take
                break
            batch.append(nxt)
        return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            try:
                results = self._handler([s.item for s in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"handler returned {len(results)} results for {len(batch)}")
            except BaseException as exc:   # noqa: BLE001 - handed to every waiter, not swallowed
                results = [exc] * len(batch)
            for slot, result in zip(batch, results):
                slot.result = result
                slot.done.set()
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        while True:
            try:
                slot = self._queue.get_nowait()
            except queue.Empty:
                return
            if slot is not None:
                slot.result = Unavailable("shutting down")
                slot.done.set()
