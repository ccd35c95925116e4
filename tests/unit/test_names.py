"""Living with the name server going away: rpc.nameserver's deadline, rpc.Resolver's last
known address, rpc.Registration's renewal, and a ProxyPool that resolves per connection.
Only the first test opens a socket (a listener that never answers, on 127.0.0.1); the
rest use a fake name server."""

from __future__ import annotations

import socket
import time

import Pyro5.errors
import pytest

from pyromarket import rpc
from pyromarket.errors import Unavailable

WAREHOUSE = "PYRO:market.warehouse@127.0.0.1:9"


def test_locating_a_name_server_that_accepts_but_never_answers_gives_up_in_time():
    """Pyro5's locate_ns binds with COMMTIMEOUT, 0 in market processes: it waited forever
    on a stopped name server (the kernel still accepts its connections)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="name server 127.0.0.1"):
            rpc.nameserver("127.0.0.1", silent.getsockname()[1], timeout_s=0.3)
        assert time.monotonic() - started < 10      # a deadline, not a speed claim


class FakeNameServer:
    """The three name-server calls the market makes; `down` makes every call fail."""

    def __init__(self):
        self.names: dict[str, str] = {}
        self.down = False
        self.connects = 0

    def connect(self, host, port, timeout_s=2.0):
        if self.down:
            raise Unavailable(f"name server {host}:{port}: ConnectionRefusedError")
        self.connects += 1
        return self

    def _check(self):
        if self.down:
            raise Pyro5.errors.ConnectionClosedError("receiving: not enough data")

    def list(self, prefix=""):
        self._check()
        return {n: u for n, u in self.names.items() if n.startswith(prefix)}

    def register(self, name, uri, safe=False):
        self._check()
        if safe and name in self.names:
            raise Pyro5.errors.NamingError(f"name already registered: {name}")
        self.names[name] = str(uri)

    def remove(self, name):
        self._check()
        self.names.pop(name, None)

    def lookup(self, name):
        self._check()
        if name not in self.names:
            raise Pyro5.errors.NamingError(f"unknown name: {name}")
        return self.names[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _pyroClaimOwnership(self):
        pass

    def _pyroRelease(self):
        pass


@pytest.fixture
def ns(monkeypatch):
    fake = FakeNameServer()
    monkeypatch.setattr(rpc, "nameserver", fake.connect)
    return fake


def test_a_resolver_keeps_the_last_address_while_the_name_server_is_away(ns):
    resolve = rpc.Resolver("127.0.0.1", 9090, "market.warehouse")
    with pytest.raises(Unavailable, match="not registered"):
        resolve()                                   # never found: nothing to fall back on
    ns.names["market.warehouse"] = WAREHOUSE
    assert resolve() == WAREHOUSE
    ns.down = True
    assert resolve() == WAREHOUSE                   # down: the last address
    ns.down, ns.names = False, {}
    assert resolve() == WAREHOUSE                   # restarted, not yet told: the same
    ns.names["market.warehouse"] = "PYRO:market.warehouse@127.0.0.1:10"
    assert resolve() == "PYRO:market.warehouse@127.0.0.1:10"     # moved: follows the name


def test_renewing_binds_a_lost_name_again_and_leaves_a_bound_one_alone(ns):
    name = rpc.Registration("127.0.0.1", 9090, "market.trader.1", "PYRO:t@127.0.0.1:7")
    ns.names["market.trader.1"] = "PYRO:t@127.0.0.1:7"
    assert name.renew() is False and ns.names["market.trader.1"] == "PYRO:t@127.0.0.1:7"
    ns.names.clear()                                # a restarted name server knows nothing
    assert name.renew() is True
    assert ns.names == {"market.trader.1": "PYRO:t@127.0.0.1:7"}


def test_renewing_asks_before_it_binds_a_lost_name_and_only_then(ns):
    """A trader's name may be gone because a survivor declared it dead: the trader asks
    (before_bind) and binds it again only if it still serves."""
    name = rpc.Registration("127.0.0.1", 9090, "market.trader.1", "PYRO:t@127.0.0.1:7")
    asked = []

    def refuse() -> bool:
        asked.append(1)
        return False

    assert name.renew(before_bind=refuse) is False and ns.names == {}
    ns.names["market.trader.1"] = "PYRO:t@127.0.0.1:7"
    assert name.renew(before_bind=refuse) is False
    assert len(asked) == 1                          # a bound name asks nothing
    ns.names.clear()
    assert name.renew(before_bind=lambda: True) is True
    assert ns.names == {"market.trader.1": "PYRO:t@127.0.0.1:7"}


def test_renewing_never_takes_a_name_from_a_successor(ns):
    name = rpc.Registration("127.0.0.1", 9090, "market.trader.1", "PYRO:t@127.0.0.1:7")
    ns.names["market.trader.1"] = "PYRO:replacement@127.0.0.1:8"
    assert name.renew() is False
    assert ns.names["market.trader.1"] == "PYRO:replacement@127.0.0.1:8"
    name.withdraw()                                 # nor removes it on the way out
    assert ns.names["market.trader.1"] == "PYRO:replacement@127.0.0.1:8"


def test_a_name_server_that_is_away_is_reported_and_reconnected_to_later(ns):
    name = rpc.Registration("127.0.0.1", 9090, "market.warehouse", WAREHOUSE)
    assert name.renew() is True and not name.down
    ns.down = True
    with pytest.raises(Unavailable):
        name.renew()
    assert name.down
    ns.down, ns.names = False, {}
    connects = ns.connects
    assert name.renew() is True and not name.down
    assert ns.connects == connects + 1              # a fresh connection, not the dead one


def test_withdrawing_removes_only_this_binding_and_survives_an_absent_name_server(ns):
    name = rpc.Registration("127.0.0.1", 9090, "market.trader.2", "PYRO:t@127.0.0.1:7")
    ns.names["market.trader.2"] = "PYRO:t@127.0.0.1:7"
    name.withdraw()
    assert "market.trader.2" not in ns.names
    ns.down = True
    name.withdraw()                                 # no error: nothing it can do


def test_a_pool_given_a_resolver_resolves_per_connection_and_frees_the_slot_if_it_fails():
    calls = []

    def resolve():
        calls.append(1)
        if len(calls) == 1:
            raise Unavailable("name server 127.0.0.1:9090: ConnectionRefusedError")
        return WAREHOUSE

    pool = rpc.ProxyPool(resolve, timeout_s=0.5, size=1)
    with pytest.raises(Unavailable, match="ConnectionRefusedError"):
        with pool.borrowed():
            pass
    assert pool.connections() == 0                  # the failed attempt holds no slot
    with pool.borrowed() as p:
        assert str(p._pyroUri) == WAREHOUSE
    assert len(calls) == 2
