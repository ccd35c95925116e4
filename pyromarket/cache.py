"""A trader's inventory cache: per product, the stock and warehouse version it last saw.

Pure: no Pyro5, and the clock is passed in, so tests never sleep. An entry is fresh
for `ttl_s` after it was fetched or confirmed. Versions order updates: an entry is
replaced only by data with a version at least as new, so a late reply can never
overwrite newer data. Revalidation works like HTTP's ETag/304: the cache sends the
versions it holds and adopts only what changed; one call covers every product, and
concurrent readers of a stale entry share one call (single flight): the first reader
leads it, the rest wait for its result.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from .errors import Unavailable

__all__ = ["Entry", "InventoryCache", "Fetch"]

# versions held -> {product: (stock, version)} of the products whose version changed
Fetch = Callable[[Mapping[str, int]], Mapping[str, tuple[int, int]]]
UNKNOWN = -1            # the version we claim for a product we hold nothing about


@dataclass
class Entry:
    """What the cache holds for one product: the stock and version the warehouse
    reported, and when (by the cache's clock) they were fetched or last confirmed."""
    stock: int
    version: int
    fetched_at: float


class InventoryCache:
    """Per-product entries with a TTL, updated by version (never backwards) and
    revalidated by one shared call when stale. Thread-safe; `clock` is injectable."""

    def __init__(self, products: Iterable[str], ttl_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.products = tuple(products)
        self.ttl_s, self.clock = ttl_s, clock
        self.stats: Counter[str] = Counter()
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._inflight: threading.Event | None = None     # a revalidation under way

    def peek(self, product: str) -> Entry | None:
        """A copy of the entry for `product`, fresh or not, or None if there is none."""
        with self._lock:
            e = self._entries.get(product)
            return Entry(e.stock, e.version, e.fetched_at) if e else None

    def is_fresh(self, e: Entry | None, now: float) -> bool:
        """Whether entry `e` is younger than the TTL at time `now`."""
        return e is not None and now - e.fetched_at < self.ttl_s

    def observe(self, product: str, stock: int, version: int) -> bool:
        """Adopt warehouse data unless we hold a newer version. The same version counts
        as a confirmation: its stock is the warehouse's word and the entry is fresh again."""
        with self._lock:
            return self._adopt(product, stock, version, self.clock())

    def reserve(self, product: str, qty: int) -> bool:
        """Take `qty` off a fresh entry for a buy being forwarded; False if it cannot fill it."""
        with self._lock:
            e = self._entries.get(product)
            if e is None or e.stock < qty:
                return False
            e.stock -= qty
            return True

    def fresh(self, product: str, fetch: Fetch, timeout_s: float) -> Entry:
        """A fresh entry for `product`, revalidating once (for all products) if needed."""
        with self._lock:
            e = self._entries.get(product)
            if self.is_fresh(e, self.clock()):
                self.stats["hits"] += 1
                return Entry(e.stock, e.version, e.fetched_at)
            self.stats["misses"] += 1
            lead = self._inflight is None
            if lead:
                self._inflight = threading.Event()
            waiter = self._inflight
        if lead:
            self._lead_revalidation(fetch, waiter)
        elif not waiter.wait(timeout_s):
            raise Unavailable(f"cache revalidation took longer than {timeout_s:.1f} s")
        e = self.peek(product)
        if e is None:
            raise Unavailable(f"no stock information for {product!r} yet")
        return e

    def _lead_revalidation(self, fetch: Fetch, done: threading.Event) -> None:
        try:
            with self._lock:
                held = {p: (self._entries[p].version if p in self._entries else UNKNOWN)
                        for p in self.products}
            changed = fetch(held)
            with self._lock:
                now = self.clock()
                self.stats["revalidations"] += 1
                self.stats["revalidations_unchanged"] += not changed
                for product in held:
                    if product in changed:
                        stock, version = changed[product]
                        self._adopt(product, stock, version, now)
                    elif product in self._entries:
                        self._entries[product].fetched_at = now    # 304: still current
        finally:
            with self._lock:
                self._inflight = None
            done.set()

    def _adopt(self, product: str, stock: int, version: int, now: float) -> bool:
        e = self._entries.get(product)
        if e is not None and version < e.version:
            return False
        self._entries[product] = Entry(stock, version, now)
        return True
