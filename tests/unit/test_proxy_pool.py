"""rpc.ProxyPool's lending rules, without a server: a Pyro5 proxy connects only at its
first call, so these never open a socket."""

from __future__ import annotations

import threading
import weakref

import pytest

from pyromarket import rpc
from pyromarket.errors import InvalidRequest, Unavailable

URI = "PYRO:nobody@127.0.0.1:9"


def test_a_returned_proxy_is_lent_again_and_no_more_than_size_are_made():
    pool = rpc.ProxyPool(URI, timeout_s=1.0, size=2)
    with pool.borrowed() as a, pool.borrowed() as b:
        assert a is not b
        assert pool.connections() == 2
    with pool.borrowed() as c:
        assert c is a or c is b              # (proxies to one URI compare equal)
    assert pool.connections() == 2


def test_a_borrower_finding_every_proxy_lent_waits_for_one():
    pool = rpc.ProxyPool(URI, timeout_s=5.0, size=1)
    got = []

    def borrower():
        with pool.borrowed() as p:
            got.append(p)

    with pool.borrowed() as first:
        t = threading.Thread(target=borrower)
        t.start()
        t.join(0.2)
        assert t.is_alive() and not got      # still waiting: the only proxy is lent
    t.join(5.0)
    assert len(got) == 1 and got[0] is first


def test_a_borrower_waits_no_longer_than_the_timeout():
    pool = rpc.ProxyPool(URI, timeout_s=0.1, size=1)
    with pool.borrowed():
        with pytest.raises(Unavailable, match="all 1 connections busy"):
            with pool.borrowed():
                pass


def test_a_proxy_whose_call_failed_in_transport_is_dropped_not_lent_again():
    pool = rpc.ProxyPool(URI, timeout_s=1.0, size=1)
    with pytest.raises(Unavailable):
        with pool.borrowed() as broken:
            raise Unavailable("the connection dropped")
    assert pool.connections() == 0
    with pool.borrowed() as fresh:
        assert fresh is not broken


def test_a_market_error_from_the_server_keeps_the_proxy():
    pool = rpc.ProxyPool(URI, timeout_s=1.0, size=1)
    with pytest.raises(InvalidRequest):
        with pool.borrowed() as p:
            raise InvalidRequest("qty must be positive")
    with pool.borrowed() as again:
        assert again is p


def test_after_close_nothing_is_lent_and_a_lent_proxy_is_closed_on_return():
    pool = rpc.ProxyPool(URI, timeout_s=1.0, size=2)
    with pool.borrowed():
        pool.close()
    assert pool.connections() == 0
    with pytest.raises(Unavailable, match="shutting down"):
        with pool.borrowed():
            pass


def test_a_thread_local_proxy_goes_when_its_thread_ends():
    """Pyro5's idle worker threads end; the proxy one made must not outlive it (it would
    hold a connection, and a worker of the server it points at, for good)."""
    proxies = rpc.ThreadLocalProxy(URI, timeout_s=1.0)
    refs = []
    t = threading.Thread(target=lambda: refs.append(weakref.ref(proxies.get())))
    t.start()
    t.join(5.0)
    assert refs and refs[0]() is None


def test_closing_thread_local_proxies_reaches_every_thread_s_proxy(monkeypatch):
    """Proxies to one URI compare equal; each thread's own must still be closed."""
    proxies = rpc.ThreadLocalProxy(URI, timeout_s=1.0)
    made, all_made, done = [], threading.Barrier(4, timeout=5.0), threading.Event()

    def hold():
        made.append(proxies.get())
        all_made.wait()
        done.wait(5.0)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    all_made.wait()
    closed = []
    monkeypatch.setattr(rpc, "release", closed.append)
    proxies.close()
    done.set()
    for t in threads:
        t.join(5.0)
    assert len(closed) == 3 and all(any(c is p for c in closed) for p in made)


def test_a_pool_needs_room_for_one():
    with pytest.raises(ValueError):
        rpc.ProxyPool(URI, timeout_s=1.0, size=0)
