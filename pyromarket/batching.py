"""Batching: many threads submit items, one batch at a time goes to a handler.

Pure threading, no Pyro5 and no I/O of its own. Two ways to run the batches, one
contract (`submit(item, timeout) -> result`, `close()`):

* `Batcher`, leader and followers. A thread that submits while no batch is running
  becomes the leader: it runs the handler itself on everything queued so far (its own
  item first). Threads that submit meanwhile queue up and sleep; when the leader is done
  it wakes them with their results and promotes the first still-waiting one to lead the
  next batch. An idle batcher costs no hand-off to another thread. The warehouse uses it,
  so one SQLite transaction (one fsync) covers every order that arrived during the last
  commit: with one trader there is one call at a time, and its own thread commits it.
* `Pump`, a dedicated thread that runs batch after batch while anything is queued.
  The trader's warehouse link uses it: under load the next warehouse call leaves as soon
  as the last reply is in, instead of after a promoted follower thread has been woken and
  scheduled, which on a busy machine is on the serial path of every batch. (Measured with
  8 clients against a FULL warehouse: the pump beat leader/follower in 11 of 14 paired
  runs, median +7%.) A submitter that finds nothing running runs its batch itself, as a
  leader would, and hands the queue to the pump thread only if more came meanwhile: an
  idle link costs no thread hand-off (measured with 1 client: +13% buys/s, and 0.39
  instead of 0.50 ms of trader CPU per buy; no change with 8).

In both, a batch is whatever queued while the last one ran, and nothing waits on
purpose. One batch is in flight at a time (measured: several in flight split the batches
and gained nothing; see bench/core.py).
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Generic, Sequence, TypeVar

from .errors import Unavailable

__all__ = ["Batcher", "Pump"]

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


class _Batching(Generic[T, R]):
    """What both strategies share: the queue, taking a batch, delivering its results, and
    a waiter that gives up (and withdraws) if its item was never picked up in time.

    Contract: `handler(batch) -> results` (same length, same order). A result that is an
    exception is raised in its submitter; if the handler itself raises, every item of
    that batch gets the exception.
    """

    def __init__(self, handler: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 max_batch: int, name: str):
        self.name = name
        self._handler = handler
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: collections.deque[_Slot] = collections.deque()
        self._closed = False

    def _enqueue(self, item: T) -> _Slot:
        """A queued slot for `item`; the caller holds the lock."""
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down")
        slot = _Slot(item)
        self._pending.append(slot)
        return slot

    def _wait(self, slot: _Slot, timeout: float) -> None:
        """Until the slot has its result or was promoted to lead. An item not picked up
        within `timeout` is withdrawn, so it is never applied, and the caller gets
        Unavailable; one already in a running batch is waited for (its handler has its
        own deadline)."""
        if slot.done.wait(timeout):
            return
        with self._lock:
            if not slot.lead and slot in self._pending:
                self._pending.remove(slot)
                raise Unavailable(f"{self.name}: no result within {timeout:.1f} s; "
                                  f"retry with the same request_id")
        slot.done.wait()

    def _run_batch(self) -> None:
        """Take up to max_batch queued items, run them, hand every slot its result."""
        with self._lock:
            n = min(len(self._pending), self._max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
        if not batch:                          # every waiter withdrew meanwhile
            return
        try:
            results = self._handler([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"handler returned {len(results)} results for {len(batch)}")
        except BaseException as exc:   # noqa: BLE001 - handed to every waiter, not swallowed
            results = [exc] * len(batch)
        for slot, result in zip(batch, results):
            slot.result = result
            if not slot.lead:                  # a leader is running this very code
                slot.done.set()

    @staticmethod
    def _result(slot: _Slot) -> R:
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result


class Batcher(_Batching[T, R]):
    """Leader and followers: the first submitter runs the batch itself, on its own thread."""

    def __init__(self, handler: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 max_batch: int, name: str = "batcher"):
        super().__init__(handler, max_batch, name)
        self._idle = threading.Condition(self._lock)
        self._busy = False          # a leader is running a batch

    def submit(self, item: T, timeout: float) -> R:
        """Apply one item; a follower waits at most `timeout` s before it gives up."""
        with self._lock:
            slot = self._enqueue(item)
            slot.lead = not self._busy
            self._busy = True
        if not slot.lead:
            self._wait(slot, timeout)
        if slot.lead:
            self._run_batch()
            self._hand_over()
        return self._result(slot)

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new items and wait (bounded) for the batch in flight. Safe to call twice."""
        with self._lock:
            self._closed = True
            self._idle.wait_for(lambda: not self._busy, timeout)

    def _hand_over(self) -> None:
        with self._lock:
            if self._pending:
                nxt = self._pending[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._busy = False
                self._idle.notify_all()


class Pump(_Batching[T, R]):
    """A pump thread runs batch after batch while anything is queued; a submitter that
    finds nothing running runs its own batch on its own thread, so an idle pump costs no
    hand-off either. Exactly one of them owns the queue at a time (`_owner`)."""

    def __init__(self, handler: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 max_batch: int, name: str = "pump"):
        super().__init__(handler, max_batch, name)
        self._wake = threading.Condition(self._lock)    # the pump sleeps here
        self._owner: str | None = None   # who runs batches now: None, "submitter" or "pump"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T, timeout: float) -> R:
        """Apply one item; wait at most `timeout` s for it to be picked up."""
        with self._lock:
            slot = self._enqueue(item)
            if self._owner is None:          # nothing runs and nothing else is queued
                self._owner, slot.lead = "submitter", True
        if slot.lead:
            self._run_batch()
            self._hand_over()
        else:
            self._wait(slot, timeout)
        return self._result(slot)

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new items, let what is queued finish (bounded), stop the pump.
        Safe to call twice."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _hand_over(self) -> None:
        """A submitter's batch is done: the pump takes over whatever queued meanwhile."""
        with self._lock:
            self._owner = "pump" if self._pending else None
            if self._owner == "pump" or self._closed:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._owner != "pump" and not (self._closed and self._owner is None):
                    self._wake.wait()
                if self._owner != "pump":       # closed, and nothing runs or waits
                    return
                if not self._pending:
                    self._owner = None
                    continue
            self._run_batch()
