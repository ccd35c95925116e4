"""Each process's event log: one `.txt` file of timestamped lines, in the spec's style.

    24.11.2026 16:54:32.10 Trader 1 informed buyer 2 that no salt was available

Line-buffered, so a killed process loses at most the line it was writing. The ledger,
not this file, is the durable record of what happened; this is for people to read.
"""

from __future__ import annotations

import functools
import os
import threading
import time

__all__ = ["EventLog", "stamp"]


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(whole))


def stamp(t: float) -> str:
    """`dd.mm.YYYY HH:MM:SS.cc` in local time, as in the spec's examples."""
    return f"{_second(int(t))}.{int(t * 100) % 100:02d}"


class EventLog:
    def __init__(self, path: str | None):
        self.path = path
        self._fh = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fh = open(path, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        line = f"{stamp(time.time())} {message}\n"
        with self._lock:
            if self._fh is not None:
                self._fh.write(line)

    def many(self, messages: list[str]) -> None:
        """Several events of one instant (a committed batch): one stamp, one write."""
        if not messages:
            return
        prefix = stamp(time.time()) + " "
        text = "".join(prefix + m + "\n" for m in messages)
        with self._lock:
            if self._fh is not None:
                self._fh.write(text)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
