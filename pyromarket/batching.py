"""Group commit by leader and followers: many threads submit, one at a time runs a batch.

Pure threading, no Pyro5 and no I/O of its own. A thread that submits while no batch
is running becomes the leader: it runs the handler itself, on everything queued so far
(its own item first). Threads that submit meanwhile queue up and sleep; when the
leader is done it wakes them with their results and promotes the first still-waiting
one to lead the next batch. So one batch is in flight at a time, a batch is whatever
queued while the last one ran, nothing waits on purpose, and the common case costs no
hand-off to a helper thread.

The warehouse uses it so one SQLite transaction (one fsync) covers every order that
arrived during the previous commit; the trader uses it so one warehouse call carries
every order forwarded meanwhile. (Measured: several batches in flight at once split
the batches and cut throughput by about a quarter; see bench/core.py.)
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Generic, Sequence, TypeVar

from .errors import Unavailable

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class _Signal:
    """A one-shot signal on a bare lock: cheaper than threading.Event, which wraps a
    pure-Python Condition (measured: hand-offs were a fifth of the trader's CPU)."""
    __slots__ = ("_lock",)

    def __init__(self):
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float = -1) -> bool:
        if self._lock.acquire(timeout=timeout):
            self._lock.release()       # stay set for any later wait()
            return True
        return False


class _Slot:
    __slots__ = ("item", "done", "result", "lead")

    def __init__(self, item):
        self.item = item
        self.done = _Signal()           # set when the result is in, or when promoted to lead
        self.result = None
        self.lead = False


class Batcher(Generic[T, R]):
    """Feed `handler(batch) -> results` (same length, same order), one batch at a time.

    A result that is an exception is raised in its submitter. If the handler itself
    raises, every item of that batch gets the exception.
    """

    def __init__(self, handler: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 max_batch: int, name: str = "batcher"):
        self.name = name
        self._handler = handler
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: collections.deque[_Slot] = collections.deque()
        self._busy = False          # a leader is running a batch
        self._closed = False

    def submit(self, item: T, timeout: float) -> R:
        """Apply one item; a follower waits at most `timeout` s before it gives up."""
        slot = _Slot(item)
        with self._lock:
            if self._closed:
                raise Unavailable(f"{self.name} is shutting down")
            self._pending.append(slot)
            slot.lead = not self._busy
            self._busy = True
        if not slot.lead:
            self._follow(slot, timeout)
        if slot.lead:
            self._run_batch()
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new items and wait (bounded) for the batch in flight. Safe to call twice."""
        with self._lock:
            self._closed = True
            self._idle.wait_for(lambda: not self._busy, timeout)

    def _follow(self, slot: _Slot, timeout: float) -> None:
        if slot.done.wait(timeout):
            return
        with self._lock:
            if not slot.lead and slot in self._pending:     # never picked up: withdraw
                self._pending.remove(slot)
                raise Unavailable(f"{self.name}: no result within {timeout:.1f} s; "
                                  f"retry with the same request_id")
        slot.done.wait()        # in a running batch, whose handler has its own deadline

    def _run_batch(self) -> None:
        with self._lock:
            n = min(len(self._pending), self._max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
        try:
            results = self._handler([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"handler returned {len(results)} results for {len(batch)}")
        except BaseException as exc:   # noqa: BLE001 - handed to every waiter, not swallowed
            results = [exc] * len(batch)
        for slot, result in zip(batch, results):
            slot.result = result
            if not slot.lead:
                slot.done.set()
        self._hand_over()

    def _hand_over(self) -> None:
        with self._lock:
            if self._pending:
                nxt = self._pending[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._busy = False
                self._idle.notify_all()
