"""The trader role: the exposed Trader object that a peer hosts once it is elected.

A trader takes buys and sells from peers and decides them with an inventory strategy
(inventory.py): in cache-less `sync` mode every order goes to the warehouse; in
`cached` mode a TTL cache of stock and versions lets it deny some buys locally.
Orders reach the warehouse through a `WarehouseLink`: while one `apply` call is in
flight, orders from other peers queue, and the next call carries them all
(batching.Pump). A forward that fails is retried with the same request_id until the
trader's budget (rpc.warehouse_timeout_s) runs out; then the peer gets `Unavailable`
and retries, again with the same id. Registered in the name server as `market.trader.<n>`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any, Callable, Sequence

from . import config, rpc, runtime
from .autoscale import LoadWindow
from .batching import Pump
from .cache import InventoryCache
from .denials import DenialFile
from .errors import FencedOut, InvalidRequest, MarketError, NotATrader, Unavailable, from_wire
from .eventlog import EventLog
from .inventory import CachedInventory, SyncInventory
from .orders import (Order, check, check_label, check_page, check_product, new_request_id,
                     shown)
from .store import SHIPPED, STOCKED

__all__ = ["Trader", "WarehouseLink", "make_inventory", "STAT_KEYS", "DENIALS_PAGE_MAX"]

# The most denials one call returns; each is [time, product, qty], at most about 300 bytes
# (a product's name is at most MAX_PRODUCT_LEN characters), so a full page stays under
# rpc.MAX_MESSAGE_BYTES (tests/unit/test_wire.py encodes one).
DENIALS_PAGE_MAX = 2_000


class WarehouseLink:
    """Batches orders into `warehouse.apply` calls, one call in flight at a time (see
    batching.Pump: made by the pump's thread under load, by the submitting thread when
    the link is idle). The batches share one proxy, which the running batch's thread
    claims (Pyro5's ownership rule), so a trader holds one warehouse connection for its
    orders however many peers it serves. Its other calls (lookups, revalidations and the
    failover's join and fence) borrow from a pool of a few more, so a trader holds at
    most `config.WAREHOUSE_CONNECTIONS_PER_TRADER` connections to the warehouse, whose
    worker pool caps the connections it accepts, however many threads call it."""

    def __init__(self, uri: str | Callable[[], str], timeout_s: float, batch_max: int = 256):
        """`uri`: the warehouse's, or an rpc.Resolver that finds it by name whenever a
        connection is made (and keeps the last address while the name server is down)."""
        self.uri, self.timeout_s = uri, timeout_s
        self._proxies = rpc.ProxyPool(uri, timeout_s,
                                      size=config.WAREHOUSE_CONNECTIONS_PER_TRADER - 1)
        # written by the one running batch only (batching.Pump runs one at a time)
        self._batch_proxy = None
        self.calls, self._orders, self._call_s = 0, 0, 0.0
        self._pump = Pump(self._send, batch_max, name="warehouse link")

    def submit(self, order: Order, timeout_s: float) -> dict:
        """Send one order in the next batch and return its reply dict. Raises the
        MarketError the warehouse gave it, or Unavailable if it was not picked up within
        `timeout_s` or the warehouse could not be reached."""
        return self._pump.submit(order, timeout_s)

    def stats(self) -> dict:
        """Warehouse calls made, orders per call, a call's mean time and the connections
        held now, for `stats()`."""
        calls = self.calls
        return {"warehouse_calls": calls, "warehouse_connections": self.connections(),
                "orders_per_warehouse_call": round(self._orders / calls, 2) if calls else 0.0,
                "warehouse_call_ms": round(1000 * self._call_s / calls, 3) if calls else 0.0}

    def lookup(self, product: str) -> dict:
        return self._call("lookup", product)

    def join(self, index: int) -> int:
        return self._call("join", index)

    def fence(self, index: int, by: int, epoch: int = 0, by_epoch: int = 0) -> int | None:
        return self._call("fence", index, by, epoch, by_epoch)

    def fenced(self, epoch: int) -> bool:
        return self._call("fenced", epoch)

    def revalidate(self, versions: dict) -> dict[str, tuple[int, int]]:
        return {p: (s, v) for p, (s, v) in self._call("revalidate", dict(versions)).items()}

    def connections(self) -> int:
        """Connections to the warehouse this link holds now."""
        return self._proxies.connections() + (self._batch_proxy is not None)

    def _call(self, method: str, *args):
        with self._proxies.borrowed() as p, rpc.translated(f"warehouse {method}"):
            return getattr(p, method)(*args)

    def close(self) -> None:
        self._pump.close()
        rpc.release(self._batch_proxy)
        self._proxies.close()

    def _send(self, orders: Sequence[Order]) -> list:
        self.calls += 1
        self._orders += len(orders)
        started = time.perf_counter()
        try:
            if self._batch_proxy is None:
                uri = self.uri() if callable(self.uri) else self.uri
                self._batch_proxy = rpc.proxy(uri, self.timeout_s)
            self._batch_proxy._pyroClaimOwnership()
            with rpc.translated("warehouse"):
                rows = self._batch_proxy.apply([o.to_row() for o in orders])
            self._call_s += time.perf_counter() - started
        except Unavailable as exc:
            rpc.release(self._batch_proxy)       # reconnect (and re-resolve) next time
            self._batch_proxy = None
            return [exc] * len(orders)
        return [_from_row(o, r) for o, r in zip(orders, rows)]


def make_inventory(cfg: config.MarketConfig, forward, link: WarehouseLink, folder: str):
    """The inventory strategy the config's traders.mode asks for (a cached one keeps its
    local denials in a file in `folder`, the run's)."""
    if cfg.traders.mode == "sync":
        return SyncInventory(forward, link.lookup)
    cache = InventoryCache(cfg.products, cfg.cache.ttl_s)
    return CachedInventory(forward, link.revalidate, cache, cfg.cache.reserve_on_forward,
                           cfg.rpc.warehouse_timeout_s, DenialFile(folder, cfg.products))


class Trader:
    """The remote surface peers and people use: buy, sell, lookup, stats, denials, ping."""

    def __init__(self, index: int, peer_id: int | None, cfg: config.MarketConfig,
                 link: WarehouseLink, log: EventLog, run_dir: str, epoch: int = 0):
        """`peer_id`: the elected peer hosting it, or None for a launched replica;
        `run_dir`: the run's folder (a cached trader keeps its denials there)."""
        self.index, self.peer_id, self.epoch = index, peer_id, epoch
        self.load = LoadWindow(cfg.autoscale.window_s)     # requests, for autoscaling
        self.scale_events: list[dict] = []                 # launches this trader decided
        self.retired = threading.Event()     # set once this trader learns it was fenced
        self._products = frozenset(cfg.products)
        self._max_qty = cfg.max_quantity
        self._budget_s = cfg.rpc.warehouse_timeout_s
        self._backoff_s = cfg.rpc.retry_backoff_s
        self._link, self._log = link, log
        self._inventory = make_inventory(cfg, self._forward, link, run_dir)
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._name = f"Trader {index}"

    @rpc.remote
    def buy(self, product: str, qty: int, request_id: str | None = None,
            client: str | None = None, attempt: int = 1) -> dict:
        """Buy `qty` of `product`. Reply: {"outcome": "shipped"|"unavailable", ...}.
        A retry (attempt > 1) always goes to the warehouse, never to the cache: an earlier
        attempt may have been applied there, and only the ledger knows its outcome."""
        return self._handle("buy", product, qty, request_id, client, attempt)

    @rpc.remote
    def sell(self, product: str, qty: int, request_id: str | None = None,
             client: str | None = None, attempt: int = 1) -> dict:
        """Deposit `qty` of `product` in the warehouse. Reply: {"outcome": "stocked", ...}."""
        return self._handle("sell", product, qty, request_id, client, attempt)

    @rpc.remote
    def lookup(self, product: str) -> dict:
        """The stock of `product`: from the cache while fresh (cached mode), else the warehouse."""
        return self._inventory.lookup(check_product(product, self._products))

    @rpc.remote
    def stats(self) -> dict:
        """This trader's counters (requests, outcomes, refusals, retries, cache and
        warehouse-link figures), its mode, epoch and current load window."""
        with self._lock:
            counts = dict(self._stats)
        counts.update(self._inventory.snapshot())
        return {"trader": self.index, "peer": self.peer_id, "mode": self._inventory.mode,
                "epoch": self.epoch, "load_window": self.load.count(time.monotonic()),
                "scale_events": list(self.scale_events),
                **{k: counts.get(k, 0) for k in STAT_KEYS}, **self._link.stats()}

    def close(self) -> None:
        """Free what the inventory holds (a cached one's denial file); not remote."""
        self._inventory.close()

    @rpc.remote
    def denials(self, since: int = 0, limit: int = DENIALS_PAGE_MAX) -> list:
        """Up to `limit` (at most DENIALS_PAGE_MAX) local denials as [wall time, product,
        qty], from index `since` (cached mode). An empty page means no more."""
        check_page("since", since, limit)
        if not isinstance(self._inventory, CachedInventory):
            return []
        page = self._inventory.denials_since(since, min(limit, DENIALS_PAGE_MAX))
        return [list(d) for d in page]

    @rpc.remote
    def ping(self) -> dict:
        """Liveness for heartbeats, with this trader's load for the autoscaler."""
        if self.retired.is_set():
            raise NotATrader(f"{self._host} no longer serves as Trader {self.index}")
        return {"role": "trader", "trader": self.index, "peer": self.peer_id, "pid": os.getpid(),
                "epoch": self.epoch, "load": self.load.count(time.monotonic())}

    @property
    def _host(self) -> str:
        return "a replica" if self.peer_id is None else f"peer {self.peer_id}"

    def retire(self, why: str) -> None:
        """Step down for good: every later request gets NotATrader."""
        if not self.retired.is_set():
            self.retired.set()
            self._log(f"{self._name} steps down: {why}")

    # --- internals ----------------------------------------------------------------------

    def _handle(self, kind: str, product: Any, qty: Any, request_id: Any, client: Any,
                attempt: Any) -> dict:
        if self.retired.is_set():
            raise NotATrader(f"{self._host} no longer serves as Trader {self.index}; "
                             f"ask another trader")
        who = "a client"
        try:
            who = _client_label(client)
            if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
                raise InvalidRequest(f"attempt must be a positive int, got {shown(attempt)}")
            rid = new_request_id(f"t{self.index}") if request_id is None else request_id
            order = check(kind, product, qty, rid, products=self._products,
                          max_qty=self._max_qty, origin=f"trader {self.index}", epoch=self.epoch)
        except MarketError as exc:                 # every refusal is counted and logged
            self._count(requests=1, refused=1)
            self._log(f"{self._name} refused a {kind} request from {who}: {exc}")
            raise
        self._count(requests=1, **{f"{kind}s": 1})
        self.load.record(time.monotonic())
        try:
            if kind == "sell":
                reply = self._inventory.sell(order)
            elif attempt > 1:
                self._count(retried_buys=1)
                reply = self._inventory.buy_at_warehouse(order)
            else:
                reply = self._inventory.buy(order)
        except FencedOut as exc:
            self.retire(f"the warehouse refused its writes ({exc})")
            raise NotATrader(f"Trader {self.index} was fenced (declared dead, or replaced); "
                             f"retry {rid} elsewhere") from None
        except Unavailable as exc:
            self._count(failed=1)
            self._log(f"{self._name} could not serve {who}'s request {rid}: {exc}")
            raise
        except MarketError as exc:     # the warehouse's refusal: a reused id, a stock cap
            self._count(refused=1)
            self._log(f"{self._name} told {who} that the warehouse refused its {kind} "
                      f"request {rid}: {exc}")
            raise
        self._count(**{reply["outcome"]: 1})
        self._log(_informed(self._name, who, order, reply))
        return {**reply, "trader": self.index}

    def _forward(self, order: Order) -> dict:
        """The warehouse's reply, retrying with backoff within the trader's budget."""
        deadline = time.monotonic() + self._budget_s
        for delay in runtime.backoff_delays(self._backoff_s):
            remaining = deadline - time.monotonic()
            try:
                return self._link.submit(order, max(remaining, 0.001))
            except Unavailable as exc:
                if time.monotonic() + delay >= deadline:
                    raise Unavailable(f"warehouse unavailable ({exc}); retry "
                                      f"{order.request_id}") from None
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self._stats.update(deltas)


def _from_row(order: Order, row: list) -> dict | MarketError:
    """A warehouse reply row (see Warehouse.apply) as the dict a peer gets."""
    if row[0] == "error":
        return from_wire({"error": row[1], "message": row[2]})
    outcome, stock, version, replayed = row
    return {"outcome": outcome, "product": order.product, "qty": order.qty,
            "request_id": order.request_id, "stock": stock, "version": version,
            "replayed": replayed}


STAT_KEYS = ("requests", "buys", "sells", "shipped", "unavailable", "stocked", "refused",
             "failed", "retried_buys", "local_denials", "unrecorded_denials", "forwarded_buys",
             "oversells", "revalidations", "revalidations_unchanged", "cache_hits",
             "cache_misses")


def _client_label(client: Any) -> str:
    if client is None:
        return "a client"
    return check_label(client, "client (a name such as 'buyer 3')")


def _informed(name: str, who: str, order: Order, reply: dict) -> str:
    verb = "was" if order.qty == 1 else "were"
    if reply["outcome"] == SHIPPED:
        return f"{name} informed {who} that {order.qty} {order.product} {verb} shipped"
    if reply["outcome"] == STOCKED:
        return f"{name} informed {who} that {order.qty} {order.product} {verb} stocked in the warehouse"
    if reply.get("local"):
        return (f"{name} informed {who} that no {order.product} was available "
                f"({order.qty} asked; its cache shows {reply['stock']})")
    return f"{name} informed {who} that no {order.product} was available ({order.qty} asked)"
