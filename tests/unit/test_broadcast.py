"""rpc.tell_peers, a survivor's and a replica's broadcast, and rpc.ask_peers, which
Market.statuses and Market.trader_stats use, with fake peer proxies: a hung peer delays
no other, and each peer's outcome or answer comes back in order. No sockets."""

from __future__ import annotations

import threading

import Pyro5.errors
import pytest

from pyromarket import config, rpc
from pyromarket.errors import InvalidRequest, Unavailable
from pyromarket.market import Market

URIS = {1: "PYRO:market.peer@127.0.0.1:9201", 2: "PYRO:market.peer@127.0.0.1:9202",
        3: "PYRO:market.peer@127.0.0.1:9203"}


class FakePeer:
    """A peer proxy: `trader_down` records the news and hangs while `hang` is clear if
    `hangs`; `status` and a trader's `stats` answer once every asked peer waits at the
    `together` barrier. All fail as a refused connection if `refuses`."""

    def __init__(self, uri: str, world: dict):
        self.uri, self.world = uri, world
        self.timeout_s = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def _connect(self):
        if self.uri in self.world["refuses"]:
            raise Pyro5.errors.CommunicationError("cannot connect: Connection refused")

    def trader_down(self, n, by, live):
        self._connect()
        w = self.world
        with w["lock"]:
            w["told"].append(self.uri)
            w["told_changed"].notify_all()
        if self.uri in w["hangs"]:
            assert w["hang"].wait(30), "the test never released the hung peer"

    def status(self):
        self._connect()
        self.world["together"].wait()               # every asked peer at once, or broken
        return {"uri": self.uri}

    def stats(self):
        return self.status()


@pytest.fixture
def world(monkeypatch):
    lock = threading.Lock()
    w = {"told": [], "hangs": set(), "refuses": set(), "hang": threading.Event(),
         "lock": lock, "told_changed": threading.Condition(lock),
         "together": threading.Barrier(len(URIS), timeout=10)}

    def proxy(uri, timeout_s):
        p = FakePeer(uri, w)
        p.timeout_s = timeout_s
        return p

    monkeypatch.setattr(rpc, "proxy", proxy)
    return w


def test_a_hung_peer_delays_no_other(world):
    world["hangs"].add(URIS[1])
    result = {}
    broadcast = threading.Thread(target=lambda: result.update(
        rpc.tell_peers(URIS, 0.2, lambda p: p.trader_down(2, 1, [1]))))
    broadcast.start()
    with world["told_changed"]:
        assert world["told_changed"].wait_for(lambda: len(world["told"]) == 3, 10), \
            "peers 2 and 3 waited for hung peer 1"
    assert broadcast.is_alive()                 # still waiting on peer 1 alone
    world["hang"].set()
    broadcast.join(10)
    assert result == {1: None, 2: None, 3: None}


def test_each_peers_outcome_comes_back_in_order(world):
    world["refuses"].add(URIS[2])
    told = rpc.tell_peers(URIS, 0.2, lambda p: p.trader_down(2, 1, [1]))
    assert list(told) == [1, 2, 3]
    assert told[1] is None and told[3] is None
    assert isinstance(told[2], Unavailable) and "peer 2" in str(told[2])
    assert rpc.tell_peers({}, 0.2, lambda p: None) == {}


def test_ask_peers_asks_all_at_once_and_returns_each_answer_in_order(world):
    answers = rpc.ask_peers(URIS, 0.2, lambda p: p.status())
    assert answers == {n: {"uri": uri} for n, uri in URIS.items()}


def test_ask_peers_returns_the_error_of_a_peer_that_did_not_answer(world):
    world["refuses"].add(URIS[3])
    world["together"] = threading.Barrier(2, timeout=10)
    answers = rpc.ask_peers(URIS, 0.2, lambda p: p.status())
    assert answers[1] == {"uri": URIS[1]} and answers[2] == {"uri": URIS[2]}
    assert isinstance(answers[3], Unavailable) and "peer 3" in str(answers[3])
    assert rpc.ask_peers({}, 0.2, lambda p: p.status()) == {}


@pytest.fixture
def market(world, tmp_path):
    """A Market of conf/market.yaml's peers that starts nothing: statuses() meets the
    fake peers, every one asked at once or the barrier breaks."""
    cfg = config.load()
    uris = {p.id: rpc.peer_uri(p.host, p.port) for p in cfg.peers}
    world["together"] = threading.Barrier(len(uris) - 1, timeout=10)
    world["refuses"].add(uris[cfg.peers[0].id])
    return Market(cfg, config.DEFAULT_PATH, str(tmp_path)), uris


def test_statuses_asks_every_peer_at_once_and_leaves_out_those_that_do_not_answer(market):
    market, uris = market
    first = market.cfg.peers[0].id
    assert market.statuses() == {n: {"uri": uri} for n, uri in uris.items() if n != first}


def test_statuses_raises_a_peers_error_other_than_unavailable(market, monkeypatch):
    market, uris = market

    def refuse_with_a_reason(self):
        raise InvalidRequest("status: not now")
    monkeypatch.setattr(FakePeer, "status", refuse_with_a_reason)
    with pytest.raises(InvalidRequest, match="not now"):
        market.statuses()


@pytest.fixture
def traders(world, tmp_path, monkeypatch):
    """A Market that starts nothing, whose name server lists URIS as traders 1-3 (out of
    order); trader 3 refuses, the other two are asked at once or the barrier breaks."""
    market = Market(config.load(), config.DEFAULT_PATH, str(tmp_path))
    monkeypatch.setattr(Market, "traders", lambda self: {n: URIS[n] for n in (3, 1, 2)})
    world["together"] = threading.Barrier(2, timeout=10)
    world["refuses"].add(URIS[3])
    return market


def test_trader_stats_asks_every_trader_at_once_in_order_and_leaves_out_the_silent(traders):
    stats = traders.trader_stats()
    assert list(stats) == [1, 2]
    assert stats == {1: {"uri": URIS[1]}, 2: {"uri": URIS[2]}}


def test_trader_stats_raises_a_traders_error_other_than_unavailable(traders, monkeypatch):
    def refuse_with_a_reason(self):
        answer = self.status()
        if self.uri == URIS[2]:
            raise InvalidRequest("stats: not now")
        return answer
    monkeypatch.setattr(FakePeer, "stats", refuse_with_a_reason)
    with pytest.raises(InvalidRequest, match="not now"):
        traders.trader_stats()


def test_ask_peers_names_a_silent_one_by_its_label(world):
    world["refuses"].add(URIS[3])
    world["together"] = threading.Barrier(2, timeout=10)
    answers = rpc.ask_peers(URIS, 0.2, lambda p: p.stats(), label="trader")
    assert isinstance(answers[3], Unavailable) and "trader 3" in str(answers[3])
