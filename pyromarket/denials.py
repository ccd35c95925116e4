"""A cached trader's local denials, kept on disk so that a long run's memory stays flat.

The under-sell audit (audit.py) needs every local denial's wall time, product and
quantity, read back from the live trader after a run. Kept in a list, they grew a
trader's memory by about 90 bytes each: 650 MB an hour at 2,000 denials a second. Here
each is a 20-byte record in an unnamed file in the run folder: the file has no name from
the start, so it goes when the trader exits, however it exits, and two traders never
share one. Records gather in memory and go to the file WRITE_RECORDS at a time, each
write at the offset its records belong (so appending makes no system call most times);
a read writes what is gathered first, so it sees every denial made before it.

A write the disk refuses (full, or failing) drops the records it carried and counts them
in `lost`, which the trader reports as `unrecorded_denials`: the audit then undercounts
under-sells by at most that many. It never fails the buy being denied; before, once the
disk was full, every local denial raised OSError to its buyer, and so did the audit.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from typing import Sequence

__all__ = ["DenialFile", "WRITE_RECORDS"]

_RECORD = struct.Struct("<dIq")        # wall time, product's index, quantity
WRITE_RECORDS = 400                    # records per write: 8 KB, a buffered file's worth


class DenialFile:
    """Append-only (time, product, qty) records, read back by index."""

    def __init__(self, folder: str, products: Sequence[str]):
        self._products = list(products)
        self._index = {p: i for i, p in enumerate(self._products)}
        self._file = tempfile.TemporaryFile(dir=folder, prefix="denials-", buffering=0)
        self._gathered = bytearray()     # records not yet written
        self._written = 0                # records in the file, which read() serves
        self.lost = 0                    # records the disk refused
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Denials recorded so far (in the file, or gathered to be written)."""
        with self._lock:
            return self._written + len(self._gathered) // _RECORD.size

    def append(self, t: float, product: str, qty: int) -> None:
        with self._lock:
            if self._file.closed:        # the trader is shutting down
                return
            self._gathered += _RECORD.pack(t, self._index[product], qty)
            if len(self._gathered) >= WRITE_RECORDS * _RECORD.size:
                self._write()

    def read(self, index: int, limit: int) -> list[tuple[float, str, int]]:
        """Denials from number `index` (0 is the first) on, at most `limit` of them."""
        with self._lock:
            if self._file.closed:
                return []
            self._write()
            n = max(0, min(limit, self._written - index))
            if n == 0:
                return []
            data = os.pread(self._file.fileno(), n * _RECORD.size, index * _RECORD.size)
        return [(t, self._products[p], qty) for t, p, qty in _RECORD.iter_unpack(data)]

    def close(self) -> None:
        """Close (and so delete) the file; later appends are dropped, reads find none."""
        with self._lock:
            self._file.close()

    def _write(self) -> None:
        """The gathered records, at the file's end; whole records the disk refuses are
        counted in `lost` and dropped (a cut-off one is written over by the next write)."""
        data, self._gathered = memoryview(self._gathered), bytearray()
        done = 0
        try:
            while done < len(data):
                done += os.pwrite(self._file.fileno(), data[done:],
                                  self._written * _RECORD.size + done)
        except OSError:
            self.lost += len(data) // _RECORD.size - done // _RECORD.size
        self._written += done // _RECORD.size
