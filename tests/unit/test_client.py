"""A peer's trading loop and its trader directory, with a fake name server: a broadcast
that a trader failed or was replaced ends a call in flight to it, and the request is
retried with the same id. Fake traders, except in the last test, whose trader is a
loopback socket that accepts and never answers (a hung trader's kernel does that)."""

from __future__ import annotations

import contextlib
import threading

import Pyro5.errors
import pytest

from pyromarket import client, config, rpc
from tests.helpers import Log, config_dict, silent_server

TRADERS = {1: "PYRO:market.trader@127.0.0.1:9001", 2: "PYRO:market.trader@127.0.0.1:9002"}


class FakeTrader:
    """A trader proxy; `during_call` runs inside buy(), as a broadcast arriving mid-call
    would, and a dropped call then fails as an interrupted socket does."""

    def __init__(self, uri: str, interrupted: list):
        self.uri, self.interrupted = uri, interrupted
        self.during_call = None
        self.calls: list[str] = []

    def buy(self, product, qty, rid, origin, attempt):
        self.calls.append(rid)
        if self.during_call is not None:
            self.during_call()
        if self in self.interrupted:
            raise Pyro5.errors.ConnectionClosedError("receiving: not enough data")
        return {"outcome": "shipped", "request_id": rid}

    def _pyroRelease(self):
        pass

    def _pyroClaimOwnership(self):
        pass


class FirstTrader:
    """The directory's random choice, made predictable: the lowest trader listed."""

    @staticmethod
    def choice(seq):
        return seq[0]


@pytest.fixture
def world(monkeypatch):
    """(Trading of buyer 3, {uri: FakeTrader}, interrupted proxies)."""
    interrupted: list = []
    traders: dict[str, FakeTrader] = {}

    def proxy(uri, timeout_s):
        return traders.setdefault(uri, FakeTrader(uri, interrupted))

    monkeypatch.setattr(rpc, "nameserver", lambda host, port: contextlib.nullcontext())
    monkeypatch.setattr(rpc, "list_traders", lambda ns: dict(TRADERS))
    monkeypatch.setattr(rpc, "proxy", proxy)
    monkeypatch.setattr(rpc, "interrupt", interrupted.append)
    cfg = config.from_dict(config_dict(["buyer", "seller", "buyer"], 2))
    trading = client.Trading(cfg.peers[2], cfg, Log(), threading.Event(), rng=FirstTrader())
    return trading, traders, interrupted


def test_news_that_the_trader_called_failed_ends_the_call_and_the_id_is_retried(world):
    trading, traders, interrupted = world
    trading.directory.pick()                      # reads the names, makes both proxies
    first, second = traders[TRADERS[1]], traders[TRADERS[2]]
    first.during_call = second.during_call = lambda: trading.directory.note_down(1)
    reply = trading.request("buy", "salt", 1)
    assert interrupted == [first]                 # only the call to trader 1 was ended
    assert reply["outcome"] == "shipped" and second.calls == first.calls  # same id
    assert trading.stats["dropped_calls"] == 1 and trading.stats["retries"] == 1
    assert any("dropped its call to trader 1" in line for line in trading.log)


def test_news_about_another_trader_or_after_the_call_ends_nothing(world):
    trading, traders, interrupted = world
    n, proxy = trading.directory.pick()
    proxy.during_call = lambda: trading.directory.note_down(2)
    assert trading._attempt("buy", "salt", 1, "p3-a", 1)["outcome"] == "shipped"
    trading.directory.note_down(n)                # no call in flight now
    trading.directory.note_up(n)
    assert interrupted == [] and trading.stats["dropped_calls"] == 0


def test_news_that_the_trader_called_was_replaced_ends_the_call(world):
    trading, traders, interrupted = world
    n, proxy = trading.directory.pick()
    proxy.during_call = lambda: trading.directory.note_up(n)
    assert trading._attempt("buy", "salt", 1, "p3-b", 1) is None      # to be retried
    assert interrupted == [proxy] and trading.stats["dropped_calls"] == 1
    assert trading.directory.pick()[0] == n       # trusted again: it was replaced


def test_news_ends_a_first_call_still_waiting_for_a_hung_traders_handshake(monkeypatch):
    """Pyro5 gives the proxy its connection only once the handshake is answered, so this
    call has none to shut down; the news must end it all the same."""
    with silent_server() as (uri, hung):
        monkeypatch.setattr(rpc, "nameserver", lambda host, port: contextlib.nullcontext())
        monkeypatch.setattr(rpc, "list_traders", lambda ns: {1: uri})
        cfg = config.from_dict(config_dict(["buyer", "seller", "buyer"], 1,
                                           rpc={"call_timeout_s": 60.0}))
        trading = client.Trading(cfg.peers[2], cfg, Log(), threading.Event(), rng=FirstTrader())
        outcome = []
        caller = threading.Thread(target=lambda: outcome.append(
            trading._attempt("buy", "salt", 1, "p3-c", 1)), daemon=True)
        caller.start()
        conn, _ = hung.accept()                       # the first call is connecting
        try:
            trading.directory.note_down(1)
            caller.join(10.0)
            assert not caller.is_alive(), "the call waited out its 60-s deadline"
            assert outcome == [None] and trading.stats["dropped_calls"] == 1
            assert any("dropped its call to trader 1" in line for line in trading.log)
        finally:
            conn.close()
