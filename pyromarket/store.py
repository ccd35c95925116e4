"""The warehouse's durable state: inventory, per-product versions and the ledger.

SQLite (stdlib), WAL mode. `apply(orders, now)` runs a whole batch in ONE transaction,
so the fsync of `synchronous=FULL` is paid once per batch, not once per order (group
commit). Every applied order leaves a ledger row keyed by its request_id, holding the
outcome, the stock after it and a timestamp: replaying an id returns the recorded
outcome and changes nothing, and the ledger alone can audit a run (conservation,
actual under-selling). Fencing: each trader slot gets a fresh epoch when it joins, and
the epoch it had before is fenced, so a slot has one writer; once an epoch is fenced (its
trader declared dead, or replaced in its slot), orders carrying it are refused, for good
and durably. No Pyro5 here; one writer at a time (`_write`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from typing import Iterable, Iterator, Mapping, Sequence

from .errors import ConflictingRequest, FencedOut, InvalidRequest, Unavailable, UnknownProduct
from .orders import MAX_STOCK, Order

__all__ = ["Store", "DatabaseInUse", "NotAWarehouseDatabase", "lock_database",
           "check_database_file", "conservation", "SHIPPED", "UNAVAILABLE", "STOCKED"]

SHIPPED, UNAVAILABLE, STOCKED = "shipped", "unavailable", "stocked"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inventory (
    product TEXT PRIMARY KEY,
    stock   INTEGER NOT NULL CHECK (stock >= 0),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    seq         INTEGER PRIMARY KEY,       -- commit order
    request_id  TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    product     TEXT NOT NULL,
    qty         INTEGER NOT NULL,
    outcome     TEXT NOT NULL,             -- shipped | unavailable | stocked
    stock_after INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    ts          REAL NOT NULL,             -- time.time() at apply
    origin      TEXT NOT NULL,
    epoch       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (           -- each trader slot's current epoch (fencing token)
    trader INTEGER PRIMARY KEY,
    epoch  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fenced (           -- epochs whose writes are refused for good
    epoch INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS seed (             -- stock each product started with
    product TEXT PRIMARY KEY,
    stock   INTEGER NOT NULL
);
"""


def _tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Each table's name and its columns, in order (SQLite's own tables left out)."""
    names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                      "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    quoted = {n: '"' + n.replace('"', '""') + '"' for n in names}
    return {n: [c[1] for c in db.execute(f"PRAGMA table_info({quoted[n]})")] for n in names}


def _warehouse_tables() -> dict[str, list[str]]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return _tables(db)
    finally:
        db.close()


WAREHOUSE_TABLES = _warehouse_tables()


class NotAWarehouseDatabase(sqlite3.DatabaseError):
    """An SQLite database with tables the warehouse did not make: opening it as one would
    add the warehouse's tables to somebody else's file, and `--fresh` would delete it."""


def check_database(db: sqlite3.Connection) -> None:
    """Raise NotAWarehouseDatabase unless every table in `db` is one of the warehouse's,
    with its columns (an empty database, or a schema cut short, is fine: the rest is
    created). Reads only; a file that is not SQLite raises sqlite3.DatabaseError."""
    found = _tables(db)
    strange = sorted(set(found) - set(WAREHOUSE_TABLES))
    if strange:
        raise NotAWarehouseDatabase(f"not a warehouse database: it holds tables {strange}, "
                                    f"and a warehouse's are {sorted(WAREHOUSE_TABLES)}")
    for name, columns in found.items():
        if columns != WAREHOUSE_TABLES[name]:
            raise NotAWarehouseDatabase(f"not a warehouse database: its table {name!r} has "
                                        f"columns {columns}, and a warehouse's has "
                                        f"{WAREHOUSE_TABLES[name]}")


def check_database_file(path: str) -> None:
    """`check_database` on the file at `path`, which it only reads; no file is fine (and
    is not created)."""
    if not os.path.exists(path):
        return
    db = sqlite3.connect(path)
    try:
        check_database(db)
    finally:
        db.close()


class DatabaseInUse(RuntimeError):
    """Another process holds the database: a second warehouse on the same file would serve
    from a stale in-memory view and could ship the same goods twice."""


def lock_database(path: str) -> int:
    """Take the database's lock file (`<path>.lock`) for this process: an open fd that
    holds an exclusive flock, which the kernel drops when the process dies, even by
    kill -9. Raises DatabaseInUse, naming the holder's pid, if another process has it."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DatabaseInUse(f"{path} is in use by another warehouse (pid {holder}); "
                            f"stop it first") from None
    with contextlib.suppress(OSError):  # a full disk: the flock is the lock, and the pid
        os.ftruncate(fd, 0)             # only names the holder (then "unknown"); --fresh
        os.write(fd, str(os.getpid()).encode())      # may still free the space
    return fd


