"""Each process's event log: one `.txt` file of timestamped lines, in the spec's style.

    24.11.2026 16:54:32.10 Trader 1 informed buyer 2 that no salt was available

Logging an event costs the caller one append to an in-memory queue: no lock, no
formatting and no system call on a request's path. A writer thread of the log's own
stamps and writes what queued every `flush_s` (0.1 s), and `close()` writes the rest.
Measured with 8 buyers against one trader: writing each line as it happened (a
line-buffered file, so one write(2) per request, which also gives up the GIL mid-request)
cost the trader about 30 µs of CPU per request, a tenth of its share.
The price: a process killed with -9 loses the lines of its last `flush_s`. The ledger,
not this file, is the durable record of what happened; this is for people to read.

A file that refuses a write (a full disk, an I/O error) costs the events of that write,
never the process: they are counted, the file is opened again at the next write, and the
first line that gets through says how many were lost and why. While nothing can be
written, at most MAX_QUEUED events wait in memory; later ones are counted and dropped.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import threading
import time

__all__ = ["EventLog", "stamp"]

FLUSH_S = 0.1
# Events held in memory for the writer; one is about 200 bytes, so this is about 20 MB.
# The writer empties the queue every FLUSH_S, so only a file that cannot take writes
# (or a disk that hangs) lets it fill.
MAX_QUEUED = 100_000


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(whole))


def stamp(t: float) -> str:
    """`dd.mm.YYYY HH:MM:SS.cc` in local time, as in the spec's examples."""
    return f"{_second(int(t))}.{int(t * 100) % 100:02d}"


class EventLog:
    """Events in, timestamped lines out (with `path` None, events are dropped)."""

    def __init__(self, path: str | None, flush_s: float = FLUSH_S):
        self.path = path
        self.lost = 0                    # events never written, since the start
        self._unreported = 0             # of those, not yet noted in the file
        self._lost_why = ""
        self._count_lock = threading.Lock()
        self._fh = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fh = self._open()
        # (time, message) or (time, [messages]); deque appends and pops are thread-safe
        self._queue: collections.deque = collections.deque()
        self._write_lock = threading.Lock()      # one writer at a time: the thread or close()
        self._closed = threading.Event()
        self._finished = path is None            # no more writes: no file, or closed
        self._writer = None
        if self._fh is None:
            self._closed.set()           # no file, so nothing to queue: drop events at once
        else:
            self._writer = threading.Thread(target=self._write_every, args=(flush_s,),
                                            name="event log", daemon=True)
            self._writer.start()

    def __call__(self, message: str) -> None:
        self._enqueue(message, 1)

    def many(self, messages: list[str]) -> None:
        """Several events of one instant (a committed batch): they share one stamp."""
        if messages:
            self._enqueue(messages, len(messages))

    def flush(self) -> None:
        """Write every event queued so far. Never raises: what the file refuses is
        counted in `lost` and noted in the file once it takes writes again."""
        with self._write_lock:
            lines = self._drain()
            if self._finished or not (lines or self._unreported):
                return
            noted, note = self._note()
            try:
                if self._fh is None:
                    self._fh = self._open()          # again, after a failed write
                self._fh.write("".join(note + lines))
                self._fh.flush()
            except OSError as exc:
                self._lose(len(lines), exc.strerror or str(exc))
                self._discard_file()
                return
            with self._count_lock:
                self._unreported -= noted            # more may have been lost meanwhile

    def close(self) -> None:
        """Write what is queued and close the file. Safe to call twice; never raises."""
        self._closed.set()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(5.0)
        self.flush()
        with self._write_lock:
            self._finished = True
            self._discard_file()

    def _enqueue(self, what: str | list[str], n: int) -> None:
        if not self._closed.is_set():
            if len(self._queue) < MAX_QUEUED:
                self._queue.append((time.time(), what))
            else:
                self._lose(n, f"more than {MAX_QUEUED} events waited for the file")

    def _open(self):
        # backslashreplace: no event text (a lone surrogate from some caller) can make a
        # write fail
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace")

    def _drain(self) -> list[str]:
        lines = []
        while self._queue:
            t, what = self._queue.popleft()
            prefix = stamp(t) + " "
            if isinstance(what, str):
                lines.append(prefix + what + "\n")
            else:
                lines.extend(prefix + m + "\n" for m in what)
        return lines

    def _note(self) -> tuple[int, list[str]]:
        """(events it reports, the line saying how many were lost and why, if any)."""
        with self._count_lock:
            n = self._unreported
            if not n:
                return 0, []
            # a line of its own: the failed write may have left a line cut short
            return n, [f"\n{stamp(time.time())} ({n} events of this log were not written: "
                       f"{self._lost_why})\n"]

    def _lose(self, n: int, why: str) -> None:
        with self._count_lock:
            self.lost += n
            self._unreported += n
            self._lost_why = why

    def _discard_file(self) -> None:
        """Close the file, dropping what its buffers still hold (a failed write leaves
        it there); the next write opens it again."""
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()

    def _write_every(self, flush_s: float) -> None:
        while not self._closed.wait(flush_s):
            self.flush()
