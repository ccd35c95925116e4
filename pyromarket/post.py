"""A trading post: one Trader served from this process, with its epoch, name and heartbeats.

Both kinds of trader use it: an elected peer (peer.py) and a launched replica
(replica.py). `open()` joins the warehouse for a fresh epoch (the fencing token) and
serves the Trader object; `publish()` registers `market.trader.<n>` in the name server
and starts the heartbeat, takeover and autoscaling thread (failover.Failover); a
replica also `announce()`s itself to every peer. `close()` undoes all of it.
"""

from __future__ import annotations

import os
import threading

from . import config, rpc, runtime
from .errors import Unavailable
from .eventlog import EventLog
from .failover import TRADER_OBJECT, Failover
from .launcher import make_launcher
from .trader import Trader, WarehouseLink

__all__ = ["TradingPost", "pin"]


class TradingPost:
    """Everything that makes a process a trader: its warehouse link (and epoch), the
    exposed Trader object, its name in the name server, its heartbeat thread and, with
    autoscaling on, its launcher. An elected peer and a launched replica both use it:
    open(), then publish() (and announce(), for a replica), then close()."""

    def __init__(self, index: int, peer_id: int | None, cfg: config.MarketConfig,
                 server: rpc.Server, run_dir: str | None, config_path: str,
                 stop: threading.Event):
        self.index, self.peer_id, self.cfg, self.server = index, peer_id, cfg, server
        self.run_dir, self.config_path, self.stop = run_dir or cfg.logs.dir, config_path, stop
        self.log: EventLog = runtime.open_log(run_dir, cfg, f"trader-{index}")
        self.link: WarehouseLink | None = None
        self.trader: Trader | None = None
        self.failover: Failover | None = None
        self.uri: str | None = None
        self._name: rpc.Registration | None = None      # set once the name is published
        self._launcher = None

    def open(self, core: int | None = None) -> str:
        """Join the warehouse and serve the Trader object; return its URI."""
        if core is not None:
            pin(core, self.index, self.log)
        ns = self.cfg.nameserver
        self.link = WarehouseLink(rpc.Resolver(ns.host, ns.port, rpc.WAREHOUSE_NAME),
                                  self.cfg.rpc.warehouse_timeout_s, self.cfg.warehouse.batch_max)
        epoch = self._join()
        self.trader = Trader(self.index, self.peer_id, self.cfg, self.link, self.log,
                             self.run_dir, epoch)
        self.uri = self.server.register(self.trader, TRADER_OBJECT)
        return self.uri

    def publish(self, others: dict[int, str] | None = None) -> None:
        """Register the name and start heartbeats. `others`: {n: uri} of the other
        traders, if known (an election result); else they are read from the name server."""
        with runtime.connect_ns(self.cfg, stop=self.stop) as ns:
            if others is None:
                others = {n: u for n, u in rpc.list_traders(ns).items() if n != self.index}
            rpc.register_name(ns, rpc.trader_name(self.index), self.uri)
        if self.cfg.autoscale.enabled:
            self._launcher = make_launcher(self.cfg, self.config_path, self.run_dir)
        ns = self.cfg.nameserver
        self._name = rpc.Registration(ns.host, ns.port, rpc.trader_name(self.index), self.uri,
                                      timeout_s=self.cfg.heartbeat.timeout_s)  # between pings
        self.failover = Failover(self.trader, self.link, self.cfg, others, self.log,
                                 launcher=self._launcher, location=rpc.location(self.uri),
                                 name=self._name)
        threading.Thread(target=self.failover.run, args=(self.stop,), name="heartbeat",
                         daemon=True).start()
        self._schedule_exit()

    def announce(self) -> None:
        """Tell every peer at once that this trader serves now (a replica's broadcast)."""
        uris = {peer.id: rpc.peer_uri(peer.host, peer.port) for peer in self.cfg.peers}
        told = rpc.tell_peers(uris, self.cfg.heartbeat.timeout_s,
                              lambda p: p.trader_up(self.index, self.uri))
        for peer, error in told.items():
            self.log(f"Trader {self.index} could not tell peer {peer} ({error})" if error else
                     f"Trader {self.index} told peer {peer} that it now serves at {self.uri}")

    def close(self, keep_launched: bool = False) -> None:
        """Unregister the name (if it still points here), then close the launcher (which
        stops the traders it launched, unless `keep_launched`), the warehouse link, the
        trader and the event log. The heartbeat thread ends with the `stop` event."""
        if self._name is not None:
            self._name.withdraw()
        if self._launcher is not None and not keep_launched:
            self._launcher.close()
        if self.link is not None:
            self.link.close()
        if self.trader is not None:
            self.trader.close()
        self.log.close()

    def _join(self) -> int:
        """This trader's epoch from the warehouse, retrying while the warehouse starts."""
        for delay in runtime.backoff_delays(0.05, 1.0):
            try:
                return self.link.join(self.index)
            except Unavailable:
                if self.stop.wait(delay):
                    raise

    def _schedule_exit(self) -> None:
        """The spec's forced failure: exit after_s seconds in, as the config's faults say."""
        for fault in self.cfg.faults.exit_traders:
            if fault.trader == self.index and self.peer_id is not None:
                timer = threading.Timer(fault.after_s, self._die, args=(fault.after_s,))
                timer.daemon = True                 # never holds up a normal stop
                timer.start()

    def _die(self, after_s: float) -> None:
        self.log(f"Trader {self.index} exits now, {after_s} s after its election, as "
                 f"faults.exit_traders says")
        self.log.close()
        os._exit(3)


def pin(core: int, index: int, log: EventLog) -> None:
    """Run this process on one core only, so a trader cannot borrow another's CPU."""
    os.sched_setaffinity(0, {core})
    log(f"Trader {index} is pinned to CPU core {core}")

