"""A whole market as real child processes: name server, warehouse and every peer.

`Market` is what the launcher (start.py), the integration tests and the benchmarks
all use, so there is one way to start and stop a market. `start()` returns only once
the warehouse answers and the election is decided with N_t traders registered;
`stop()` ends the peers first (so in-flight requests finish), then the traders, the
warehouse and the name server if this Market started it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
from typing import Any, Iterator

from . import audit, config, rpc
from .errors import MarketError, Unavailable
from .launcher import LocalLauncher, replica_pids
from .process import (Service, address_problem, bind_error_words, port_in_use, python_module,
                      stop_all, stop_pids, wait_until)
from .replica import OWNER_ENV
from .store import DatabaseInUse, check_database_file, lock_database

__all__ = ["Market"]


class Market:
    """A running market made of real processes, started and stopped as one unit.
    Use it as a context manager, or call start() and stop(); proxies to its parts come
    from warehouse(), trader(n) and peer(id)."""

    def __init__(self, cfg: config.MarketConfig, config_path: str, run_dir: str):
        self.cfg, self.config_path, self.run_dir = cfg, os.path.abspath(config_path), run_dir
        self.services: dict[str, Service] = {}
        self.trader_peers: set[int] = set()     # peer ids elected as traders
        self.baseline: dict | None = None       # warehouse state before any peer ran
        self._local = threading.local()         # one name-server proxy per thread
        self._launcher: LocalLauncher | None = None     # traders this Market launched itself
        ns = cfg.nameserver
        self._warehouse_at = rpc.Resolver(ns.host, ns.port, rpc.WAREHOUSE_NAME)

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> "Market":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> "Market":
        """Start the name server (unless one answers), the warehouse and every peer;
        return once the election is decided. On any failure, stop what started and re-raise."""
        _make_dir(self.run_dir, "the run's log folder (logs.dir or --run-dir)")
        rpc.configure(self.cfg.rpc.threadpool_size)
        try:
            self._check_addresses()
            self._ensure_nameserver()
            self._refuse_a_running_market()
            self._clear_names()
            self.start_warehouse()
            self.baseline = self._snapshot()
            peers = [self._spawn(f"peer-{p.id}", "pyromarket.peer", ["--id", str(p.id)],
                                 ready=lambda p=p: self._peer_answers(p), wait=False)
                     for p in self.cfg.peers]
            for service in peers:
                service.wait_ready(timeout_s)
            self.wait_for_election(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything this Market started, in phases: buyers and sellers (so their
        in-flight requests finish), traders, warehouse, name server. Safe to call twice."""
        traders = {f"peer-{pid}" for pid in self.trader_peers}
        phases = [[s for n, s in self.services.items() if n.startswith("peer-") and n not in traders],
                  [s for n, s in self.services.items() if n in traders],
                  [s for n, s in self.services.items() if n == "warehouse"],
                  [s for n, s in self.services.items() if n == "nameserver"]]
        for i, phase in enumerate(phases):
            stop_all(phase)
            if i == 1:
                stop_pids(replica_pids(self.run_dir))    # launched traders, wherever from
                if self._launcher is not None:
                    self._launcher.close()               # reap the ones it launched
        self._drop_ns()

    def replicas(self) -> list[int]:
        """Pids of the trader replicas launched on this machine for this run, still alive."""
        return replica_pids(self.run_dir)

    def launch_trader(self, index: int) -> int:
        """Start trader `index` as a replica on this machine (as a coordinator would), one
        that watches this process and is stopped with this Market; returns its pid."""
        if self._launcher is None:
            self._launcher = LocalLauncher(self.config_path, self.run_dir, self._child_env())
        return self._launcher.start(index).pid

    def stop_clients(self) -> None:
        """Stop the buyers and sellers (they finish their in-flight requests); keep the rest."""
        stop_all([s for n, s in self.services.items()
                  if n.startswith("peer-") and int(n[5:]) not in self.trader_peers])

    def start_warehouse(self) -> Service:
        """Start the warehouse process (also to restart it after a kill) and wait
        until it answers."""
        return self._spawn("warehouse", "pyromarket.warehouse", [], ready=self._warehouse_answers)

    def wait_for_election(self, timeout_s: float = 60.0) -> None:
        """Wait until every peer has decided, exactly N_t of them serve as traders, and
        their names are registered; raise if a market process exited meanwhile."""
        wait_until(self._elected, timeout_s, f"the election of {self.cfg.traders.count} traders")

    # --- looking at it --------------------------------------------------------------------

    def ns(self):
        """This thread's name-server proxy."""
        ns = getattr(self._local, "ns", None)
        if ns is None:
            ns = self._local.ns = rpc.nameserver(self.cfg.nameserver.host, self.cfg.nameserver.port)
        return ns

    def _drop_ns(self) -> None:
        rpc.release(getattr(self._local, "ns", None))
        self._local.ns = None

    def traders(self) -> dict[int, str]:
        """{n: uri} of every trader registered in the name server now."""
        try:
            return rpc.list_traders(self.ns())
        except Unavailable:
            self._drop_ns()                 # the name server may have restarted: once more
            return rpc.list_traders(self.ns())

    def revive_nameserver(self) -> bool:
        """Start the name server again if this Market started it and it exited. It keeps
        names in memory, so it comes back empty; the warehouse and the traders bind their
        names again within runtime.RENEW_NAME_S, and meanwhile peers trade with the traders
        they know. False if there was nothing to revive."""
        service = self.services.get("nameserver")
        if service is None or service.running or service.stopping:
            return False
        self._drop_ns()
        self._ensure_nameserver()
        return True

    def warehouse(self, timeout_s: float = 10.0):
        """A new proxy to the warehouse, owned by the calling thread (found by name, or
        at its last address while the name server cannot answer)."""
        return rpc.proxy(self._warehouse_at(), timeout_s)

    def ledger_rows(self, since_seq: int = 0) -> Iterator[dict]:
        """Every warehouse ledger row after `since_seq`, oldest first, fetched a page at a
        time as it is consumed (one call returns at most warehouse.LEDGER_PAGE_MAX)."""
        with rpc.translated("warehouse ledger"), self.warehouse() as w:
            yield from _pages(w.ledger, start=since_seq, cursor=lambda r: r["seq"])

    def trader(self, n: int, timeout_s: float = 10.0):
        """A new proxy to trader n, owned by the calling thread."""
        return rpc.proxy(self.traders()[n], timeout_s)

    def peer(self, peer_id: int, timeout_s: float = 5.0):
        """A new proxy to peer `peer_id`'s own object (status, ping), owned by the
        calling thread."""
        p = self.cfg.peer(peer_id)
        return rpc.proxy(rpc.peer_uri(p.host, p.port), timeout_s)

    def statuses(self, ids=None, timeout_s: float = 5.0) -> dict[int, dict]:
        """{peer id: status()} of the peers that answer (all, or those in `ids`), asked
        all at once, so hung peers cost one deadline between them, not one each."""
        uris = {p.id: rpc.peer_uri(p.host, p.port) for p in self.cfg.peers
                if ids is None or p.id in ids}
        return _answered(rpc.ask_peers(uris, timeout_s, lambda proxy: proxy.status()))

    def trader_stats(self, timeout_s: float = 10.0) -> dict[int, dict]:
        """{n: stats()} of every registered trader that answers, asked all at once."""
        uris = dict(sorted(self.traders().items()))
        return _answered(rpc.ask_peers(uris, timeout_s, lambda t: t.stats(), label="trader"))

    def accuracy(self, stats: dict[int, dict] | None = None) -> dict:
        """Over-sells and *actual* under-sells since start(), each as % of buy requests.
        Under-sells are decided against the ledger's stock at each denial's instant, in
        one pass over both (audit.undersells), a page at a time: a long run's audit holds
        no more than a page of each. `stats` (from trader_stats) saves asking again; the
        denials come from the same traders."""
        stats = self.trader_stats() if stats is None else stats
        seed = {p: e["stock"] for p, e in self.baseline["inventory"].items()}
        uris = self.traders()
        gone = sorted(set(stats) - set(uris))
        if gone:
            raise Unavailable(f"traders {gone} left before the audit could read their denials")
        with contextlib.ExitStack() as stack, rpc.translated("audit"):
            streams = [_pages(stack.enter_context(rpc.proxy(uris[n], 10.0)).denials)
                       for n in sorted(stats)]
            rows = self.ledger_rows(self.baseline["last_seq"])
            denied, under = audit.undersells(seed, rows, audit.in_time_order(*streams))
        out = audit.rates(sum(s["buys"] for s in stats.values()),
                          sum(s["oversells"] for s in stats.values()), under)
        out["local_denials"] = denied
        return out

    def crashed(self, include_traders: bool = True) -> list[str]:
        """Names of children that exited while they should be running. Traders may fail
        by design (their survivors take over), so callers can leave them out."""
        traders = {f"peer-{p}" for p in self.trader_peers}
        return [n for n, s in self.services.items() if s.proc and not s.running
                and not s.stopping and (include_traders or n not in traders)]

    # --- internals --------------------------------------------------------------------------

    def _spawn(self, name: str, module: str, extra: list[str], ready, wait: bool = True) -> Service:
        old = self.services.get(name)
        if old is not None:
            old.stop()
        argv = python_module(module, "--config", self.config_path, "--run-dir", self.run_dir, *extra)
        service = Service(name, argv, ready, output_path=os.path.join(self.run_dir, f"{name}.out"),
                          env=self._child_env())
        self.services[name] = service
        return service.start() if wait else service.launch()

    @staticmethod
    def _child_env() -> dict[str, str]:
        return {**os.environ, OWNER_ENV: str(os.getpid())}      # replicas watch this pid

    def _snapshot(self) -> dict:
        with rpc.translated("warehouse"), self.warehouse() as w:
            return {"last_seq": w.stats()["last_seq"], "inventory": w.inventory()}

    def _check_addresses(self) -> None:
        """Raise RuntimeError, naming the keys, before anything starts, if this machine
        cannot serve an address the warehouse or a peer needs (a host name that does not
        resolve, another machine's address): their processes would only die with a
        traceback. The name server's host must at least resolve."""
        wanted = [("warehouse.host", self.cfg.warehouse.host, self.cfg.warehouse.port),
                  *((f"peers[{i}].host", p.host, p.port) for i, p in enumerate(self.cfg.peers))]
        scale = self.cfg.autoscale
        if scale.enabled and scale.launcher == "local":     # a replica listens on a free port
            wanted.append(("autoscale.replica_host", scale.replica_host, 0))
        problems = [f"{key}: {why}" for key, host, port in wanted
                    if (why := address_problem(host, port))]
        ns = self.cfg.nameserver
        try:
            socket.getaddrinfo(ns.host, ns.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            problems.insert(0, f"nameserver.host: {bind_error_words(exc, ns.host, ns.port)}")
        if problems:
            raise RuntimeError(f"{self.cfg.source}: cannot serve the configured addresses: "
                               f"{'; '.join(problems)}")

    def _ensure_nameserver(self) -> None:
        if self._nameserver_answers():
            return
        ns = self.cfg.nameserver
        why = address_problem(ns.host, ns.port)
        if why:
            raise RuntimeError(f"no name server answers at {ns.host}:{ns.port}, and none can be "
                               f"started there: nameserver.host: {why}")
        self._spawn("nameserver", "nameserver", [], ready=self._nameserver_answers)

    def _nameserver_answers(self) -> bool:
        try:
            self._drop_ns()
            self.ns().ping()
            return True
        except (Unavailable, rpc.CommunicationError):
            self._drop_ns()
            return False

    def _refuse_a_running_market(self) -> None:
        """Raise RuntimeError, before anything is started or unregistered, if a market
        already answers at this name server, or if a port or the database this one needs
        is taken: starting anyway would unregister the live market's names (so its peers
        lose their traders) and then fail. Also if the database file is not a warehouse's
        (`store.check_database_file`, which only reads it)."""
        ns = self.cfg.nameserver
        with contextlib.suppress(Unavailable), rpc.translated("warehouse"):
            with self.warehouse(2.0) as w:
                pid = w.ping()["pid"]
                raise RuntimeError(f"a market already runs at the name server {ns.host}:{ns.port}"
                                   f" (its warehouse answers, pid {pid}); stop it first, or "
                                   f"give this one its own name server and ports")
        wh = self.cfg.warehouse
        taken = [f"warehouse.port ({wh.host}:{wh.port})"] if port_in_use(wh.host, wh.port) else []
        taken += [f"peers[{i}].port ({p.host}:{p.port})" for i, p in enumerate(self.cfg.peers)
                  if port_in_use(p.host, p.port)]
        if taken:
            raise RuntimeError(f"already in use, by another market or program: {', '.join(taken)}")
        _make_dir(os.path.dirname(os.path.abspath(wh.db_path)), "warehouse.db_path")
        try:
            lock = lock_database(wh.db_path)        # free now; the warehouse takes it for good
        except DatabaseInUse as exc:
            raise RuntimeError(f"warehouse.db_path: {exc}") from None
        except OSError as exc:
            raise RuntimeError(f"warehouse.db_path: cannot open {wh.db_path}.lock "
                               f"({exc.strerror})") from None
        try:
            check_database_file(wh.db_path)
        except sqlite3.DatabaseError as exc:          # not SQLite, or somebody else's
            raise RuntimeError(f"warehouse.db_path: {wh.db_path}: {exc}") from None
        finally:
            os.close(lock)

    def _clear_names(self) -> None:
        """Names left by an earlier run on a long-lived name server would mislead peers."""
        with rpc.translated("name server"):
            for name in self.ns().list(prefix="market."):
                self.ns().remove(name)

    def _warehouse_answers(self) -> bool:
        pid = self.services["warehouse"].pid
        with contextlib.suppress(Unavailable), rpc.translated("warehouse"):
            with self.warehouse(2.0) as w:
                return w.ping()["pid"] == pid
        return False

    def _peer_answers(self, p: config.PeerConfig) -> bool:
        with contextlib.suppress(Unavailable), rpc.translated(f"peer {p.id}"):
            with self.peer(p.id, 2.0) as proxy:
                return proxy.ping()["id"] == p.id
        return False

    def _elected(self) -> bool:
        if self.crashed():
            raise RuntimeError(f"market processes exited during start-up: {self.crashed()} "
                               f"(see {self.run_dir}/*.out)")
        statuses = self.statuses()
        if len(statuses) < len(self.cfg.peers) or not all(s["decided"] for s in statuses.values()):
            return False
        traders = {pid: s["trader_index"] for pid, s in statuses.items() if s["role"] == "trader"}
        if len(traders) != self.cfg.traders.count:
            return False                        # a name is up before its peer says so
        try:
            if not set(traders.values()) <= set(self.traders()):
                return False                    # (autoscaling may add names early)
        except Unavailable:
            return False
        self.trader_peers = set(traders)
        return True


def _make_dir(path: str, key: str) -> None:
    """The folder `path`, or a RuntimeError naming the config key it came from."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"{key}: cannot create the folder {path} ({exc.strerror})") from None


def _answered(answers: dict[int, object]) -> dict[int, Any]:
    """The answers of ask_peers that are not errors. Those that did not answer
    (Unavailable) are left out; any other MarketError is raised."""
    for answer in answers.values():
        if isinstance(answer, MarketError) and not isinstance(answer, Unavailable):
            raise answer
    return {n: a for n, a in answers.items() if not isinstance(a, MarketError)}


def _pages(fetch, start: int = 0, cursor=None) -> Iterator:
    """Every item of a paginated remote listing, fetched a page at a time (of the size the
    server chooses) as it is consumed, until a page comes back empty. `cursor(item)` gives
    the next start (ledger seq numbers); without it the start is a plain index."""
    while True:
        chunk = fetch(start)
        if not chunk:
            return
        yield from chunk
        start = cursor(chunk[-1]) if cursor else start + len(chunk)
