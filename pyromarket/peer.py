"""The peer role: one process per configured peer, with its own Pyro5 daemon.

A peer starts its daemon at its configured host:port, waits (bounded) until every
peer in the config answers, and joins the ring election (election.RingElection). The
N_t winners become traders: each hosts a trader.Trader and registers it as
`market.trader.<n>`. Everyone else trades as the buyer or seller the config says it
is (client.Trading). The election keeps being served after it is decided, so a peer
that starts late learns the traders instead of re-electing.

    python -m pyromarket.peer --config conf/market.yaml --id 3
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import Sequence

from . import config, rpc, runtime
from .client import Trading
from .election import RingElection, Send, check_message, trader_index
from .errors import InvalidRequest, Unavailable
from .eventlog import EventLog
from .failover import TRADER_OBJECT, Failover
from .orders import MAX_LISTED_TRADERS, check_label, check_slot
from .post import TradingPost

__all__ = ["PeerNode", "ElectionDriver", "main"]


class ElectionDriver:
    """Runs a RingElection on one thread: feeds it messages, performs its sends."""

    def __init__(self, me: config.PeerConfig, cfg: config.MarketConfig, log: EventLog):
        self.me, self.cfg, self.log = me, cfg, log
        self.machine = RingElection(me.id, [p.id for p in cfg.peers], cfg.traders.count,
                                    timeout_s=cfg.election.startup_timeout_s)
        self.inbox: queue.Queue[dict] = queue.Queue()
        self.decided = threading.Event()
        self._uris = {p.id: rpc.peer_uri(p.host, p.port) for p in cfg.peers}

    @property
    def traders(self) -> tuple[int, ...] | None:
        return self.machine.traders

    def run(self, stop: threading.Event) -> None:
        """Wait for the other peers, elect, then keep answering late joiners."""
        self._await_peers(stop)
        self._perform(self.machine.start(time.monotonic()))
        while not stop.is_set():
            try:
                msg = self.inbox.get(timeout=0.1)
            except queue.Empty:
                self._perform(self.machine.tick(time.monotonic()))
            else:
                self._perform(self.machine.on_message(msg, time.monotonic()))
            if self.machine.decided and not self.decided.is_set():
                self.log(f"Peer {self.me.id} learned the traders: peers {list(self.machine.traders)}")
                self.decided.set()

    def _await_peers(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.cfg.election.startup_timeout_s
        waiting = set(self._uris) - {self.me.id}
        while waiting and time.monotonic() < deadline and not stop.is_set():
            waiting = {pid for pid in waiting if not self._answers(pid)}
            if waiting:
                stop.wait(0.05)
        if waiting:
            self.log(f"Peer {self.me.id} starts the election without peers {sorted(waiting)}, "
                     f"which did not answer within {self.cfg.election.startup_timeout_s} s")

    def _answers(self, pid: int) -> bool:
        with contextlib.suppress(Unavailable), rpc.translated(f"peer {pid}"):
            with rpc.proxy(self._uris[pid], self.cfg.election.message_timeout_s) as p:
                p.ping()
                return True
        return False

    def _perform(self, sends: list[Send]) -> None:
        todo = list(sends)
        while todo:
            send = todo.pop(0)
            try:
                with rpc.translated(f"peer {send.to}"):
                    with rpc.proxy(self._uris[send.to], self.cfg.election.message_timeout_s) as p:
                        p.election_message(send.message)
            except Unavailable:
                self.log(f"Peer {self.me.id} could not reach peer {send.to} during the election")
                todo.extend(self.machine.on_unreachable(send.to, send.message))


class PeerNode:
    """A peer's remote surface: election messages in, status out."""

    def __init__(self, me: config.PeerConfig, driver: ElectionDriver, log: EventLog):
        self.me, self._driver, self._log = me, driver, log
        self.trader_index: int | None = None
        self.trading: Trading | None = None
        self.failover: Failover | None = None
        self.trader_uri: str | None = None

    @property
    def traders(self) -> tuple[int, ...] | None:
        return self._driver.traders

    @rpc.remote
    def election_message(self, message: dict) -> bool:
        """Deliver one election message to this peer's ring election; a
        malformed one raises InvalidRequest."""
        try:
            self._driver.inbox.put(check_message(message))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return True

    @rpc.remote
    def trader_down(self, trader: int, by: int, live: list) -> bool:
        """A survivor's broadcast: `trader` failed; `live` are the traders that remain."""
        check_slot(trader, "trader")
        check_slot(by, "by")
        if not isinstance(live, list) or len(live) > MAX_LISTED_TRADERS:
            raise InvalidRequest(f"live must be a list of at most {MAX_LISTED_TRADERS} "
                                 f"traders' numbers")
        for n in live:
            check_slot(n, "each of live")
        if self.failover is not None:
            self.failover.note_dead(trader)
        if self.trading is not None:
            self.trading.directory.note_down(trader)
        self._log(f"Peer {self.me.id} was told by Trader {by} that Trader {trader} failed; "
                  f"it now trades only with traders {sorted(live)}")
        return True

    @rpc.remote
    def trader_up(self, trader: int, uri: str) -> bool:
        """A launched trader's broadcast: it now serves as `market.trader.<trader>`."""
        check_slot(trader, "trader")
        check_label(uri, "uri", max_len=512)
        if self.trading is not None:
            self.trading.directory.note_up(trader)
        self._log(f"Peer {self.me.id} was told that Trader {trader} now serves at {uri}; "
                  f"it picks among all live traders from now on")
        return True

    @rpc.remote
    def status(self) -> dict:
        """This peer's id, role, the traders it learned and, as a buyer or seller, its
        counters and pending request; as a trader, whom it declared dead."""
        traders = self._driver.traders
        role = "trader" if self.trader_index else self.me.role
        out = {"id": self.me.id, "role": role, "configured_role": self.me.role,
               "decided": traders is not None, "traders": list(traders or ()),
               "trader_index": self.trader_index, "pid": os.getpid()}
        if self.trading is not None:
            out["stats"] = dict(self.trading.stats)
            out["pending"] = self.trading.pending
        if self.failover is not None:
            out["declared_dead"] = {str(n): t for n, t in self.failover.detected_at.items()}
        return out

    @rpc.remote
    def ping(self) -> dict:
        """Liveness, for the election's wait on the other peers and the launcher."""
        return {"role": "peer", "id": self.me.id, "pid": os.getpid()}


