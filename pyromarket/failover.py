"""A trader's heartbeat loop and takeover (the spec's A4), on its own thread.

Every heartbeat.interval_s the trader pings every other live trader, each ping with its
own deadline (heartbeat.HeartbeatMonitor keeps the score). When a trader misses
heartbeat.misses pings in a row, this survivor takes over, in this order:
  1. fence it at the warehouse, so that if it was only paused it can never write again;
  2. remove its name from the name server, so nobody finds it any more;
  3. tell every peer it failed and which traders remain (the spec's broadcast).
Each step is idempotent, so with N_t > 2 every survivor may do it. A trader whose own
loop finds it was paused longer than the detection window asks the warehouse whether it
was fenced meanwhile, and steps down if so.
"""

from __future__ import annotations

import contextlib
import threading
import time

from . import config, rpc
from .errors import MarketError, Unavailable
from .eventlog import EventLog
from .heartbeat import HeartbeatMonitor
from .trader import Trader, WarehouseLink

__all__ = ["Failover", "TRADER_OBJECT"]

TRADER_OBJECT = "market.trader"


class Failover:
    def __init__(self, trader: Trader, link: WarehouseLink, cfg: config.MarketConfig,
                 traders: dict[int, int], log: EventLog):
        """`traders`: {trader index: peer id} as the election decided."""
        self.trader, self.link, self.cfg, self.log = trader, link, cfg, log
        self.me = trader.index
        self._peer_of = dict(traders)
        hb = cfg.heartbeat
        self.monitor = HeartbeatMonitor([n for n in traders if n != self.me], hb.interval_s,
                                         hb.timeout_s, hb.misses, time.monotonic(),
                                         grace_s=cfg.election.startup_timeout_s)
        self._proxies: dict[int, object] = {}
        self._told_dead: set[int] = set()
        self._lock = threading.Lock()
        self.detected_at: dict[int, float] = {}      # trader n -> wall time declared dead

    def run(self, stop: threading.Event) -> None:
        step = self.cfg.heartbeat.interval_s / 4
        while not stop.is_set() and not self.trader.retired.is_set():
            now = time.monotonic()
            if self.monitor.paused(now):
                self._check_fenced()
            self._absorb_told_dead()
            for n in self.monitor.due(now):
                ok = self._ping(n)
                if not ok:
                    self.log(f"Trader {self.me} got no answer to a heartbeat from Trader {n}")
                if self.monitor.record(n, ok, now):
                    self.take_over(n)
            stop.wait(step)
        self._release()

    def note_dead(self, n: int) -> None:
        """Another survivor already took over from trader n: stop watching it.
        Called from a Pyro5 worker thread; the heartbeat thread applies it."""
        with self._lock:
            self._told_dead.add(n)

    def _absorb_told_dead(self) -> None:
        with self._lock:
            told, self._told_dead = self._told_dead, set()
        for n in told:
            if n not in self.monitor.dead:
                self.monitor.mark_dead(n)
                self._drop(n)
                self.log(f"Trader {self.me} stops watching Trader {n}: another survivor "
                         f"declared it dead")

    def take_over(self, n: int) -> None:
        self.detected_at[n] = time.time()
        self.log(f"Trader {self.me} got no answer to {self.cfg.heartbeat.misses} heartbeats in a "
                 f"row from Trader {n} and declares it dead")
        self._fence(n)
        self._unlist(n)
        live = [self.me] + [m for m in self.monitor.live if m != n]
        self._broadcast(n, sorted(live))
        alone = "the sole trader" if len(live) == 1 else f"one of traders {sorted(live)}"
        self.log(f"Trader {self.me} has taken over from Trader {n} and is now {alone}")

    # --- steps ------------------------------------------------------------------------------

    def _ping(self, n: int) -> bool:
        try:
            with rpc.translated(f"trader {n}"):
                p = self._proxies.get(n)
                if p is None:
                    peer = self.cfg.peer(self._peer_of[n])
                    p = self._proxies[n] = rpc.proxy(
                        f"PYRO:{TRADER_OBJECT}@{peer.host}:{peer.port}", self.cfg.heartbeat.timeout_s)
                p.ping()
            return True
        except MarketError:                 # Unavailable, or NotATrader (it stepped down)
            self._drop(n)
            return False

    def _fence(self, n: int) -> None:
        for attempt in range(5):
            try:
                epoch = self.link.fence(n, self.me)
                self.log(f"Trader {self.me} had the warehouse fence Trader {n} (epoch {epoch})")
                return
            except MarketError as exc:
                self.log(f"Trader {self.me} could not fence Trader {n} yet ({exc}); retrying")
                time.sleep(0.1 * (attempt + 1))

    def _unlist(self, n: int) -> None:
        """Remove market.trader.<n>, unless it already names someone else (a replacement)."""
        peer = self.cfg.peer(self._peer_of[n])
        dead_uri = f"PYRO:{TRADER_OBJECT}@{peer.host}:{peer.port}"
        try:
            with rpc.nameserver(self.cfg.nameserver.host, self.cfg.nameserver.port) as ns:
                rpc.remove_name_if(ns, rpc.trader_name(n), dead_uri)
            self.log(f"Trader {self.me} removed {rpc.trader_name(n)} from the name server")
        except MarketError as exc:
            self.log(f"Trader {self.me} could not unlist Trader {n}: {exc}")

    def _broadcast(self, n: int, live: list[int]) -> None:
        dead_peer, my_peer = self._peer_of.get(n), self._peer_of[self.me]
        for peer in self.cfg.peers:
            if peer.id in (dead_peer, my_peer):
                continue
            try:
                with rpc.translated(f"peer {peer.id}"), \
                        rpc.proxy(rpc.peer_uri(peer.host, peer.port), self.cfg.heartbeat.timeout_s) as p:
                    p.trader_down(n, self.me, live)
                self.log(f"Trader {self.me} told peer {peer.id} that Trader {n} failed; "
                         f"traders now {live}")
            except MarketError as exc:
                self.log(f"Trader {self.me} could not tell peer {peer.id} ({exc})")

    def _check_fenced(self) -> None:
        self.log(f"Trader {self.me} did not run for longer than the detection window "
                 f"({self.monitor.detection_bound_s:.2f} s); asking whether it was declared dead")
        with contextlib.suppress(Unavailable):
            if self.link.fenced(self.trader.epoch):
                self.trader.retire("it was paused, and meanwhile declared dead and fenced")

    def _drop(self, n: int) -> None:
        rpc.release(self._proxies.pop(n, None))

    def _release(self) -> None:
        for n in list(self._proxies):
            self._drop(n)
