"""A trader's heartbeat loop, takeover (the spec's A4) and autoscaling (A5), on one thread.

Every heartbeat.interval_s the trader pings every other live trader, each ping with its
own deadline (heartbeat.HeartbeatMonitor keeps the score). When a trader misses
heartbeat.misses pings in a row, this survivor takes over, in this order:
  1. fence it at the warehouse, so that if it was only paused it can never write again;
     the warehouse refuses a fence from a trader fenced itself, which then steps down
     and stops here (two traders cut off from each other leave one, not none);
  2. remove its name from the name server, so nobody finds it any more;
  3. tell every peer it failed and which traders remain (the spec's broadcast).
Each step is idempotent, so with N_t > 2 every survivor may do it. A trader asks the
warehouse whether it was fenced, and steps down if so, when its own loop finds it was
paused longer than the detection window, when a broadcast names it, and before it binds
its name again (a survivor unlisted it, or the name server restarted).

The loop re-reads the traders' names every REFRESH_S, so it starts watching a trader
that was launched (or replaced) later; it also binds this trader's own name again if
the name server lost it (a restarted one starts empty), and retries an unlisting that
failed while the name server was away. With autoscaling on, the coordinator (the live
trader with the lowest n) hands the loads that pings report to its scaler.Scaler, which
launches a trader when the policy says so, or a replacement after a takeover.
"""

from __future__ import annotations

import contextlib
import threading
import time

from . import config, rpc, runtime
from .errors import FencedOut, MarketError, Unavailable
from .eventlog import EventLog
from .heartbeat import HeartbeatMonitor
from .scaler import Scaler
from .trader import Trader, WarehouseLink

__all__ = ["Failover", "TRADER_OBJECT"]

TRADER_OBJECT = "market.trader"
REFRESH_S = runtime.RENEW_NAME_S   # how often the trader names are re-read, and its own renewed


