"""The warehouse role: the exposed Warehouse object and its process's main().

It owns the durable inventory (store.Store) and answers traders' batches. Every
trader call joins one group commit (batching.Batcher), so one SQLite transaction
and one fsync cover all the orders that arrived while the last commit ran. Every reply carries the product's current stock and version, which is all a
trader needs to keep a cache fresh. Registered in the name server as `market.warehouse`.

    python -m pyromarket.warehouse --config conf/market.yaml
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from typing import Any, Callable, Sequence

from . import config, rpc, runtime
from .batching import Batcher
from .errors import FencedOut, InvalidRequest, MarketError, to_wire
from .eventlog import EventLog
from .orders import (MAX_BATCH_ORDERS, Order, check, check_page, check_product, check_row,
                     check_slot, new_request_id)
from .store import SHIPPED, STOCKED, UNAVAILABLE, DatabaseInUse, Store

__all__ = ["Warehouse", "main", "LEDGER_PAGE_MAX"]

# The most ledger rows one call returns. A row holds two labels of up to MAX_ID_LEN
# characters and a product name, at most 4 bytes a character in UTF-8, so about 1.5 KB at
# worst: a full page (0.73 MB) stays under rpc.MAX_MESSAGE_BYTES (tests/unit/test_wire.py
# encodes one). Market.ledger_rows reads any number of rows, a page at a time.
LEDGER_PAGE_MAX = 500


class Warehouse:
    """The remote surface: apply (for traders), buy/sell/lookup/inventory/stats (for people)."""

    def __init__(self, store: Store, cfg: config.MarketConfig, log: EventLog,
                 connections: Callable[[], int] = lambda: 0):
        self._store, self._log = store, log
        self._connections = connections      # how many are open now (the server knows)
        self._products = frozenset(store.products())
        self._max_qty = cfg.max_quantity
        self._timeout_s = cfg.rpc.warehouse_timeout_s
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._started = time.monotonic()
        self._commit_s = 0.0                 # time inside Store.apply, written by the leader
        self._apply_s = 0.0                  # time inside apply(), the server's share of a call
        self._batcher = Batcher(self._commit, cfg.warehouse.batch_max, name="group-commit")

    # --- for traders ------------------------------------------------------------------

    @rpc.remote
    def apply(self, rows: list) -> list[list]:
        """Apply orders (rows of `kind, product, qty, request_id, origin, epoch`, see
        orders.Order.to_row) in one group commit. One reply row per order, in order:
        `[outcome, stock, version, replayed]`, or `["error", ErrorName, message]` for a
        refused order; a refusal never stops the others. Rows, not dicts, because this is
        the hot path and rows are the smallest thing to encode and parse."""
        started = time.perf_counter()
        try:
            return self._apply_rows(rows)
        finally:
            with self._stats_lock:
                self._stats["apply_calls"] += 1
                self._apply_s += time.perf_counter() - started

    def _apply_rows(self, rows: Any) -> list[list]:
        if not isinstance(rows, (list, tuple)) or len(rows) > MAX_BATCH_ORDERS:
            raise InvalidRequest(f"orders must be a list of at most {MAX_BATCH_ORDERS} rows")
        checked = [self._check_row(r) for r in rows]
        valid = [o for o in checked if isinstance(o, Order)]
        results = self._batcher.submit(valid, self._timeout_s) if valid else []
        self._record(valid, results)
        applied = iter(results)
        replies = []
        for item in checked:
            result = next(applied) if isinstance(item, Order) else item
            if isinstance(result, BaseException):
                err = to_wire(result)
                replies.append(["error", err["error"], err["message"]])
            else:
                replies.append([result["outcome"], result["stock"], result["version"],
                                result["replayed"]])
        return replies

    # --- for people at a REPL ---------------------------------------------------------

    @rpc.remote
    def buy(self, product: str, qty: int, request_id: str | None = None) -> dict:
        """Ship `qty` of `product` if the stock covers it (one order, for a REPL;
        traders use `apply`). Reply: {"outcome": "shipped"|"unavailable", "stock", "version",
        "replayed", ...}; a `request_id` seen before replays its recorded outcome."""
        return self._single("buy", product, qty, request_id)

    @rpc.remote
    def sell(self, product: str, qty: int, request_id: str | None = None) -> dict:
        """Add `qty` of `product` to the stock. Reply: {"outcome": "stocked", ...}; a
        `request_id` seen before replays its recorded outcome and adds nothing."""
        return self._single("sell", product, qty, request_id)

    @rpc.remote
    def revalidate(self, versions: dict) -> dict:
        """ETag/304 for caches: `{product: version held}` in; out, `{product: [stock,
        version]}` for only the products whose version differs. Cheap: no SQL."""
        if not isinstance(versions, dict):
            raise InvalidRequest("versions must be a dict of product -> int")
        for product, held in versions.items():
            check_product(product, self._products)
            if not isinstance(held, int) or isinstance(held, bool):
                raise InvalidRequest(f"version of {product!r} must be an int")
        current = self._store.inventory()
        with self._stats_lock:
            self._stats["revalidations"] += 1
        return {p: [current[p]["stock"], current[p]["version"]]
                for p, held in versions.items() if current[p]["version"] != held}

    @rpc.remote
    def lookup(self, product: str) -> dict:
        """{"product", "stock", "version"} of one product, as last committed."""
        return self._store.lookup(check_product(product, self._products))

    @rpc.remote
    def inventory(self) -> dict:
        """{product: {"stock", "version"}} of every product, as last committed."""
        return self._store.inventory()

    @rpc.remote
    def stats(self) -> dict:
        """Counters since start (orders, batches, outcomes and their units, replays, refusals,
        revalidations, fenced writes), orders per commit, a commit's and an `apply` call's
        mean time, the uptime, the ledger's last sequence number, and the connections open
        now (each holds one of rpc.threadpool_size workers)."""
        with self._stats_lock:
            counts = dict(self._stats)
        batches, calls = counts.get("batches", 0), counts.get("apply_calls", 0)
        return {**{k: counts.get(k, 0) for k in _STAT_KEYS},
                "orders_per_commit": round(counts.get("orders", 0) / batches, 2) if batches else 0.0,
                "commit_ms": round(1000 * self._commit_s / batches, 3) if batches else 0.0,
                "apply_ms": round(1000 * self._apply_s / calls, 3) if calls else 0.0,
                "uptime_s": round(time.monotonic() - self._started, 3),
                "last_seq": self._store.last_seq(), "connections": self._connections()}

    @rpc.remote
    def ledger(self, since_seq: int = 0, limit: int = LEDGER_PAGE_MAX) -> list[dict]:
        """Up to `limit` (at most LEDGER_PAGE_MAX) ledger rows after `since_seq`, oldest
        first: the audit trail of every order. An empty page means no more rows."""
        check_page("since_seq", since_seq, limit)
        return self._store.ledger(min(since_seq, 2**63 - 1), min(limit, LEDGER_PAGE_MAX))

    @rpc.remote
    def audit(self) -> dict:
        """Conservation per product: seed + stocked - shipped must equal the stock."""
        return self._store.audit()

    @rpc.remote
    def join(self, trader: int) -> int:
        """A trader starting in slot `trader` gets a fresh epoch to stamp its orders with."""
        check_slot(trader, "trader")
        before = self._store.epoch_of(trader)
        epoch = self._store.join(trader)
        fenced = "" if before is None else f"; its epoch before, {before}, is fenced (one a slot)"
        self._log(f"Warehouse granted Trader {trader} epoch {epoch}{fenced}")
        return epoch

    @rpc.remote
    def fence(self, trader: int, by: int, epoch: int = 0, by_epoch: int = 0) -> int | None:
        """Trader `by` declared trader `trader` dead: refuse its writes from now on.
        `epoch`: the one its heartbeats showed (0: the slot's current epoch). `by_epoch`:
        trader `by`'s own (0: not checked, for a person at a REPL); if it was fenced
        itself, nothing is fenced and FencedOut says so, so of two traders that declare
        each other dead only the first is heard."""
        check_slot(trader, "trader")
        check_slot(by, "by")
        epoch, by_epoch = _epoch_or_none(epoch, "epoch"), _epoch_or_none(by_epoch, "by_epoch")
        try:
            epoch = self._store.fence(trader, epoch, by_epoch)
        except FencedOut:
            self._log(f"Warehouse refused Trader {by}'s fence of Trader {trader}: Trader {by} "
                      f"(epoch {by_epoch}) was declared dead and fenced itself")
            raise
        self._log(f"Warehouse fenced Trader {trader} (epoch {epoch}) because Trader {by} "
                  f"declared it dead; its writes are refused from now on")
        return epoch

    @rpc.remote
    def fenced(self, epoch: int) -> bool:
        """Whether writes with this epoch are refused (a paused trader asks on waking)."""
        check_slot(epoch, "epoch")
        return self._store.is_fenced(epoch)

    @rpc.remote
    def ping(self) -> dict:
        """Liveness, for the launcher and the benchmarks."""
        return {"role": "warehouse", "pid": os.getpid()}

    # --- internals ----------------------------------------------------------------------

    def close(self) -> None:
        self._batcher.close()

    def _check_row(self, row: Any) -> Order | MarketError:
        try:
            return check_row(row, products=self._products, max_qty=self._max_qty)
        except MarketError as exc:
            return exc

    def _single(self, kind: str, product: Any, qty: Any, request_id: Any) -> dict:
        rid = new_request_id("w") if request_id is None else request_id
        order = check(kind, product, qty, rid, products=self._products,
                      max_qty=self._max_qty, origin="repl")
        results = self._batcher.submit([order], self._timeout_s)
        self._record([order], results)
        if isinstance(results[0], BaseException):
            raise results[0]
        return results[0]

    def _commit(self, submissions: Sequence[list[Order]]) -> list[list]:
        flat = [o for sub in submissions for o in sub]
        started = time.perf_counter()
        results = self._store.apply(flat, time.time())
        self._commit_s += time.perf_counter() - started
        with self._stats_lock:
            self._stats.update(batches=1)
        out, i = [], 0
        for sub in submissions:
            out.append(results[i:i + len(sub)])
            i += len(sub)
        return out

    def _record(self, orders: Sequence[Order], results: Sequence) -> None:
        """Count and log outcomes in the calling thread, after the commit has been handed
        on, so logging never lengthens the serial commit path."""
        counts: Counter[str] = Counter(orders=len(orders))
        for res in results:
            counts.update(_outcome_counts(res))
        self._log.many([_describe(o, r) for o, r in zip(orders, results)])
        with self._stats_lock:
            self._stats.update(counts)


_STAT_KEYS = ("orders", "batches", "apply_calls", "shipped", "shipped_units", "stocked",
              "stocked_units", "rejected", "replayed", "refused", "revalidations", "fenced")


def _epoch_or_none(value: Any, what: str) -> int | None:
    """An epoch argument where 0 means "none given"."""
    if type(value) is int and value == 0:
        return None
    return check_slot(value, what)


def _outcome_counts(res: Any) -> dict[str, int]:
    if isinstance(res, FencedOut):
        return {"fenced": 1}
    if isinstance(res, BaseException):
        return {"refused": 1}
    if res["replayed"]:
        return {"replayed": 1}
    if res["outcome"] == SHIPPED:
        return {"shipped": 1, "shipped_units": res["qty"]}
    if res["outcome"] == STOCKED:
        return {"stocked": 1, "stocked_units": res["qty"]}
    return {"rejected": 1}


def _describe(order: Order, res: Any) -> str:
    who = order.origin or "a client"
    if isinstance(res, BaseException):
        return f"Warehouse refused {order.kind} request {order.request_id} from {who}: {res}"
    if res["replayed"]:
        return (f"Warehouse saw request {order.request_id} from {who} again and replayed its "
                f"recorded outcome ({res['outcome']}) without applying it")
    if res["outcome"] == SHIPPED:
        return f"Warehouse shipped {order.qty} {order.product} to {who}; {res['stock']} left"
    if res["outcome"] == STOCKED:
        return f"Warehouse stocked {order.qty} {order.product} from {who}; {res['stock']} in stock"
    assert res["outcome"] == UNAVAILABLE
    return (f"Warehouse rejected buy request for {order.qty} {order.product} from {who} "
            f"because only {res['stock']} were in stock")


def _open_store(cfg: config.MarketConfig, log: EventLog) -> Store:
    """The configured database, or exit with one line that says why it cannot be used:
    another warehouse has it; it is not SQLite, or the disk is full (SQLite's words); or
    the OS refuses its folder or its lock file (full, read-only, or in the way)."""
    wcfg = cfg.warehouse
    try:
        os.makedirs(os.path.dirname(os.path.abspath(wcfg.db_path)), exist_ok=True)
        return Store(wcfg.db_path, {p: wcfg.initial_stock.get(p, 0) for p in cfg.products},
                     wcfg.synchronous)
    except DatabaseInUse as exc:
        why = str(exc)
    except sqlite3.DatabaseError as exc:
        why = f"{wcfg.db_path}: {exc}"
    except OSError as exc:
        why = f"{wcfg.db_path}: {exc.strerror or exc}"
    log(f"Warehouse cannot start: {why}")
    log.close()
    raise SystemExit(f"error: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the warehouse and keep its name registered until SIGTERM or SIGINT (exit 0).
    A database or port it cannot use exits earlier with one line (runtime)."""
    args = runtime.role_args("python -m pyromarket.warehouse",
                             "Run the market's warehouse (its database server).", argv)
    cfg = runtime.load_config(args.config)
    stop = runtime.stop_on_signals()
    rpc.configure(cfg.rpc.threadpool_size)
    log = runtime.open_log(args.run_dir, cfg, "warehouse")
    wcfg = cfg.warehouse
    store = _open_store(cfg, log)
    server = runtime.serve(wcfg.host, wcfg.port)
    warehouse = Warehouse(store, cfg, log, connections=server.connections)
    uri = server.register(warehouse, rpc.WAREHOUSE_NAME)
    server.start()
    ns = runtime.connect_ns(cfg, stop=stop)
    rpc.register_name(ns, rpc.WAREHOUSE_NAME, uri)
    rpc.release(ns)
    log(f"Warehouse open at {uri} (synchronous={wcfg.synchronous}); stock {store.inventory()}")
    name = rpc.Registration(cfg.nameserver.host, cfg.nameserver.port, rpc.WAREHOUSE_NAME, uri)
    try:
        while not stop.wait(runtime.RENEW_NAME_S):
            runtime.renew(name, log, "Warehouse")
    finally:
        log("Warehouse closing")
        name.withdraw()
        server.close()
        warehouse.close()
        store.close()
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
