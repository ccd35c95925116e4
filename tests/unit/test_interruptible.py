"""rpc.Interruptible: another thread ends a call at once, whatever stage it is at. The
servers are on loopback in this process: a silent one (a listening socket that accepts
and never answers, as a paused process's kernel does) and a Pyro5 daemon whose method
hangs. Every call's own deadline is a minute, so a call that ends in seconds was ended."""

from __future__ import annotations

import threading
import types

import Pyro5.api
import pytest

from pyromarket import rpc
from pyromarket.errors import Unavailable
from tests.helpers import silent_server

DEADLINE_S = 60.0


class Caller(threading.Thread):
    """Calls `method` through `proxy` inside `call` (an Interruptible) and keeps what was
    raised."""

    def __init__(self, proxy, call: rpc.Interruptible, method: str = "buy"):
        super().__init__(daemon=True)
        self.proxy, self.call, self.method = proxy, call, method
        self.error: BaseException | None = None

    def run(self) -> None:
        self.proxy._pyroClaimOwnership()
        try:
            with self.call, rpc.translated("the server"):
                getattr(self.proxy, self.method)()
        except BaseException as exc:       # noqa: BLE001 - kept for the test to read
            self.error = exc


@pytest.fixture
def silent():
    """(URI, listening socket) of a server that accepts connections and never answers."""
    with silent_server() as server:
        yield server


def test_a_call_still_connecting_ends_at_once_when_another_thread_ends_it(silent):
    uri, lst = silent
    proxy = rpc.proxy(uri, DEADLINE_S)
    caller = Caller(proxy, rpc.Interruptible(proxy))
    caller.start()
    conn, _ = lst.accept()          # the proxy has connected; its handshake goes unanswered
    try:
        assert proxy._pyroConnection is None        # beyond rpc.interrupt's reach
        caller.call.end()
        caller.join(10.0)
        assert not caller.is_alive(), "the call waited for its deadline"
        assert isinstance(caller.error, Unavailable)
        assert "timeout" not in str(caller.error)
    finally:
        conn.close()


def test_a_call_ended_before_it_connects_fails_as_soon_as_it_does(silent):
    uri, _ = silent
    proxy = rpc.proxy(uri, DEADLINE_S)
    call = rpc.Interruptible(proxy)
    with pytest.raises(Unavailable):
        with call, rpc.translated("the server"):
            call.end()                # news came before the call went out
            proxy.buy()
    assert call.ended


class Hanging:
    """A remote object whose one method waits until released."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    @Pyro5.api.expose
    def hang(self) -> None:
        self.entered.set()
        self.release.wait(DEADLINE_S)


def test_a_connected_call_to_a_hung_method_ends_at_once():
    rpc.configure()
    obj = Hanging()
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(obj)
    server = threading.Thread(target=daemon.requestLoop, daemon=True)
    server.start()
    try:
        proxy = rpc.proxy(str(uri), DEADLINE_S)
        caller = Caller(proxy, rpc.Interruptible(proxy), method="hang")
        caller.start()
        assert obj.entered.wait(10.0)
        caller.call.end()
        caller.join(10.0)
        assert not caller.is_alive() and isinstance(caller.error, Unavailable)
    finally:
        obj.release.set()
        daemon.shutdown()
        server.join(10.0)
        daemon.close()


class _Socket:
    def __init__(self):
        self.shut = False

    def shutdown(self, how):
        self.shut = True


def test_ending_after_the_block_has_exited_touches_nothing():
    """A later call through the same proxy must not be cut by news about an earlier one."""
    sock = _Socket()
    proxy = types.SimpleNamespace(_pyroConnection=types.SimpleNamespace(sock=sock))
    call = rpc.Interruptible(proxy)
    with call:
        pass
    call.end()
    assert not sock.shut and not call.ended
    with call:
        call.end()
    assert sock.shut and call.ended


def test_a_nested_block_hands_the_thread_back_to_the_outer_one():
    outer = rpc.Interruptible(types.SimpleNamespace())
    inner = rpc.Interruptible(types.SimpleNamespace())
    with outer:
        with inner:
            assert rpc._connecting.call is inner
        assert rpc._connecting.call is outer
    assert rpc._connecting.call is None
