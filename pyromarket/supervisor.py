"""The launcher's last resort for traders: start Trader 1 again when no trader serves.

A survivor replaces a dead trader (failover.py), but once no trader serves there is no
survivor to do it. With autoscaling set to replace failed traders (local launcher), the
launcher then starts Trader 1 again, as a replica on this machine, and it takes over from
the others as a survivor would. It looks two ways:

* no trader *process* is left (elected peers and replicas all exited): at once;
* processes are left but none serves: `ServingProbe` asks every listed trader "are you
  there?" once per heartbeat interval, and heartbeat.misses probes in a row in which
  none answered count as none serving. That covers traders that hang, are paused, or
  stepped down while their processes run on. Being wrong costs a live trader its slot,
  so each ping may take misses x timeout_s, a survivor's whole budget, not timeout_s.

A Trader 1 started while the old one hangs joins slot 1 afresh, which fences the old
one's epoch at the warehouse (store.join): it can never write again, and it steps down
when it wakes. The others it fences itself, as a survivor does. At most
MAX_TRADER_RELAUNCHES launches a run.
"""

from __future__ import annotations

import threading
import time

from . import config, rpc
from .errors import MarketError
from .heartbeat import ServingWatch

__all__ = ["Relauncher", "ServingProbe", "traders_left", "MAX_TRADER_RELAUNCHES"]

MAX_TRADER_RELAUNCHES = 5       # a trader that keeps dying is, after this, left dead


class Relauncher:
    """Starts Trader 1 again when no trader process is left, or when `probe` says that
    none serves. `probe` is a started ServingProbe, or anything with its `none_serving`,
    `restart`, `close` and `verdict`; None watches processes only."""

    def __init__(self, market, probe=None):
        self.market, self.probe = market, probe
        self.launches, self.gave_up = 0, False

    @classmethod
    def for_market(cls, market) -> "Relauncher":
        """One that also probes whether any trader serves (a thread, until `close`)."""
        return cls(market, ServingProbe(market.cfg).start())

    @staticmethod
    def wanted(cfg: config.MarketConfig) -> bool:
        a = cfg.autoscale
        return a.enabled and a.replace_failed and a.launcher == "local"

    def check(self) -> str | None:
        """Start Trader 1 if no trader process is left or none serves; what to say about
        it, or None."""
        if self.gave_up:
            return None
        gone = traders_left(self.market) == 0
        if not gone and not (self.probe is not None and self.probe.none_serving()):
            return None
        why = "no trader is left" if gone else self.probe.verdict
        if self.launches >= MAX_TRADER_RELAUNCHES:
            self.gave_up = True
            return (f"{why}, and the launcher has started Trader 1 again "
                    f"{self.launches} times: nothing trades for the rest of this run")
        self.launches += 1
        pid = self.market.launch_trader(1)
        if self.probe is not None:
            self.probe.restart(self.market.cfg.autoscale.launch_timeout_s)
        said = (f"the launcher started Trader 1 again (pid {pid}; {self.launches} of at most "
                f"{MAX_TRADER_RELAUNCHES}); it takes over from the other traders")
        return said if gone else f"{why}: {said}"        # an exit was already reported

    def close(self) -> None:
        """Stop the probe's thread, if any."""
        if self.probe is not None:
            self.probe.close()


def traders_left(market) -> int | None:
    """Trader processes still running: elected peers (some may have stepped down) and
    replicas launched on this machine; None if replicas may run elsewhere."""
    scale = market.cfg.autoscale
    if scale.enabled and scale.launcher != "local":
        return None
    elected = sum(market.services[f"peer-{p}"].running for p in market.trader_peers)
    return elected + len(market.replicas())


class ServingProbe:
    """A thread that asks every trader listed in the name server, once per heartbeat
    interval, whether it serves, and keeps the score in a ServingWatch. Its proxies and
    name-server connections are its own (Pyro5's one-thread-per-proxy rule); each probe
    opens a short connection to the name server and holds none in between."""

    def __init__(self, cfg: config.MarketConfig):
        self.cfg = cfg
        hb = cfg.heartbeat
        self.watch = ServingWatch(hb.misses, time.monotonic())
        self.deadline_s = hb.misses * hb.timeout_s       # of one ping
        self.verdict = (f"no trader answered {hb.misses} probes in a row (their processes "
                        f"run on: hung, paused or stepped down)")
        self._lock = threading.Lock()
        self._down = False
        self._stop = threading.Event()
        self._proxies: dict[str, object] = {}
        self._thread = threading.Thread(target=self._run, name="serving-probe", daemon=True)

    def start(self) -> "ServingProbe":
        self._thread.start()
        return self

    def none_serving(self) -> bool:
        """True once misses probes in a row found no trader serving (until `restart`)."""
        with self._lock:
            return self._down

    def restart(self, grace_s: float) -> None:
        """A trader was launched: give it `grace_s` to come up before counting again."""
        with self._lock:
            self._down = False
            self.watch.restart(time.monotonic(), grace_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (bounded: a probe in flight ends within its deadlines)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.cfg.heartbeat.interval_s):
                serving = self.probe()
                with self._lock:
                    if self.watch.record(serving, time.monotonic()):
                        self._down = True
        finally:
            for p in self._proxies.values():
                rpc.release(p)

    def probe(self) -> bool | None:
        """True if a listed trader answered a ping, False if traders are listed and none
        answered, None if the name server did not answer or listed none."""
        ns = self.cfg.nameserver
        try:
            with rpc.nameserver(ns.host, ns.port, self.deadline_s) as proxy:
                uris = list(rpc.list_traders(proxy).values())
        except MarketError:
            return None
        if not uris:
            return None
        for uri in uris:
            if self._stop.is_set():
                return None
            if self._answers(uri):
                return True
        return False

    def _answers(self, uri: str) -> bool:
        try:
            with rpc.translated("trader ping"):
                p = self._proxies.get(uri)
                if p is None:
                    p = self._proxies[uri] = rpc.proxy(uri, self.deadline_s)
                p.ping()
            return True
        except MarketError:              # Unavailable, or NotATrader (it stepped down)
            rpc.release(self._proxies.pop(uri, None))
            return False
