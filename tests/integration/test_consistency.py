"""Atomicity, idempotency, durability and bad input, against real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import Pyro5
import Pyro5.errors
import pytest

from pyromarket import rpc
from pyromarket.errors import (ConflictingRequest, InvalidRequest, MarketError, Unavailable,
                               UnknownProduct)
from pyromarket.orders import new_request_id
from pyromarket.process import wait_until

QUIET = ["buyer", "seller"]          # with N_t = 2 every peer is a trader: a quiet market


@pytest.mark.parametrize("mode", ["sync", "cached"])
def test_eight_client_processes_race_for_100_units_through_both_traders(start_market, mode):
    market = start_market(QUIET, 2, warehouse={"initial_stock": {"salt": 100, "fish": 0, "boar": 0}},
                          traders={"mode": mode})
    port = market.cfg.nameserver.port
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.buy_client",
                               "--ns-port", str(port), "--product", "salt", "--tag", f"c{i}"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
             for i in range(8)]
    try:
        outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
    assert all(p.returncode == 0 for p in procs)
    shipped_ids = [rid for out in outputs for rid in out["shipped"]]
    assert len(shipped_ids) == 100 and len(set(shipped_ids)) == 100
    assert sum(out["via"].get("1", 0) for out in outputs) > 0      # both traders carried load
    assert sum(out["via"].get("2", 0) for out in outputs) > 0
    with market.warehouse() as w:
        assert w.lookup("salt")["stock"] == 0
    rows = [r for r in market.ledger_rows() if r["product"] == "salt"]
    assert min(r["stock_after"] for r in rows) == 0
    assert sum(r["qty"] for r in rows if r["outcome"] == "shipped") == 100


def test_replayed_request_ships_nothing_twice_even_through_another_trader(start_market):
    market = start_market(QUIET, 2)
    with market.trader(1) as t1, market.trader(2) as t2, market.warehouse() as w:
        before = w.lookup("fish")["stock"]
        first = t1.buy("fish", 2, "replay-1", "buyer 9")
        again = t2.buy("fish", 2, "replay-1", "buyer 9")
        assert first["outcome"] == again["outcome"] == "shipped"
        assert (first["replayed"], again["replayed"]) == (False, True)
        assert w.lookup("fish")["stock"] == before - 2
        with pytest.raises(ConflictingRequest, match="replay-1"):
            t1.buy("fish", 3, "replay-1")
        with pytest.raises(ConflictingRequest):
            t2.sell("fish", 2, "replay-1")
        assert w.lookup("fish")["stock"] == before - 2
        assert w.stats()["replayed"] == 1
        assert t1.stats()["refused"] == t2.stats()["refused"] == 1   # counted where refused
    for n, kind in ((1, "buy"), (2, "sell")):       # and logged: each refusal is an event
        log = Path(market.run_dir) / f"trader-{n}.txt"
        wait_until(lambda: f"the warehouse refused its {kind} request replay-1" in
                   log.read_text(encoding="utf-8"), 10, f"trader {n} to log the refusal")


BAD_CALLS = [
    ("buy", ("salt", -1)), ("buy", ("salt", 0)), ("buy", ("salt", 10**9)), ("buy", ("salt", 1.5)),
    ("buy", ("salt", "2")), ("buy", ("salt", None)), ("buy", ("salt", True)),
    ("sell", ("salt", -5)), ("sell", ("salt", 2**70)), ("buy", (5, 1)), ("buy", (["salt"], 1)),
    ("buy", ("salt", 1, 12345)), ("buy", ("salt", 1, "")), ("buy", ("salt", 1, None, 42)),
    ("buy", ()), ("buy", ("salt",)), ("sell", ("salt", 1, "r", "me", 1, "extra")), ("lookup", (7,)),
    ("buy", ("salt", 1, None, None, 0)), ("sell", ("salt", 1, None, None, "2")),
]


def test_bad_remote_input_gets_a_named_error_and_changes_nothing(start_market):
    market = start_market(QUIET, 2)
    with market.trader(1) as t, market.warehouse() as w:
        before = w.inventory()
        for method, args in BAD_CALLS:
            with pytest.raises(InvalidRequest):
                getattr(t, method)(*args)
        with pytest.raises(UnknownProduct, match="gold"):
            t.buy("gold", 1)
        with pytest.raises(UnknownProduct):
            t.lookup("gold")
        for method, args in BAD_CALLS[:11]:
            with pytest.raises(InvalidRequest):
                getattr(w, method)(*args)
        replies = w.apply([("buy", "salt", -1, "x", "t", 0), "not a row",
                           ("steal", "salt", 1, "y", "t", 0), ("buy", "salt", 1),
                           ("buy", "gold", 1, "z", "t", 0)])
        assert [r[:2] for r in replies] == [["error", "InvalidRequest"]] * 4 + [
            ["error", "UnknownProduct"]]
        with pytest.raises(InvalidRequest):
            w.apply("not a list")
        for bad in ("salt", {"salt": "1"}, {"salt": 1.5}, [("salt", 1)]):
            with pytest.raises(InvalidRequest):
                w.revalidate(bad)
        with pytest.raises(UnknownProduct):
            w.revalidate({"gold": 1})
        for args in ((-1, 5), ("0", 5), (0, 2.5), (0, -1), (True, 5), (0, 0)):
            with pytest.raises(InvalidRequest, match="since must be a non-negative int and "
                                                     "limit a positive int"):
                t.denials(*args)
            with pytest.raises(InvalidRequest, match="since_seq must be a non-negative int "
                                                     "and limit a positive int"):
                w.ledger(*args)
        for args in ((0, 1), (1, "2"), (1, 2, -1), (1, 2, 2**40), (1, 2, False),
                     (1, 2, 0, 1.5), (1, 2, 0, True), (1, 2, 0, -3)):
            with pytest.raises(InvalidRequest):
                w.fence(*args)
        replies = w.apply([("buy", "salt", 1, "e", "t", 10**30), ("buy", "salt", 1, "f", "t\n", 0)])
        assert [r[:2] for r in replies] == [["error", "InvalidRequest"]] * 2
        with pytest.raises(UnknownProduct) as huge:
            t.buy("x" * 100_000, 1)
        assert len(str(huge.value)) < 300
        assert w.inventory() == before
        assert w.ledger(0, 100) == []
        assert t.buy("salt", 1)["outcome"] == "shipped"   # the connection still works
    with contextlib.closing(sqlite3.connect(market.cfg.warehouse.db_path)) as db:
        assert db.execute("SELECT COUNT(*) FROM fenced").fetchone()[0] == 0   # no bad fence
    with market.peer(market.cfg.peers[0].id) as p:
        known = p.status()["traders"]
        for args in ((0, 1, [1]), (1, True, [1]), (1, 2, "1"), (1, 2, [10**40]),
                     (2**31, 1, []), (1, 2, [1] * 4097)):
            with pytest.raises(InvalidRequest):
                p.trader_down(*args)
        for args in ((0, "PYRO:x@127.0.0.1:1"), (1.5, "u"), (10**40, "u"), (1, "a\nb"),
                     (1, 5)):
            with pytest.raises(InvalidRequest):
                p.trader_up(*args)
        assert p.status()["traders"] == known
        assert p.trader_up(1, "PYRO:market.trader@127.0.0.1:1") is True    # a good one
    log = Path(market.run_dir) / f"peer-{market.cfg.peers[0].id}.txt"
    wait_until(lambda: log.exists() and "was told" in log.read_text(), 10, "the good call's line")
    assert log.read_text().count("was told") == 1    # and none of the refused calls had one


def test_a_message_over_the_size_limit_is_refused_from_its_header(start_market, monkeypatch):
    """Pyro5 reads messages of up to 1 GiB. One 300 MB call kept a trader busy for 16 s,
    so the other trader declared it dead. Every market server now refuses a message larger
    than rpc.MAX_MESSAGE_BYTES before reading it, or one that would inflate past it, and a
    market client never sends one."""
    market = start_market(QUIET, 2)
    too_big = "x" * rpc.MAX_MESSAGE_BYTES
    with market.trader(1) as t, market.warehouse() as w:
        before = w.inventory()
        for proxy in (t, w):
            with pytest.raises(Pyro5.errors.ProtocolError, match="message too large"):
                proxy.lookup(too_big)                     # this process's own limit
        monkeypatch.setattr(Pyro5.config, "MAX_MESSAGE_SIZE", 2**30)   # Pyro5's default
        for proxy in (t, w):
            with pytest.raises(Pyro5.errors.CommunicationError):
                proxy.lookup(too_big)                     # the server's limit
            with pytest.raises(UnknownProduct):
                proxy.lookup(too_big[:rpc.MAX_MESSAGE_BYTES - 1000])   # just under: served
        monkeypatch.setattr(Pyro5.config, "COMPRESSION", True)   # zlib: about 1000 to 1
        for proxy in (t, w):
            with pytest.raises(Pyro5.errors.CommunicationError):
                proxy.lookup(" " * 2 * rpc.MAX_MESSAGE_BYTES)   # sent as a few KB
            with pytest.raises(UnknownProduct):
                proxy.lookup("x" * 5000)                  # compressed, and within the limit
        assert t.buy("salt", 1)["outcome"] == "shipped"   # a new connection is served
        assert w.inventory()["salt"]["stock"] == before["salt"]["stock"] - 1


def test_a_server_decodes_json_and_short_serpent_and_refuses_marshal(start_market):
    """Pyro5 decodes a message with whatever serializer its sender names. Marshal trusts
    the lengths it reads (six bytes cost 77 s and 16 GB), and serpent parses slowly, so a
    market server (the launcher's name server too) refuses marshal and serpent over
    rpc.SERPENT_MAX_BYTES, with an error the client can read, and serves the same
    client's next call."""
    market = start_market(QUIET, 2)
    ns = f"PYRO:Pyro.NameServer@127.0.0.1:{market.cfg.nameserver.port}"   # python -m nameserver
    with market.trader(1) as t, market.warehouse() as w, rpc.proxy(ns, 5.0) as n:
        assert rpc.WAREHOUSE_NAME in n.list()
        n._pyroSerializer = "marshal"
        with pytest.raises(Pyro5.errors.CommunicationError, match="does not accept the marshal"):
            n.list()
        for proxy in (t, w):
            proxy._pyroSerializer = "marshal"
            with pytest.raises(Pyro5.errors.CommunicationError, match="does not accept the marshal"):
                proxy.lookup("salt")
            proxy._pyroSerializer = "serpent"
            with pytest.raises(Pyro5.errors.SerializeError, match="serpent message may be at most"):
                proxy.lookup("x" * rpc.SERPENT_MAX_BYTES)
            with pytest.raises(UnknownProduct):
                proxy.lookup("x" * (rpc.SERPENT_MAX_BYTES - 1000))
            assert proxy.lookup("salt")["product"] == "salt"
        assert t.buy("salt", 1)["outcome"] == "shipped"


def test_a_connection_that_never_finishes_its_handshake_is_dropped(start_market):
    """Pyro5 waits forever for a new connection's handshake (COMMTIMEOUT is 0 on the
    servers), holding a worker; once every worker was taken, its accept loop waited on the
    next silent connection itself and accepted nobody (measured on a trader: a fresh call
    timed out until the silent sockets closed). Every market server, and the launcher's
    name server, drops such a connection within rpc.HANDSHAKE_TIMEOUT_S, one that sends a
    byte now and then too, and then serves a new client."""
    market = start_market(QUIET, 2)
    ns, wh = market.cfg.nameserver, market.cfg.warehouse
    trader_uri = market.traders()[1]
    ns_uri = f"PYRO:Pyro.NameServer@{ns.host}:{ns.port}"
    servers = {  # what: (host:port, a new client's call)
        "trader 1": (rpc.location(trader_uri), lambda: _call(trader_uri, "lookup", "salt")),
        "the warehouse": (f"{wh.host}:{wh.port}", lambda: _call(
            f"PYRO:{rpc.WAREHOUSE_NAME}@{wh.host}:{wh.port}", "lookup", "salt")),
        "the name server": (f"{ns.host}:{ns.port}", lambda: _call(ns_uri, "list")),
    }
    for what, (address, fresh_call) in servers.items():
        host, port = address.rsplit(":", 1)
        silent = [socket.create_connection((host, int(port)), timeout=5)
                  for _ in range(market.cfg.rpc.threadpool_size + 2)]   # more than its workers
        dribbler = socket.create_connection((host, int(port)), timeout=5)
        header = b"PYRO\x05\x02" + bytes(34)      # a valid start, then a byte every 0.2 s
        sent = 0
        try:
            for s in (*silent, dribbler):
                s.setblocking(False)

            def dropped() -> bool:
                nonlocal sent
                if _open(dribbler):
                    with contextlib.suppress(OSError):   # it may close in between
                        dribbler.send(header[sent:sent + 1])
                        sent += 1
                    time.sleep(0.15)              # with wait_until's 0.05 s: a byte per 0.2 s
                return not any(_open(s) for s in (*silent, dribbler))
            wait_until(dropped, 30, f"{what} to drop connections that never finish a handshake")
            assert sent < len(header), f"{what} waited for the dribbler's whole header"
        finally:
            for s in (*silent, dribbler):
                s.close()
        assert fresh_call(), f"{what} did not serve a new client"
    with market.trader(1) as t:
        assert t.buy("salt", 1)["outcome"] == "shipped"


def _call(uri: str, method: str, *args):
    with rpc.proxy(uri, 5.0) as p:
        return getattr(p, method)(*args)


def _open(sock: socket.socket) -> bool:
    """Whether the other end still holds a non-blocking socket open (reads what it sent)."""
    try:
        return sock.recv(1024) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_only_the_remote_surface_is_callable(start_market):
    """The objects' own helpers (Warehouse.close stops its commits, Trader.retire steps
    down for good) were callable by anyone who could reach the port."""
    market = start_market(QUIET, 2)
    with market.trader(1) as t, market.warehouse() as w:
        for proxy, name, args in ((w, "close", ()), (t, "retire", ("told to",)),
                                  (t, "close", ()), (w, "_commit", ([],))):
            with pytest.raises(AttributeError, match="no exposed attribute or method"):
                getattr(proxy, name)(*args)
        assert t.buy("salt", 1)["outcome"] == "shipped"   # neither stopped nor stepped down
        assert w.stats()["orders"] == 1


def test_text_no_log_can_hold_is_refused_and_the_logs_go_on(start_market):
    """Serpent, a REPL user's default, can carry a lone surrogate, which no UTF-8 log,
    ledger or JSON batch can hold; a newline would forge a log line."""
    market = start_market(QUIET, 2)
    ns = market.cfg.nameserver
    with rpc.proxy(f"PYRONAME:market.trader.1@{ns.host}:{ns.port}", 5) as t, \
            market.warehouse() as w:
        t._pyroSerializer = "serpent"
        before = w.inventory()
        for args in (("salt", 1, "\ud800"), ("salt", 1, "a\nb"), ("salt", 1, None, "\ud800"),
                     ("salt", 1, None, "buyer 1\n24.11.2026 00:00:00.00 forged")):
            with pytest.raises(InvalidRequest, match="printable"):
                t.buy(*args)
        with pytest.raises(InvalidRequest, match="attempt"):
            t.buy("salt", 1, None, None, 0)
        stats = t.stats()                               # each refusal is counted, whatever
        assert (stats["requests"], stats["refused"]) == (5, 5)      # argument was bad
        assert w.inventory() == before
        assert t.buy("salt", 1, "after-the-bad-ones", "buyer 7")["outcome"] == "shipped"
    log = Path(market.run_dir) / "trader-1.txt"
    wait_until(lambda: "buyer 7" in log.read_text(encoding="utf-8"), 10,
               "trader 1's log to record the buy after the refused ones")
    assert not any(line.startswith("24.11.2026 00:00:00.00")
                   for line in log.read_text(encoding="utf-8").splitlines())
    with market.peer(1) as peer:
        for bad in ({"type": "election"}, "hello", {"type": "coordinator", "initiator": 1,
                                                    "traders": ["x"], "direct": False}):
            with pytest.raises(InvalidRequest):
                peer.election_message(bad)
        assert peer.status()["decided"] is True           # its election thread is unharmed


@pytest.mark.parametrize("mode", ["sync", "cached"])
def test_quiet_market_is_driven_from_a_repl_style_session(start_market, mode):
    market = start_market(QUIET, 2, traders={"mode": mode})
    ns = market.cfg.nameserver
    with rpc.proxy(f"PYRONAME:market.trader.1@{ns.host}:{ns.port}", 5) as trader, \
            rpc.proxy(f"PYRONAME:market.warehouse@{ns.host}:{ns.port}", 5) as warehouse:
        looked = trader.lookup("boar")
        assert (looked["stock"], looked["version"]) == (10, 0)
        assert trader.sell("boar", 5)["outcome"] == "stocked"
        reply = trader.buy("boar", 15)
        assert (reply["outcome"], reply["stock"], reply["trader"]) == ("shipped", 0, 1)
        assert trader.buy("boar", 1)["outcome"] == "unavailable"
        assert warehouse.inventory()["boar"] == {"stock": 0, "version": 2}
        stats = trader.stats()
        assert stats["mode"] == mode
        assert (stats["requests"], stats["buys"], stats["sells"], stats["shipped"],
                stats["unavailable"]) == (4 - 1, 2, 1, 1, 1)
        assert stats["local_denials"] == (1 if mode == "cached" else 0)
        assert warehouse.stats()["shipped_units"] == 15
        assert all(e["ok"] for e in warehouse.audit().values())


def test_a_repl_on_pyro5_defaults_speaks_serpent_and_gets_named_errors(start_market):
    """The market's processes speak json; a REPL user's proxy, on Pyro5's defaults, serpent."""
    import Pyro5.api
    market = start_market(QUIET, 2)
    ns = market.cfg.nameserver
    with Pyro5.api.Proxy(f"PYRONAME:market.trader.2@{ns.host}:{ns.port}") as trader:
        trader._pyroSerializer = "serpent"
        trader._pyroTimeout = 5
        assert trader.sell("salt", 2)["outcome"] == "stocked"
        reply = trader.buy("salt", 1, "repl-serpent-1")
        assert (reply["outcome"], reply["request_id"]) == ("shipped", "repl-serpent-1")
        with pytest.raises(InvalidRequest, match="quantity"):
            trader.buy("salt", -1)
        with pytest.raises(UnknownProduct):
            trader.lookup("gold")
        assert trader.buy("salt", 1, "repl-serpent-1")["replayed"] is True


BARE_REPL = """
import sys
from Pyro5.api import Proxy
with Proxy(sys.argv[1]) as trader:
    trader._pyroTimeout = 5
    for args in (("salt", -2), ("gold", 1), ("salt", 2.5)):
        try:
            trader.buy(*args)
        except Exception as exc:
            print(type(exc).__name__, "|", exc, "|", exc.market_error)
    print("imported pyromarket:", "pyromarket" in sys.modules)
"""


def test_a_bare_pyro5_repl_reads_the_markets_errors(start_market):
    """A REPL that imported nothing but Pyro5 cannot rebuild the market's exception
    classes; it gets their built-in twins, with the market's name and the reason."""
    market = start_market(QUIET, 2)
    ns = market.cfg.nameserver
    uri = f"PYRONAME:market.trader.1@{ns.host}:{ns.port}"
    out = subprocess.run([sys.executable, "-c", BARE_REPL, uri], capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    assert out == [
        "ValueError | InvalidRequest: quantity must be between 1 and 100, got -2 | InvalidRequest",
        "ValueError | UnknownProduct: unknown product 'gold'; the market trades "
        "['boar', 'fish', 'salt'] | UnknownProduct",
        "ValueError | InvalidRequest: quantity must be an int, got float 2.5 | InvalidRequest",
        "imported pyromarket: False"]
    with market.warehouse() as warehouse:
        assert warehouse.inventory()["salt"]["version"] == 0      # nothing was applied


def test_the_repl_helpers_find_the_market_or_say_what_is_missing(start_market, tmp_path):
    from pyromarket import repl
    from tests.helpers import config_dict, free_ports, write_config
    market = start_market(QUIET, 2)
    with repl.trader(2, market.config_path, 5) as t, repl.warehouse(market.config_path, 5) as w:
        assert t.buy("salt", 1, "repl-helper-1")["outcome"] == "shipped"
        assert w.lookup("salt")["stock"] == t.lookup("salt")["stock"]
    assert sorted(repl.traders(market.config_path)) == [1, 2]
    with pytest.raises(Unavailable, match=r"market\.trader\.3 is not registered .*"
                                          r"market\.trader\.1"):
        repl.trader(3, market.config_path)
    nowhere = write_config(tmp_path / "nowhere.yaml",      # fresh ports: no name server there
                           config_dict(QUIET, 2, free_ports(4)))
    with pytest.raises(Unavailable, match="no name server answers .* is the market running"):
        repl.warehouse(nowhere)


def _sell_until(market, acked: list, stop: threading.Event, errors: list) -> None:
    """Sell 1 fish at a time through trader 1, each id retried until acknowledged."""
    try:
        trader = market.trader(1, timeout_s=10)
        while not stop.is_set():
            rid = new_request_id("dur")
            while True:
                try:
                    with rpc.translated("trader"):
                        reply = trader.sell("fish", 1, rid)
                    break
                except MarketError:            # Unavailable while the warehouse is down
                    stop.wait(0.05)
            assert reply["outcome"] == "stocked"
            acked.append(rid)
    except BaseException as exc:               # surfaced by the test, never swallowed
        errors.append(exc)


def test_warehouse_kill_9_and_restart_loses_no_committed_operation(start_market):
    market = start_market(QUIET, 2, rpc={"warehouse_timeout_s": 1.0})
    acked, errors, stop = [], [], threading.Event()
    worker = threading.Thread(target=_sell_until, args=(market, acked, stop, errors))
    worker.start()
    try:
        wait_until(lambda: len(acked) >= 50 or errors, 30, "50 acknowledged deposits")
        market.services["warehouse"].signal(signal.SIGKILL)
        market.services["warehouse"].wait(10)
        acked_before_kill = list(acked)
        market.start_warehouse()
        wait_until(lambda: len(acked) >= len(acked_before_kill) + 50 or errors, 30,
                   "50 more deposits after the restart")
    finally:
        stop.set()
        worker.join(30)
    assert not errors, errors
    with contextlib.closing(sqlite3.connect(market.cfg.warehouse.db_path)) as db:
        rows = db.execute("SELECT request_id, outcome FROM ledger WHERE product='fish'").fetchall()
        stock = db.execute("SELECT stock FROM inventory WHERE product='fish'").fetchone()[0]
    ids = [r[0] for r in rows]
    assert set(acked) <= set(ids), "an acknowledged deposit was lost"
    assert len(ids) == len(set(ids))
    assert stock == 10 + len(ids)              # seed 10; each ledger row stocked exactly 1
    assert set(ids) - set(acked) <= set()      # nothing applied that nobody asked for
