"""rpc.tell_peers, a survivor's and a replica's broadcast, with fake peer proxies: a hung
peer delays no other, and each peer's outcome comes back in order. No sockets."""

from __future__ import annotations

import threading

import Pyro5.errors
import pytest

from pyromarket import rpc
from pyromarket.errors import Unavailable

URIS = {1: "PYRO:market.peer@127.0.0.1:9201", 2: "PYRO:market.peer@127.0.0.1:9202",
        3: "PYRO:market.peer@127.0.0.1:9203"}


class FakePeer:
    """A peer proxy: `trader_down` records the news, hangs while `hang` is clear if
    `hangs`, and fails as a refused connection if `refuses`."""

    def __init__(self, uri: str, world: dict):
        self.uri, self.world = uri, world
        self.timeout_s = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def trader_down(self, n, by, live):
        w = self.world
        if self.uri in w["refuses"]:
            raise Pyro5.errors.CommunicationError("cannot connect: Connection refused")
        with w["lock"]:
            w["told"].append(self.uri)
            w["told_changed"].notify_all()
        if self.uri in w["hangs"]:
            assert w["hang"].wait(30), "the test never released the hung peer"


@pytest.fixture
def world(monkeypatch):
    lock = threading.Lock()
    w = {"told": [], "hangs": set(), "refuses": set(), "hang": threading.Event(),
         "lock": lock, "told_changed": threading.Condition(lock)}

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