def _become_trader(node: PeerNode, cfg: config.MarketConfig, server: rpc.Server,
                   log: EventLog, args, stop: threading.Event) -> TradingPost:
    index = trader_index(node.traders, node.me.id)
    post = TradingPost(index, node.me.id, cfg, server, args.run_dir, args.config, stop)
    uri = post.open(core=runtime.trader_core(index) if cfg.cpu.pin_traders else None)
    node.trader_index, node.trader_uri = index, uri     # status() says "trader" before
    others = {trader_index(node.traders, p): _trader_uri(cfg.peer(p))  # anyone can find
              for p in node.traders if p != node.me.id}                # the name
    post.publish(others)
    node.failover = post.failover
    msg = (f"Peer {node.me.id} was elected and now serves as Trader {index} ({uri}, epoch "
           f"{post.trader.epoch}); it no longer buys or sells")
    log(msg)
    post.log(msg)
    return post


def _trader_uri(peer: config.PeerConfig) -> str:
    return f"PYRO:{TRADER_OBJECT}@{peer.host}:{peer.port}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run peer --id: take part in the election, then trade or host a trader, until
    SIGTERM or SIGINT (exit 0). A bad --id, port or host exits earlier (runtime)."""
    args = runtime.role_args("python -m pyromarket.peer", "Run one market peer.", argv,
                             with_peer_id=True)
    cfg = runtime.load_config(args.config)
    me = runtime.peer_config(cfg, args.id)
    stop = runtime.stop_on_signals()
    rpc.configure(cfg.rpc.threadpool_size)
    log = runtime.open_log(args.run_dir, cfg, f"peer-{me.id}")
    driver = ElectionDriver(me, cfg, log)
    node = PeerNode(me, driver, log)
    server = runtime.serve(me.host, me.port)
    server.register(node, rpc.PEER_OBJECT)
    server.start()
    log(f"Peer {me.id} ({me.role}) listening at {me.host}:{me.port}")
    elector = threading.Thread(target=driver.run, args=(stop,), name="election", daemon=True)
    elector.start()
    post = None
    try:
        while not stop.is_set() and not driver.decided.wait(0.1):
            pass
        if stop.is_set():
            return 0
        if me.id in driver.traders:
            post = _become_trader(node, cfg, server, log, args, stop)
            stop.wait()
        else:
            node.trading = Trading(me, cfg, log, stop)
            node.trading.run()
    finally:
        if post is not None:
            post.close()
        server.close()
        log(f"Peer {node.me.id} stopped")
        log.close()
        elector.join(2.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