class Failover:
    """One trader's heartbeat thread: pings the other traders, takes over from one that
    stops answering, steps down if it was itself fenced, and drives autoscaling when it is
    the coordinator. Built by the TradingPost; runs until `stop` is set or it retires."""

    def __init__(self, trader: Trader, link: WarehouseLink, cfg: config.MarketConfig,
                 traders: dict[int, str], log: EventLog, launcher=None, location: str = "",
                 name: rpc.Registration | None = None):
        """`traders`: {n: uri} of the other traders known now; `launcher`: set when
        autoscaling is on; `location`: this process's host:port (not told of its own fall);
        `name`: this trader's own name, renewed if the name server loses it."""
        self.trader, self.link, self.cfg, self.log = trader, link, cfg, log
        self.name = name
        self.me, self._location = trader.index, location
        self._uris = {n: u for n, u in traders.items() if n != self.me}
        hb, a = cfg.heartbeat, cfg.autoscale
        self.monitor = HeartbeatMonitor(list(self._uris), hb.interval_s, hb.timeout_s, hb.misses,
                                        time.monotonic(), grace_s=cfg.election.startup_timeout_s)
        self.scaler = Scaler(trader, a, launcher, log) if launcher else None
        self._loads: dict[int, int] = {}       # n -> requests in its window, from its pings
        self._epochs: dict[int, int] = {}      # n -> the epoch its pings showed
        self._refresh_at = time.monotonic() + REFRESH_S
        self._proxies: dict[int, object] = {}
        self._told_dead: set[int] = set()
        self._lock = threading.Lock()
        self.detected_at: dict[int, float] = {}      # trader n -> wall time declared dead

    def run(self, stop: threading.Event) -> None:
        """The heartbeat loop, a quarter interval per step, until `stop` is set or this
        trader is retired. Run it on a thread of its own."""
        step = self.cfg.heartbeat.interval_s / 4
        while not stop.is_set() and not self.trader.retired.is_set():
            now = time.monotonic()
            if self.monitor.paused(now):
                self._check_fenced(f"did not run for longer than the detection window "
                                   f"({self.monitor.detection_bound_s:.2f} s)")
            self._absorb_told_dead()
            if now >= self._refresh_at:
                self._refresh_at = now + REFRESH_S
                self._refresh()
                if self.name is not None:
                    runtime.renew(self.name, self.log, f"Trader {self.me}",
                                  before_bind=self._may_bind)
            for n in self.monitor.due(now):
                ok = self._ping(n)
                if not ok:
                    self.log(f"Trader {self.me} got no answer to a heartbeat from Trader {n}"
                             + (" (it may still be starting; not counted)"
                                if self.monitor.starting(n, now) else ""))
                if self.monitor.record(n, ok, now):
                    self.take_over(n)
            self._autoscale(now)
            stop.wait(step)
        if self.trader.retired.is_set() and self.name is not None:
            self.name.withdraw()            # a trader that stepped down is found no more
        self._release()

    @property
    def coordinator(self) -> bool:
        """The live trader with the lowest n decides scaling and replacements."""
        return self.me == min([self.me, *self.monitor.live])

    def note_dead(self, n: int) -> None:
        """Another survivor already took over from trader n: stop watching it.
        Called from a Pyro5 worker thread; the heartbeat thread applies it."""
        with self._lock:
            self._told_dead.add(n)

    def _absorb_told_dead(self) -> None:
        with self._lock:
            told, self._told_dead = self._told_dead, set()
        for n in told:
            if n == self.me:
                self._check_fenced("heard that another trader declared it dead")
            elif n not in self.monitor.dead:
                self.monitor.mark_dead(n)
                self._drop(n)
                self.log(f"Trader {self.me} stops watching Trader {n}: another survivor "
                         f"declared it dead")

    def take_over(self, n: int) -> None:
        """Trader `n` missed its heartbeats: fence it, unlist it, tell every peer, and
        (as coordinator, with autoscaling) launch its replacement. Each step is idempotent."""
        self.detected_at[n] = time.time()
        self.log(f"Trader {self.me} got no answer to {self.cfg.heartbeat.misses} heartbeats in a "
                 f"row from Trader {n} and declares it dead")
        if not self._fence(n):
            return
        self._unlist(n)
        live = [self.me] + [m for m in self.monitor.live if m != n]
        self._broadcast(n, sorted(live))
        alone = "the sole trader" if len(live) == 1 else f"one of traders {sorted(live)}"
        self.log(f"Trader {self.me} has taken over from Trader {n} and is now {alone}")
        if self.scaler and self.coordinator:
            self.scaler.replace(time.monotonic(), n, self._live_loads())

    # --- autoscaling --------------------------------------------------------------------------

    def _autoscale(self, now: float) -> None:
        if not self.scaler:
            return
        loads = self._live_loads()
        self.scaler.observe(now, loads)       # whoever coordinates: a launch ends once live
        if self.coordinator:
            self.scaler.tick(now, loads, {self.me, *self._uris, *self.monitor.dead})

    def _live_loads(self) -> dict[int, int]:
        loads = {n: self._loads.get(n, 0) for n in self.monitor.live}
        loads[self.me] = self.trader.load.count(time.monotonic())
        return loads

    def _refresh(self) -> None:
        """Watch traders that registered since (launched replicas, replacements)."""
        try:
            with rpc.nameserver(self.cfg.nameserver.host, self.cfg.nameserver.port,
                                self.cfg.heartbeat.timeout_s) as ns:   # short: never stall pings
                found = rpc.list_traders(ns)
        except (Unavailable, rpc.CommunicationError):
            return
        for n, uri in found.items():
            if n != self.me and self._uris.get(n) != uri:
                self._uris[n] = uri
                self._drop(n)
                self._epochs.pop(n, None)
                self.monitor.add(n)
                self.log(f"Trader {self.me} now watches Trader {n} at {uri}")
        for n in self.monitor.dead:         # unlisting failed while the name server was away
            if n in found and found[n] == self._uris.get(n):
                self._unlist(n)

    # --- steps ------------------------------------------------------------------------------

    def _ping(self, n: int) -> bool:
        try:
            with rpc.translated(f"trader {n}"):
                p = self._proxies.get(n)
                if p is None:
                    p = self._proxies[n] = rpc.proxy(self._uris[n], self.cfg.heartbeat.timeout_s)
                reply = p.ping()
            self._loads[n], self._epochs[n] = reply.get("load", 0), reply["epoch"]
            return True
        except MarketError:                 # Unavailable, or NotATrader (it stepped down)
            self._drop(n)
            return False

    def _fence(self, n: int) -> bool:
        """Have the warehouse fence trader n. False if it refused because this trader was
        fenced first (declared dead by another, as when two traders are cut off from each
        other): this one then steps down, and the takeover stops here. A warehouse that
        does not answer five tries does not hold the takeover up."""
        for attempt in range(5):
            try:
                epoch = self.link.fence(n, self.me, self._epochs.get(n, 0), self.trader.epoch)
                self.log(f"Trader {self.me} had the warehouse fence Trader {n} (epoch {epoch})")
                return True
            except FencedOut:
                self.trader.retire(f"it declared Trader {n} dead, but the warehouse had "
                                   f"already fenced it: another trader declared it dead first")
                return False
            except MarketError as exc:
                self.log(f"Trader {self.me} could not fence Trader {n} yet ({exc}); retrying")
                time.sleep(0.1 * (attempt + 1))
        return True

    def _unlist(self, n: int) -> None:
        """Remove market.trader.<n>, unless it already names someone else (a replacement)."""
        dead_uri = self._uris[n]
        try:
            with rpc.nameserver(self.cfg.nameserver.host, self.cfg.nameserver.port,
                                self.cfg.heartbeat.timeout_s) as ns:    # _refresh retries
                rpc.remove_name_if(ns, rpc.trader_name(n), dead_uri)
            self.log(f"Trader {self.me} removed {rpc.trader_name(n)} from the name server")
        except MarketError as exc:
            self.log(f"Trader {self.me} could not unlist Trader {n}: {exc}")

    def _broadcast(self, n: int, live: list[int]) -> None:
        """Tell every peer at once (a hung one delays no other) that trader n failed."""
        skip = {self._location, rpc.location(self._uris[n])}   # this process, the dead one
        uris = {peer.id: rpc.peer_uri(peer.host, peer.port) for peer in self.cfg.peers
                if f"{peer.host}:{peer.port}" not in skip}
        told = rpc.tell_peers(uris, self.cfg.heartbeat.timeout_s,
                              lambda p: p.trader_down(n, self.me, live))
        for peer, error in told.items():
            self.log(f"Trader {self.me} could not tell peer {peer} ({error})" if error else
                     f"Trader {self.me} told peer {peer} that Trader {n} failed; "
                     f"traders now {live}")

    def _check_fenced(self, why: str) -> None:
        self.log(f"Trader {self.me} {why}; asking the warehouse whether it was fenced")
        self._serves_on(why)

    def _may_bind(self) -> bool:
        """Before this trader binds its name again: the name is gone either because the
        name server restarted or because a survivor declared this trader dead and
        unlisted it. In the second case it steps down instead."""
        return self._serves_on("found its name removed from the name server")

    def _serves_on(self, why: str) -> bool:
        """False, and this trader steps down, if the warehouse says it was fenced; True
        also when the warehouse cannot tell now."""
        with contextlib.suppress(Unavailable):
            if self.link.fenced(self.trader.epoch):
                self.trader.retire(f"it {why}, and the warehouse says it was fenced (declared "
                                   f"dead, or replaced in its slot)")
                return False
        return True

    def _drop(self, n: int) -> None:
        rpc.release(self._proxies.pop(n, None))

    def _release(self) -> None:
        for n in list(self._proxies):
            self._drop(n)