LEDGER_COLUMNS = ("seq", "request_id", "kind", "product", "qty", "outcome",
                  "stock_after", "version", "ts", "origin", "epoch")


class Store:
    """Inventory and ledger in one SQLite file; an in-memory mirror serves reads."""

    def __init__(self, path: str, initial_stock: Mapping[str, int], synchronous: str = "FULL"):
        self.path = path
        self._lock_fd: int | None = lock_database(path)     # one warehouse per database file
        self._lock = threading.Lock()        # guards the mirror, not the database
        self._write = threading.Lock()       # one writer: apply(), join(), fence()
        self._local = threading.local()      # per-thread read connections
        self._readers: list[sqlite3.Connection] = []
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            check_database(self._db)               # before anything is written to the file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")   # all or none
            self._seed(initial_stock)
            self._mirror = self._load_mirror()
            self._fenced = {e for (e,) in self._db.execute("SELECT epoch FROM fenced")}
        except BaseException:
            if hasattr(self, "_db"):
                self._db.close()
            os.close(self._lock_fd)           # a store that failed to open holds nothing
            raise

    # --- reads (any thread) ---------------------------------------------------------

    def products(self) -> list[str]:
        with self._lock:
            return sorted(self._mirror)

    def lookup(self, product: str) -> dict:
        """{"product", "stock", "version"} as last committed; UnknownProduct otherwise."""
        with self._lock:
            if product not in self._mirror:
                raise UnknownProduct(f"unknown product {product!r}")
            stock, version = self._mirror[product]
        return {"product": product, "stock": stock, "version": version}

    def inventory(self) -> dict[str, dict]:
        """{product: {"stock", "version"}} of every product, as last committed."""
        with self._lock:
            return {p: {"stock": s, "version": v} for p, (s, v) in sorted(self._mirror.items())}

    def ledger(self, since_seq: int = 0, limit: int = 1_000_000) -> list[dict]:
        """Up to `limit` ledger rows after sequence number `since_seq`, oldest first."""
        rows = self._reader().execute(
            f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
            (since_seq, limit)).fetchall()
        return [dict(zip(LEDGER_COLUMNS, r)) for r in rows]

    def last_seq(self) -> int:
        """The sequence number of the newest ledger row (0 when empty)."""
        return self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]

    def seed(self) -> dict[str, int]:
        """The stock each product started with when it entered this database."""
        return dict(self._reader().execute("SELECT product, stock FROM seed"))

    def audit(self) -> dict[str, dict]:
        """Conservation per product, from the durable state alone."""
        totals = self._reader().execute(
            "SELECT product, outcome, SUM(qty) FROM ledger GROUP BY product, outcome").fetchall()
        report = conservation(self.seed(), ({"product": p, "outcome": o, "qty": q}
                                            for p, o, q in totals))
        for product, entry in report.items():
            entry["stock"] = self.lookup(product)["stock"]
            entry["ok"] = entry["stock"] == entry["expected_stock"]
        return report

    # --- writes (one thread) ----------------------------------------------------------

    def join(self, trader: int) -> int:
        """A new, never used epoch for trader slot `trader` (a fencing token), durably.
        The slot's previous epoch is fenced in the same transaction: a trader started in
        an occupied slot (the launcher's last resort, while the old one hangs) leaves the
        old one unable to write, and it steps down when it next asks or writes.
        Unavailable if the storage fails (nothing is granted or fenced; the trader retries)."""
        with self._write:
            with self._transaction():
                old = self._db.execute("SELECT epoch FROM epochs WHERE trader = ?",
                                       (trader,)).fetchone()
                epoch = 1 + self._db.execute(
                    "SELECT MAX(m) FROM (SELECT COALESCE(MAX(epoch), 0) AS m FROM epochs"
                    " UNION ALL SELECT COALESCE(MAX(epoch), 0) FROM fenced)").fetchone()[0]
                self._db.execute("INSERT OR REPLACE INTO epochs (trader, epoch) VALUES (?, ?)",
                                 (trader, epoch))
                if old is not None:
                    self._db.execute("INSERT OR IGNORE INTO fenced (epoch) VALUES (?)", old)
            if old is not None:
                self._fenced.add(old[0])
        return epoch

    def fence(self, trader: int, epoch: int | None = None,
              by_epoch: int | None = None) -> int | None:
        """Refuse every later write carrying `epoch` (default: trader slot `trader`'s
        current epoch). Naming the epoch seen in the dead trader's heartbeats keeps a
        late fence from hitting a replacement that has since joined the same slot.

        `by_epoch`, the fencing trader's own epoch, must not be fenced itself: two traders
        cut off from each other declare each other dead at about the same time, and if
        both fences were taken no trader would be left. The check and the fence are one
        step under the write lock, so of two such traders the first to ask wins and the
        other gets FencedOut. Unavailable if the storage fails (nothing is fenced)."""
        with self._write:
            if by_epoch is not None and by_epoch in self._fenced:
                raise FencedOut(f"epoch {by_epoch} was fenced itself: a trader declared dead "
                                f"cannot fence another")
            with self._transaction():
                if epoch is None:
                    row = self._db.execute("SELECT epoch FROM epochs WHERE trader = ?",
                                           (trader,)).fetchone()
                    if row is None:
                        return None
                    epoch = row[0]
                self._db.execute("INSERT OR IGNORE INTO fenced (epoch) VALUES (?)", (epoch,))
            self._fenced.add(epoch)
        return epoch

    def epoch_of(self, trader: int) -> int | None:
        """Trader slot `trader`'s current epoch, None if it never joined."""
        row = self._reader().execute("SELECT epoch FROM epochs WHERE trader = ?",
                                     (trader,)).fetchone()
        return None if row is None else row[0]

    def is_fenced(self, epoch: int) -> bool:
        """Whether writes stamped with `epoch` are refused."""
        return epoch in self._fenced

    def apply(self, orders: Sequence[Order], now: float) -> list[dict | Exception]:
        """Apply a batch in one transaction. Per-order refusals come back as exceptions
        in the result list; a storage failure rolls everything back and fails all."""
        with self._write:
            return self._apply(orders, now)

    def _apply(self, orders: Sequence[Order], now: float) -> list[dict | Exception]:
        staged = dict(self._mirror)           # the batch's view; published after COMMIT
        try:
            with self._transaction():
                results = [self._apply_one(o, staged, now) for o in orders]
        except Unavailable as err:            # storage failed: the whole batch, retried
            return [err] * len(orders)
        with self._lock:
            self._mirror = staged
        return results

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the caller holds `_write`): committed when the block
        ends, rolled back if anything fails, so the next writer never finds one left open
        (SQLite may keep a transaction open after a failed statement). A storage failure
        (a full or failing disk) comes out as Unavailable, which a trader retries."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise Unavailable(f"warehouse storage failed: {exc}") from exc
            raise

    def close(self) -> None:
        for conn in self._readers:
            conn.close()
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)          # releases the lock
            self._lock_fd = None

    # --- internals --------------------------------------------------------------------

    def _apply_one(self, order: Order, staged: dict, now: float) -> dict | Exception:
        if order.epoch in self._fenced:
            return FencedOut(f"epoch {order.epoch} of {order.origin or 'this trader'} was fenced: "
                             f"it was declared dead, or replaced in its slot, and may not "
                             f"write any more")
        prior = self._db.execute(
            "SELECT kind, product, qty, outcome FROM ledger WHERE request_id = ?",
            (order.request_id,)).fetchone()
        if prior is not None:
            return self._replay(order, prior, staged)
        if order.product not in staged:
            return UnknownProduct(f"unknown product {order.product!r}")
        stock, version = staged[order.product]
        if order.kind == "sell" and stock + order.qty > MAX_STOCK:
            return InvalidRequest(f"selling {order.qty} {order.product} would take its stock "
                                  f"past {MAX_STOCK}, the most the warehouse holds")
        if order.kind == "sell":
            outcome, stock, version = STOCKED, stock + order.qty, version + 1
        elif stock >= order.qty:
            outcome, stock, version = SHIPPED, stock - order.qty, version + 1
        else:
            outcome = UNAVAILABLE
        if outcome != UNAVAILABLE:
            self._db.execute("UPDATE inventory SET stock = ?, version = ? WHERE product = ?",
                             (stock, version, order.product))
        self._db.execute(
            "INSERT INTO ledger (request_id, kind, product, qty, outcome, stock_after, version,"
            " ts, origin, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order.request_id, order.kind, order.product, order.qty, outcome, stock, version,
             now, order.origin, order.epoch))
        staged[order.product] = (stock, version)
        return self._reply(order, outcome, stock, version, replayed=False)

    def _replay(self, order: Order, prior: tuple, staged: dict) -> dict | Exception:
        kind, product, qty, outcome = prior
        if not order.same_request(kind, product, qty):
            return ConflictingRequest(
                f"request_id {order.request_id!r} was already used for {kind} {qty} {product}")
        stock, version = staged[product]
        return self._reply(order, outcome, stock, version, replayed=True)

    @staticmethod
    def _reply(order: Order, outcome: str, stock: int, version: int, replayed: bool) -> dict:
        return {"request_id": order.request_id, "kind": order.kind, "product": order.product,
                "qty": order.qty, "outcome": outcome, "stock": stock, "version": version,
                "replayed": replayed}

    def _seed(self, initial_stock: Mapping[str, int]) -> None:
        """Add products the database lacks; never touch ones it already has."""
        self._db.execute("BEGIN IMMEDIATE")
        new = [(p, q) for p, q in sorted(initial_stock.items())
               if not self._db.execute("SELECT 1 FROM inventory WHERE product = ?", (p,)).fetchone()]
        self._db.executemany("INSERT INTO inventory (product, stock, version) VALUES (?, ?, 0)", new)
        self._db.executemany("INSERT INTO seed (product, stock) VALUES (?, ?)", new)
        self._db.execute("COMMIT")

    def _load_mirror(self) -> dict:
        return {p: (s, v) for p, s, v in
                self._db.execute("SELECT product, stock, version FROM inventory")}

    def _reader(self) -> sqlite3.Connection:
        """A per-thread read connection, so reads never wait on the writer's transaction."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, isolation_level=None,
                                                      check_same_thread=False)
            with self._lock:
                self._readers.append(conn)
        return conn


def conservation(initial: Mapping[str, int], ledger_rows: Iterable[dict]) -> dict[str, dict]:
    """Per product: initial + stocked in, shipped out, and the stock that implies."""
    out = {p: {"initial": q, "stocked": 0, "shipped": 0} for p, q in initial.items()}
    for row in ledger_rows:
        entry = out.setdefault(row["product"], {"initial": 0, "stocked": 0, "shipped": 0})
        if row["outcome"] == STOCKED:
            entry["stocked"] += row["qty"]
        elif row["outcome"] == SHIPPED:
            entry["shipped"] += row["qty"]
    for entry in out.values():
        entry["expected_stock"] = entry["initial"] + entry["stocked"] - entry["shipped"]
    return out
