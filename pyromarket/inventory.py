"""How a trader decides a buy or a sell: the two inventory strategies.

Both take plain callables (forward an order to the warehouse; revalidate versions), so
they hold no Pyro5 and are tested without sockets. The Trader (trader.py) is the same
in both modes; only its strategy differs.

  SyncInventory     every buy and sell goes to the warehouse (cache-less).
  CachedInventory   a buy the fresh cache cannot fill is denied locally (a possible
                    under-sell, recorded with a wall-clock time so the ledger can later
                    tell whether it really was one); a buy it can fill is forwarded, and
                    a warehouse rejection of it is an over-sell. Sells always go to the
                    warehouse and are acknowledged only once committed. Every warehouse
                    reply refreshes the cache for free.

Design choice: with `reserve_on_forward` the cache takes a forwarded buy's quantity off
at once, so concurrent buys at the same trader do not all chase the last unit. That
trades a few under-sells (a forward that then fails leaves the count low until the
warehouse's reply corrects it, milliseconds later) for fewer over-sells.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

from .cache import Fetch, InventoryCache
from .denials import DenialFile
from .orders import Order
from .store import UNAVAILABLE

__all__ = ["SyncInventory", "CachedInventory", "Forward"]

Forward = Callable[[Order], dict]     # order -> the warehouse's reply dict (with retries)


class SyncInventory:
    """Cache-less: every buy and sell is forwarded to the warehouse, whose reply is final."""
    mode = "sync"

    def __init__(self, forward: Forward, lookup: Callable[[str], dict]):
        self._forward, self._lookup = forward, lookup
        self.stats: Counter[str] = Counter()

    def buy(self, order: Order) -> dict:
        self.stats["forwarded_buys"] += 1
        return self._forward(order)

    buy_at_warehouse = buy

    def sell(self, order: Order) -> dict:
        return self._forward(order)

    def lookup(self, product: str) -> dict:
        return self._lookup(product)

    def snapshot(self) -> dict:
        return dict(self.stats)

    def close(self) -> None:
        pass


class CachedInventory:
    """Cached: a buy is decided against a TTL cache of the warehouse's stock and
    versions first (see the module docstring); sells and retries always go to the warehouse.
    `stats` counts local denials, forwarded buys and over-sells; `denials` (a
    denials.DenialFile) keeps each local denial's wall time, so an audit can tell a real
    under-sell from a correct denial."""
    mode = "cached"

    def __init__(self, forward: Forward, fetch: Fetch, cache: InventoryCache,
                 reserve_on_forward: bool, timeout_s: float, denials: DenialFile,
                 wall_clock: Callable[[], float] = time.time):
        self._forward, self._fetch, self.cache = forward, fetch, cache
        self._reserve, self._timeout_s, self._wall = reserve_on_forward, timeout_s, wall_clock
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._denials = denials

    def buy(self, order: Order) -> dict:
        """Deny from a fresh cache entry if it cannot fill the order; else forward, and
        count an over-sell when the warehouse then finds the goods unavailable."""
        entry = self.cache.fresh(order.product, self._fetch, self._timeout_s)
        can_fill = (self.cache.reserve(order.product, order.qty) if self._reserve
                    else entry.stock >= order.qty)
        if not can_fill:
            return self._deny(order, entry)
        reply = self.buy_at_warehouse(order)
        if reply["outcome"] == UNAVAILABLE and not reply["replayed"]:
            self._count(oversells=1)
        return reply

    def buy_at_warehouse(self, order: Order) -> dict:
        """Forward without asking the cache: for retries, whose first attempt may
        already have been applied (the warehouse replays its recorded outcome)."""
        self._count(forwarded_buys=1)
        reply = self._forward(order)
        self.cache.observe(order.product, reply["stock"], reply["version"])
        return reply

    def sell(self, order: Order) -> dict:
        reply = self._forward(order)
        self.cache.observe(order.product, reply["stock"], reply["version"])
        return reply

    def lookup(self, product: str) -> dict:
        e = self.cache.fresh(product, self._fetch, self._timeout_s)
        return {"product": product, "stock": e.stock, "version": e.version, "cached": True,
                "age_s": round(self.cache.clock() - e.fetched_at, 3)}

    def snapshot(self) -> dict:
        """The strategy's counters and the cache's, for the trader's stats()."""
        with self._lock:
            out = dict(self.stats)
        cs = dict(self.cache.stats)
        return {**out, "unrecorded_denials": self._denials.lost,
                "cache_hits": cs.get("hits", 0), "cache_misses": cs.get("misses", 0),
                "revalidations": cs.get("revalidations", 0),
                "revalidations_unchanged": cs.get("revalidations_unchanged", 0)}

    def close(self) -> None:
        self._denials.close()

    def denials_since(self, index: int, limit: int) -> list[tuple[float, str, int]]:
        """Local denials (wall time, product, qty) from number `index` on, at most `limit`
        of them, oldest first."""
        return self._denials.read(index, limit)

    def _deny(self, order: Order, entry) -> dict:
        with self._lock:
            self.stats["local_denials"] += 1      # stamped under the lock: in time order
            self._denials.append(self._wall(), order.product, order.qty)
        return {"outcome": UNAVAILABLE, "product": order.product, "qty": order.qty,
                "request_id": order.request_id, "stock": entry.stock, "version": entry.version,
                "replayed": False, "local": True}

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self.stats.update(deltas)
