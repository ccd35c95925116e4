"""Requests survive an unresponsive trader; connections stay bounded under churn; the
launcher stops cleanly on Ctrl-C and on a crash, its children stop when it is killed, and
it starts a killed name server again."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyromarket import config, rpc
from pyromarket.process import wait_until
from pyromarket.store import Store
from tests.integration.conftest import (assert_all_gone, signals_as_in_a_terminal, group_alive,
                                        hold_ctrl_c)
from tests.integration.test_failover import assert_consistent

ROLES = ["buyer", "buyer", "seller", "buyer", "seller"]
# buyers and sellers that keep every trader busy
BUSY = dict(buyers={"pace_s": 0.01, "max_qty": 2}, sellers={"goods_per_period": 2, "period_s": 0.2})


def _peer_stats(market) -> dict[int, dict]:
    """Stats of the buyers and sellers (never asks a trader, which may be hung)."""
    clients = {p.id for p in market.cfg.peers} - market.trader_peers
    return {pid: s.get("stats", {}) for pid, s in market.statuses(clients).items()}


def test_peers_retry_at_the_other_trader_with_the_same_id_when_one_hangs(start_market):
    market = start_market(ROLES, 2, rpc={"call_timeout_s": 2.0, "warehouse_timeout_s": 1.0},
                          **BUSY)
    hung = market.services[f"peer-{max(market.trader_peers)}"]     # hosts market.trader.2
    hung.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: sum(s.get("retries", 0) for s in _peer_stats(market).values()) >= 2,
                   30, "peers to notice the hung trader and retry")
        before = sum(s.get("requests", 0) for s in _peer_stats(market).values())
        wait_until(lambda: sum(s.get("requests", 0) for s in _peer_stats(market).values())
                   >= before + 20, 30, "trading to go on through the other trader")
    finally:
        hung.signal(signal.SIGCONT)
    market.stop_clients()
    with contextlib.closing(sqlite3.connect(market.cfg.warehouse.db_path)) as db:
        ids = [r[0] for r in db.execute("SELECT request_id FROM ledger")]
    assert len(ids) == len(set(ids)), "a retried request was applied twice"
    logs = "".join(p.read_text() for p in Path(market.run_dir).glob("peer-*.txt"))
    assert "retrying with the same request id" in logs
    assert "abandoned" not in logs


def test_peers_drop_their_calls_to_a_hung_trader_once_it_is_declared_dead(start_market):
    """Peers blocked in calls to a paused trader go on through the survivor as soon as
    its broadcast says the trader failed, long before their 30-s call deadline. (Each
    buyer has traded through that trader first, so these calls are connected; a call
    still connecting is ended the same way, see tests/unit/test_interruptible.py.)"""
    market = start_market(ROLES, 2, rpc={"call_timeout_s": 30.0, "warehouse_timeout_s": 1.0},
                          **BUSY)
    buyers = [p.id for p in market.cfg.peers
              if p.role == "buyer" and p.id not in market.trader_peers]
    run = Path(market.run_dir)
    wait_until(lambda: all("through trader 2" in (run / f"peer-{b}.txt").read_text()
                           for b in buyers), 15, "every buyer to trade through trader 2")
    hung = market.services[f"peer-{max(market.trader_peers)}"]     # hosts market.trader.2
    before = _peer_stats(market)
    hung.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: all(_peer_stats(market)[b].get("requests", 0)
                               >= before[b].get("requests", 0) + 5 for b in buyers),
                   15, "every buyer to trade on through the survivor before its call deadline")
    finally:
        hung.signal(signal.SIGCONT)
    market.stop_clients()
    assert "dropped its call to trader 2" in "".join(p.read_text() for p in run.glob("peer-*.txt"))
    assert_consistent(market)           # each acknowledged outcome is one ledger row, none twice


def _children(pid: int) -> dict[str, int]:
    """{role: pid} of a launcher's children, from /proc."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        kids = [int(k) for k in fh.read().split()]
    out = {}
    for kid in kids:
        with open(f"/proc/{kid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        module = argv[argv.index(b"-m") + 1].decode() if b"-m" in argv else "?"
        key = module + (":" + argv[argv.index(b"--id") + 1].decode() if b"--id" in argv else "")
        out[key] = kid
    return out


def _wait_trading(proc, deadline_s=60) -> str:
    seen, end = "", time.monotonic() + deadline_s
    while "trading" not in seen:
        assert time.monotonic() < end, f"launcher never started trading: {seen}"
        line = proc.stdout.readline()
        assert line, f"launcher exited early: {proc.stderr.read()}"
        seen += line
    return seen


@contextlib.contextmanager
def trading_launcher(make_config, tmp_path, *extra, n_traders=2, **sections):
    """A launcher run as a user would, once it is trading: yields (process, children)."""
    _cfg, path = make_config(ROLES, n_traders, **sections)
    proc = subprocess.Popen([sys.executable, "-m", "pyromarket.start", "--config", path,
                             "--run-dir", str(tmp_path / "run"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=signals_as_in_a_terminal)
    try:
        _wait_trading(proc)
        yield proc, _children(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):      # open still if the test failed early
            pipe.close()


def test_clients_that_come_and_go_leave_few_warehouse_connections(start_market):
    """Bursts of 30 clients, each on its own connection, ask a trader for lookups, which
    it forwards to the warehouse. Pyro5 ends the trader's extra worker threads after each
    burst; each used to leave its own warehouse connection open, until the warehouse's
    worker pool was full and it refused every new connection ("no free workers")."""
    market = start_market(["buyer", "seller"], 2)          # quiet: both peers are traders
    uri, product = market.traders()[1], market.cfg.products[0]
    failures: list[BaseException] = []

    def client(start: threading.Barrier):
        try:
            with rpc.proxy(uri, 10.0) as t:
                t._pyroBind()
                start.wait(10.0)                 # all 30 connected at once
                assert t.lookup(product)["product"] == product
        except BaseException as exc:            # noqa: BLE001 - reported below
            failures.append(exc)

    for _burst in range(3):
        start = threading.Barrier(30)
        threads = [threading.Thread(target=client, args=(start,)) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30.0)
        assert not failures, failures[:3]
    with market.trader(1) as t:
        held = t.stats()["warehouse_connections"]
    assert 1 <= held <= config.WAREHOUSE_CONNECTIONS_PER_TRADER
    with market.warehouse() as w:                # counts this connection too
        assert w.stats()["connections"] <= 2 * config.WAREHOUSE_CONNECTIONS_PER_TRADER + 1


def test_the_market_keeps_no_idle_connections_to_the_name_server(start_market, monkeypatch):
    """A name server's worker pool caps its connections (80 in Pyro5 by default), and each
    client peer used to keep one open, each trader three and the warehouse one, so a
    market of about 75 peers filled it and then nobody new could look a name up. Now
    every lookup, listing and renewal is a short connection of its own. Here the name
    server has 8 workers (the env reaches only it: market processes set their own pool)
    and this market of 5 peers used to hold 11 connections (3 + 2 x 3 + 1, and the
    launcher's 1): a REPL user was refused ("no free workers")."""
    from pyromarket import repl
    monkeypatch.setenv("PYRO_THREADPOOL_SIZE", "8")
    monkeypatch.setenv("PYRO_THREADPOOL_SIZE_MIN", "2")
    market = start_market(ROLES, 2, buyers={"pace_s": 0.01, "max_qty": 2})
    wait_until(lambda: all(s.get("shipped", 0) + s.get("unavailable", 0) + s.get("stocked", 0)
                           >= 5 for s in _peer_stats(market).values()), 30,
               "every client to trade through the traders it looked up")
    for _ in range(3):                     # renewals and refreshes come and go meanwhile
        assert sorted(repl.traders(market.config_path)) == [1, 2]
        with repl.trader(1, market.config_path, 5) as t:
            assert t.lookup("salt")["product"] == "salt"
        time.sleep(0.5)


SIGNAL_DURING_SET = """
import signal
from pyromarket import runtime
stop = runtime.stop_on_signals()
with stop._cond:                          # as when a first signal's set() holds the lock
    signal.raise_signal(signal.SIGTERM)   # a second signal: its handler runs right here
    print("the handler returned", flush=True)
print("stopped" if stop.wait(10) else "not stopped", flush=True)
"""


def test_a_signal_arriving_while_the_stop_event_is_held_cannot_hang_a_role():
    """Seen: a trader hung for good in its shutdown after two quick SIGTERMs, each
    handler calling Event.set(), the second waiting for the lock the first one held."""
    out = subprocess.run([sys.executable, "-c", SIGNAL_DURING_SET], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.split("\n")[:2] == ["the handler returned", "stopped"], out.stderr


def test_ctrl_c_prints_a_summary_and_stops_every_child(make_config, tmp_path):
    with trading_launcher(make_config, tmp_path) as (proc, kids):
        assert len(kids) == 1 + 1 + len(ROLES)          # name server, warehouse, peers
        wait_until(lambda: "shipped" in (tmp_path / "run" / "warehouse.txt").read_text(), 30,
                   "the first shipment")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted; stopping" in out and "goods shipped:" in out
    assert_all_gone(kids.values())


def test_ctrl_c_held_down_still_stops_every_child_without_a_traceback(make_config, tmp_path):
    """SIGINT every 50 ms until the launcher exits, so some land while it stops its
    children: the stop is bounded and runs to its end."""
    with trading_launcher(make_config, tmp_path) as (proc, kids):
        hold_ctrl_c(proc)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "interrupted" in out
    assert_all_gone(kids.values())


def test_a_closed_output_stops_every_child_with_one_line(make_config, tmp_path):
    """`python -m pyromarket.start --duration 3 | head -2`: the summary found its stdout
    closed, and the launcher ended in a BrokenPipeError traceback."""
    with trading_launcher(make_config, tmp_path, "--duration", "3") as (proc, kids):
        proc.stdout.close()                         # as `head` does once it has its lines
        err = proc.stderr.read()
        proc.wait(60)
    assert proc.returncode == 1
    assert "error: the launcher's output was closed; stopping the market" in err, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert_all_gone(kids.values())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill -9", "hang-up"])
def test_a_launcher_killed_outright_leaves_no_child_and_no_broken_ledger(make_config, tmp_path,
                                                                          sig):
    """kill -9 of the launcher, or its terminal closing (SIGHUP, which it does not catch),
    runs none of its stop. Its children hear of it from the kernel (PR_SET_PDEATHSIG:
    SIGTERM) and stop as they would on a Ctrl-C, the warehouse after its last commit."""
    with trading_launcher(make_config, tmp_path) as (proc, kids):
        wait_until(lambda: _shipments(tmp_path) > 0, 30, "the first shipment")
        proc.send_signal(sig)
        assert proc.wait(10) == -sig
        try:
            wait_until(lambda: not any(group_alive(pid) for pid in kids.values()), 30,
                       "every child of the dead launcher to stop")
        finally:                        # a failed test leaves no orphans either
            for pid in kids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    cfg = config.load(tmp_path / "market.yaml")
    store = Store(cfg.warehouse.db_path, cfg.warehouse.initial_stock)
    try:
        audit = store.audit()
        assert store.ledger() and all(entry["ok"] for entry in audit.values()), audit
    finally:
        store.close()


def test_a_crashed_child_stops_the_market_with_an_error(make_config, tmp_path):
    with trading_launcher(make_config, tmp_path) as (proc, kids):
        os.kill(kids["pyromarket.warehouse"], signal.SIGKILL)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "exited unexpectedly" in err and "warehouse" in err
    assert_all_gone(kids.values())


def test_a_market_whose_every_trader_exits_says_so_and_still_stops_cleanly(make_config,
                                                                          tmp_path):
    """With no trader left (and none to launch a replacement), the launcher says that
    nothing trades any more, instead of "its survivors take over"; it still runs out its
    duration, prints the summary and stops every child."""
    with trading_launcher(make_config, tmp_path, "--duration", "8") as (proc, kids):
        traders = [pid for role, pid in kids.items() if role in ("pyromarket.peer:4",
                                                                 "pyromarket.peer:5")]
        assert len(traders) == 2                  # peers 4 and 5 hold the highest ids
        for pid in traders:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "no trader is left" in out and "goods shipped:" in out, out
    assert out.count("trader process peer-") == 2
    assert_all_gone(kids.values())


# One trader that autoscaling would replace (never scaling out), busy buyers and sellers.
LONE_REPLACEABLE_TRADER = dict(
    autoscale={"enabled": True, "window_s": 2.0, "threshold": 10**6, "replace_failed": True},
    **BUSY, rpc={"call_timeout_s": 2.0, "warehouse_timeout_s": 1.0})


def _relaunched_and_serving(proc, log: Path) -> tuple[str, int]:
    """Read the launcher's output until it starts Trader 1 again, then wait until that
    trader has served 20 requests; (the output so far, the new trader's pid)."""
    served = lambda: log.read_text().count("Trader 1 informed")
    seen, end = "", time.monotonic() + 20
    while "started Trader 1 again" not in seen:
        assert time.monotonic() < end and proc.poll() is None, seen + proc.stderr.read()
        seen += proc.stdout.readline()
    relaunched = int(seen.split("started Trader 1 again (pid ")[1].split(";")[0])
    before = served()
    wait_until(lambda: served() >= before + 20, 20, "the relaunched Trader 1 to serve")
    return seen, relaunched


def test_when_no_trader_is_left_the_launcher_starts_one_again_and_nothing_is_lost(
        make_config, tmp_path):
    """With autoscaling replacing failed traders, a survivor replaces a dead trader, but a
    lone trader has none. Killed with -9, the launcher starts Trader 1 again as a replica,
    which serves the requests the peers retry, and the run ends with nothing lost,
    doubled or left behind (before, nothing traded for the rest of the run)."""
    with trading_launcher(make_config, tmp_path, "--duration", "12", n_traders=1,
                          **LONE_REPLACEABLE_TRADER) as (proc, kids):
        os.kill(kids["pyromarket.peer:5"], signal.SIGKILL)          # the only trader
        seen, relaunched = _relaunched_and_serving(proc, tmp_path / "run" / "trader-1.txt")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "no trader is left" in seen and "nothing trades" not in seen + out, seen + out
    assert seen.count("started Trader 1 again") + out.count("started Trader 1 again") == 1
    assert "trader 1 (a replica, sync)" in out and "conservation per product: ok" in out, out
    assert_all_gone([*kids.values(), relaunched])
    cfg = config.load(str(tmp_path / "market.yaml"))
    assert_consistent(SimpleNamespace(cfg=cfg, run_dir=str(tmp_path / "run")))


def test_when_no_trader_serves_the_launcher_starts_one_again_and_fences_the_hung_one(
        make_config, tmp_path):
    """The only trader is paused (SIGSTOP): its process lives, so no exit is seen, but it
    answers nothing. The launcher's probes find no trader serving and start Trader 1
    again; it joins the slot afresh, which fences the paused one. Resumed, the old one
    learns it was fenced (its own check after the pause, or its first write refused,
    whichever comes first) and steps down, and the run ends with nothing lost, doubled or
    left behind (before, nothing traded until the pause ended)."""
    log = tmp_path / "run" / "trader-1.txt"
    with trading_launcher(make_config, tmp_path, "--duration", "14", n_traders=1,
                          **LONE_REPLACEABLE_TRADER) as (proc, kids):
        hung = kids["pyromarket.peer:5"]                              # the only trader
        os.kill(hung, signal.SIGSTOP)
        try:
            seen, relaunched = _relaunched_and_serving(proc, log)
        finally:
            os.kill(hung, signal.SIGCONT)
        wait_until(lambda: _stepped_down_fenced(log), 20, "the resumed trader to step down")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "no trader answered 3 probes in a row" in seen and "exited" not in seen, seen
    assert seen.count("started Trader 1 again") + out.count("started Trader 1 again") == 1
    assert "conservation per product: ok" in out, out
    assert_all_gone([*kids.values(), relaunched])
    cfg = config.load(str(tmp_path / "market.yaml"))
    assert_consistent(SimpleNamespace(cfg=cfg, run_dir=str(tmp_path / "run")))


def _stepped_down_fenced(log: Path) -> bool:
    """Whether trader-<n>.txt shows a trader stepping down because it was fenced."""
    return any("steps down" in line and "fenced" in line
               for line in log.read_text().splitlines())


def _names(ns_port: int) -> set[str]:
    """The market's names bound now; empty while the name server does not answer."""
    with contextlib.suppress(rpc.Unavailable):
        with rpc.nameserver("127.0.0.1", ns_port) as ns, rpc.translated("list"):
            return set(ns.list(prefix="market."))
    return set()


def _shipments(tmp_path) -> int:
    return (tmp_path / "run" / "warehouse.txt").read_text().count("Warehouse shipped")


def test_a_killed_name_server_is_started_again_and_the_market_binds_its_names_again(
        make_config, tmp_path):
    """The launcher's name server holds the names in memory only. Killed, it is started
    again empty; the warehouse and both traders bind their names again, trading goes on,
    and the run ends with a summary (it used to end the whole market with an error)."""
    with trading_launcher(make_config, tmp_path) as (proc, kids):
        ns_port = config.load(str(tmp_path / "market.yaml")).nameserver.port
        all_names = {rpc.WAREHOUSE_NAME, rpc.trader_name(1), rpc.trader_name(2)}
        assert _names(ns_port) == all_names
        os.kill(kids["nameserver"], signal.SIGKILL)
        seen, end = "", time.monotonic() + 30
        while "started it again" not in seen:
            assert time.monotonic() < end and proc.poll() is None, seen + proc.stderr.read()
            seen += proc.stdout.readline()
        revived = _children(proc.pid)["nameserver"]
        assert revived != kids["nameserver"]
        wait_until(lambda: _names(ns_port) == all_names, 10, "the names to be bound again")
        before = _shipments(tmp_path)
        wait_until(lambda: _shipments(tmp_path) >= before + 10, 30, "trading to go on")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "goods shipped:" in out and "conservation per product: ok" in out
    assert_all_gone([*kids.values(), revived])
