"""Trader failures and warehouse restarts under load, with real processes and kill -9."""

from __future__ import annotations

import contextlib
import resource
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from pyromarket import rpc
from pyromarket.errors import MarketError
from pyromarket.process import free_ports, wait_until

ROLES = ["buyer", "buyer", "seller", "buyer", "seller", "buyer"]   # peers 5, 6 become traders
LOAD = dict(buyers={"pace_s": 0.01, "max_qty": 2}, sellers={"goods_per_period": 2, "period_s": 0.2},
            rpc={"call_timeout_s": 2.0, "warehouse_timeout_s": 1.0})


def clients(market) -> set[int]:
    return {p.id for p in market.cfg.peers} - market.trader_peers


def client_stats(market) -> dict[int, dict]:
    return {pid: s.get("stats", {}) for pid, s in market.statuses(clients(market), 2.0).items()}


def total(market, key: str) -> int:
    return sum(s.get(key, 0) for s in client_stats(market).values())


def trader_log(market, n: int) -> str:
    path = Path(market.run_dir) / f"trader-{n}.txt"
    return path.read_text() if path.exists() else ""


def peer_logs(market) -> str:
    return "".join(p.read_text() for p in Path(market.run_dir).glob("peer-*.txt"))


def assert_consistent(market) -> list[str]:
    """After stop_clients(): conservation per product, no request applied twice, and every
    outcome a peer acknowledged (logged) is exactly one ledger row, and vice versa."""
    db = market.cfg.warehouse.db_path
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT request_id, product, qty, outcome FROM ledger").fetchall()
        stock = dict(conn.execute("SELECT product, stock FROM inventory"))
        seed = dict(conn.execute("SELECT product, stock FROM seed"))
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a request was applied twice"
    for product in seed:
        stocked = sum(q for _r, p, q, o in rows if p == product and o == "stocked")
        shipped = sum(q for _r, p, q, o in rows if p == product and o == "shipped")
        assert seed[product] + stocked == stock[product] + shipped, product
    logs = peer_logs(market)
    assert "abandoned" not in logs                         # every request reached an outcome
    assert logs.count(" bought ") == sum(1 for r in rows if r[3] == "shipped")
    assert logs.count(" deposited ") == sum(1 for r in rows if r[3] == "stocked")
    return ids


@pytest.mark.parametrize("mode", ["cached", "sync"])
def test_kill_9_of_a_trader_mid_load_fails_over_to_the_survivor(start_market, mode):
    market = start_market(ROLES, 2, traders={"mode": mode}, **LOAD)
    wait_until(lambda: total(market, "requests") >= 50, 30, "50 requests before the kill")
    victim = market.services[f"peer-{max(market.trader_peers)}"]           # Trader 2
    victim.signal(signal.SIGKILL)
    wait_until(lambda: "declares it dead" in trader_log(market, 1), 5,
               "the survivor to declare Trader 2 dead")
    wait_until(lambda: peer_logs(market).count("that Trader 2 failed") >= len(clients(market)), 5,
               "every peer to hear that Trader 2 failed")
    assert sorted(market.traders()) == [1]                                  # unlisted
    after = total(market, "requests")
    wait_until(lambda: total(market, "requests") >= after + 50, 30, "trading to go on")
    market.stop_clients()
    assert_consistent(market)
    with market.trader(1) as t:
        assert t.stats()["requests"] > 0


def test_a_paused_trader_is_fenced_and_steps_down_when_resumed(start_market):
    market = start_market(ROLES, 2, traders={"mode": "cached"}, **LOAD)
    wait_until(lambda: total(market, "requests") >= 30, 30, "some trading first")
    victim = market.services[f"peer-{max(market.trader_peers)}"]
    victim.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: "fence Trader 2" in trader_log(market, 1), 5, "the takeover")
        before = total(market, "requests")
        wait_until(lambda: total(market, "requests") >= before + 30, 30, "trading without it")
    finally:
        victim.signal(signal.SIGCONT)
    peer = market.cfg.peer(max(market.trader_peers))
    zombie = rpc.proxy(f"PYRO:market.trader@{peer.host}:{peer.port}", 5.0)
    wait_until(lambda: "steps down" in trader_log(market, 2), 10, "the resumed trader to step down")
    with zombie:
        with pytest.raises(MarketError, match="no longer serves"):
            zombie.buy("salt", 1, "zombie-write-1")
    market.stop_clients()
    ids = assert_consistent(market)
    assert "zombie-write-1" not in ids
    with contextlib.closing(sqlite3.connect(market.cfg.warehouse.db_path)) as db:
        fenced = db.execute("SELECT COUNT(*) FROM fenced").fetchone()[0]
    assert fenced == 1


@pytest.mark.parametrize("mode", ["sync", "cached"])
def test_an_operators_fence_retires_a_live_trader_and_the_other_takes_over(start_market, mode):
    """`fence(2, 1)` from a REPL (by_epoch left at 0, as the README shows): Trader 2 is
    alive and serving, yet it steps down at its next write, Trader 1 takes over from it as
    from a dead one, the peers hear of it, and nothing is lost or applied twice."""
    market = start_market(ROLES, 2, traders={"mode": mode}, **LOAD)
    wait_until(lambda: total(market, "requests") >= 30, 30, "some trading first")
    with market.warehouse() as w:
        epoch = w.fence(2, 1)
    assert isinstance(epoch, int) and epoch > 0
    wait_until(lambda: "steps down" in trader_log(market, 2), 10, "Trader 2 to step down")
    wait_until(lambda: "has taken over from Trader 2" in trader_log(market, 1), 10,
               "Trader 1 to take over")
    wait_until(lambda: peer_logs(market).count("that Trader 2 failed") >= len(clients(market)), 10,
               "every peer to hear that Trader 2 failed")
    wait_until(lambda: sorted(market.traders()) == [1], 10, "only Trader 1 to be registered")
    before = total(market, "requests")
    wait_until(lambda: total(market, "requests") >= before + 30, 30, "trading to go on")
    market.stop_clients()
    assert_consistent(market)
    with contextlib.closing(sqlite3.connect(market.cfg.warehouse.db_path)) as db:
        assert db.execute("SELECT epoch FROM fenced").fetchall() == [(epoch,)]


def test_trading_and_a_takeover_go_on_while_the_name_server_is_frozen(start_market):
    """A stopped name server still accepts connections, and never answers. Every call to
    it has a deadline (Pyro5's locate_ns had none: callers hung for good), so peers trade
    on with the traders they know, a killed trader is still declared dead, fenced and
    announced, and its name is removed once the name server answers again."""
    market = start_market(ROLES, 2, **LOAD)
    wait_until(lambda: all(sum(s.get(k, 0) for k in ("shipped", "unavailable", "stocked")) >= 1
                           for s in client_stats(market).values()), 30,
               "every client to trade once (so it knows the traders)")
    nameserver = market.services["nameserver"]
    nameserver.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: all(s.get("name_server_misses", 0) >= 1
                               for s in client_stats(market).values()), 30,
                   "every client to find the name server silent")
        before = total(market, "requests")
        wait_until(lambda: total(market, "requests") >= before + 30, 30, "trading to go on")
        market.services[f"peer-{max(market.trader_peers)}"].signal(signal.SIGKILL)   # Trader 2
        wait_until(lambda: peer_logs(market).count("that Trader 2 failed") >= len(clients(market)),
                   10, "every peer to hear that Trader 2 failed")
        # logs reach their files every 0.1 s, each process on its own: wait for Trader 1's
        wait_until(lambda: "could not unlist Trader 2" in trader_log(market, 1), 5,
                   "Trader 1 to log that it could not unlist Trader 2")
        after = total(market, "requests")
        wait_until(lambda: total(market, "requests") >= after + 30, 30, "trading through Trader 1")
    finally:
        nameserver.signal(signal.SIGCONT)
    wait_until(lambda: sorted(market.traders()) == [1], 10, "Trader 2's name to be removed")
    market.stop_clients()
    assert_consistent(market)


def test_warehouse_kill_9_and_restart_under_load_loses_and_duplicates_nothing(start_market):
    market = start_market(ROLES, 2, traders={"mode": "cached"}, **LOAD)
    wait_until(lambda: total(market, "shipped") + total(market, "stocked") >= 30, 30, "trading")
    market.services["warehouse"].signal(signal.SIGKILL)
    market.services["warehouse"].wait(10)
    market.start_warehouse()
    done = total(market, "shipped") + total(market, "stocked")
    wait_until(lambda: total(market, "shipped") + total(market, "stocked") >= done + 30, 30,
               "trading to resume after the restart")
    market.stop_clients()
    assert_consistent(market)
    assert sorted(market.traders()) == [1, 2]          # no trader was declared dead


@pytest.mark.parametrize("mode", ["sync", "cached"])
def test_a_paused_warehouse_costs_time_and_no_order(start_market, mode):
    """SIGSTOP the warehouse for longer than the traders' warehouse timeout: their calls
    time out, peers retry with the same ids, and after SIGCONT the requests the paused
    warehouse still had queued are applied once. Nothing is lost, doubled or abandoned,
    and no trader is declared dead (traders heartbeat each other, not the warehouse)."""
    market = start_market(ROLES, 2, traders={"mode": mode}, **LOAD)
    wait_until(lambda: total(market, "shipped") + total(market, "stocked") >= 30, 30, "trading")
    warehouse = market.services["warehouse"]
    retries = total(market, "retries")        # some happen at start, before traders are named
    warehouse.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: total(market, "retries") >= retries + 2, 30,
                   "peers to retry while the warehouse is paused")
    finally:
        warehouse.signal(signal.SIGCONT)
    done = total(market, "shipped") + total(market, "stocked")
    wait_until(lambda: total(market, "shipped") + total(market, "stocked") >= done + 30, 30,
               "trading to resume after the pause")
    market.stop_clients()
    assert_consistent(market)
    assert "retrying with the same request id" in peer_logs(market)
    assert sorted(market.traders()) == [1, 2]
    for n in (1, 2):
        assert "declares it dead" not in trader_log(market, n)


def test_storage_that_refuses_every_write_pauses_trading_and_loses_nothing(start_market):
    """A full or failing disk under a trading market, with no privilege needed: the
    warehouse's file-size limit (RLIMIT_FSIZE) set to 0, so every write to its database
    and its event log fails (SQLite: "disk I/O error"; Python ignores SIGXFSZ). Each
    batch fails whole as a retryable Unavailable and commits nothing; peers retry with
    the same ids. With the limit lifted trading resumes: nothing lost, doubled or
    abandoned, the warehouse never exited, and its log says how many lines it lost."""
    market = start_market(ROLES, 2, **LOAD)
    wait_until(lambda: total(market, "shipped") + total(market, "stocked") >= 30, 30, "trading")
    warehouse = market.services["warehouse"]
    limit = resource.prlimit(warehouse.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(warehouse.pid, resource.RLIMIT_FSIZE, (0, limit[1]))
    try:
        wait_until(lambda: "warehouse storage failed" in peer_logs(market), 30,
                   "a peer to be told that the warehouse's storage failed")
        with market.warehouse() as w:
            committed = w.stats()["last_seq"]
            retries = total(market, "retries")
            wait_until(lambda: total(market, "retries") >= retries + 10, 30,
                       "peers to retry while no write gets through")
            assert w.stats()["last_seq"] == committed          # nothing was committed
    finally:
        resource.prlimit(warehouse.pid, resource.RLIMIT_FSIZE, limit)
    done = total(market, "shipped") + total(market, "stocked")
    wait_until(lambda: total(market, "shipped") + total(market, "stocked") >= done + 30, 30,
               "trading to resume once writes get through")
    wait_until(lambda: "events of this log were not written: File too large" in
               (Path(market.run_dir) / "warehouse.txt").read_text(), 5,
               "the warehouse's log to say how many lines the disk refused")
    assert market.crashed() == []
    market.stop_clients()
    assert_consistent(market)
    assert sorted(market.traders()) == [1, 2]


@pytest.mark.slow
def test_a_60_s_run_without_faults_declares_no_one_dead(start_market):
    market = start_market(ROLES, 2, traders={"mode": "cached"}, **LOAD)
    start = total(market, "requests")
    stop_at = time.monotonic() + 60
    wait_until(lambda: time.monotonic() >= stop_at, 70, "60 s of trading", interval_s=1.0)
    assert total(market, "requests") > start + 1000
    for n in (1, 2):
        assert "declares it dead" not in trader_log(market, n)
    assert sorted(market.traders()) == [1, 2]


def test_with_three_traders_every_survivor_takes_over(start_market):
    roles = ["buyer", "buyer", "seller", "buyer", "seller", "buyer", "buyer"]
    market = start_market(roles, 3, traders={"mode": "cached"}, **LOAD)
    wait_until(lambda: total(market, "requests") >= 30, 30, "some trading first")
    market.services[f"peer-{max(market.trader_peers)}"].signal(signal.SIGKILL)    # Trader 3
    wait_until(lambda: sorted(market.traders()) == [1, 2], 5, "Trader 3 to be unlisted")
    wait_until(lambda: any("declares it dead" in trader_log(market, n) for n in (1, 2)), 5,
               "a survivor to declare Trader 3 dead")
    assert "got no answer to a heartbeat from Trader 3" in trader_log(market, 1) + trader_log(market, 2)
    before = total(market, "requests")
    wait_until(lambda: total(market, "requests") >= before + 50, 30, "trading on two traders")
    market.stop_clients()
    assert_consistent(market)
    declared = [line for n in (1, 2) for line in trader_log(market, n).splitlines()
                if "declares it dead" in line]
    assert declared and all("from Trader 3 and" in line for line in declared)   # only the dead one


def test_the_configs_forced_exit_is_survived_by_the_launcher(make_config, tmp_path):
    import subprocess
    import sys
    _cfg, path = make_config(ROLES, 2, traders={"mode": "cached"},
                             faults={"exit_traders": [{"trader": 2, "after_s": 1.5}]}, **LOAD)
    done = subprocess.run([sys.executable, "-m", "pyromarket.start", "--config", path,
                           "--duration", "5", "--progress", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("trader process peer-") and line.endswith("survivors take over")
               for line in done.stdout.splitlines()), done.stdout      # a line of its own
    assert "trading 5/5 s [" in done.stderr        # the status line went on through it
    assert "conservation per product: ok" in done.stdout
    assert "trader 2: gone before the end" in done.stdout      # named, not dropped
    assert not any(line.startswith("trader 2 (") for line in done.stdout.splitlines())
    log = (tmp_path / "run" / "trader-1.txt").read_text()
    assert "declares it dead" in log and "now the sole trader" in log
    assert "exits now" in (tmp_path / "run" / "trader-2.txt").read_text()


@pytest.mark.parametrize("n_traders", [2, 3])
def test_traders_cut_off_from_each_other_leave_exactly_one_serving(start_market, n_traders):
    """A partition between the traders alone (each still reaches the warehouse and the
    name server) makes each declare the others dead at about the same time. A quiet market
    writes nothing meanwhile, so none learns from a refused write that it was fenced
    first. The warehouse fences only for a trader that is not fenced itself: the first
    fence wins, a trader whose fence is refused steps down without unlisting or announcing
    anything, and exactly one trader serves on. (Each trader is cut off by pointing its
    view of the others, the names it reads every second, at ports where nobody listens;
    the partition heals when the survivor's own name is bound to it again.)"""
    market = start_market(["buyer", "seller", "buyer"][:n_traders], n_traders)   # quiet
    uris = market.traders()
    for n, port in zip(uris, free_ports(n_traders)):
        rpc.register_name(market.ns(), rpc.trader_name(n), f"PYRO:market.trader@127.0.0.1:{port}")
    wait_until(lambda: sum("steps down" in trader_log(market, n) for n in uris) == n_traders - 1,
               15, "all traders but one to step down")
    [survivor] = [n for n in uris if "steps down" not in trader_log(market, n)]
    # A loser steps down as soon as its fence is refused, which can be before the survivor
    # has told the peers and logged its takeover (the event log is written behind, too).
    wait_until(lambda: "has taken over" in trader_log(market, survivor), 10,
               f"Trader {survivor} to log its takeover")
    rpc.register_name(market.ns(), rpc.trader_name(survivor), uris[survivor])
    wait_until(lambda: market.traders() == {survivor: uris[survivor]}, 10,
               f"only Trader {survivor} to be registered")
    with market.trader(survivor) as t:
        assert t.buy("salt", 1, "after-the-partition")["outcome"] == "shipped"
    for loser in set(uris) - {survivor}:
        with rpc.proxy(uris[loser], 5.0) as zombie:
            with pytest.raises(MarketError, match="no longer serves"):
                zombie.buy("salt", 1, f"loser-{loser}")
    with contextlib.closing(sqlite3.connect(market.cfg.warehouse.db_path)) as db:
        assert db.execute("SELECT COUNT(*) FROM fenced").fetchone()[0] == n_traders - 1
        ids = [r for (r,) in db.execute("SELECT request_id FROM ledger")]
    assert ids == ["after-the-partition"]


def test_a_trader_declared_dead_steps_down_without_a_write(start_market):
    """Trader 1 cannot reach Trader 2, but Trader 2 is alive and idle (a quiet market).
    Trader 1 fences it, unlists it and tells the peers. Trader 2 writes nothing, so no
    refused write tells it; it learns from the broadcast, or when it finds its name gone
    and asks the warehouse before binding it again. Before, it bound its name again and
    stayed listed, fenced, until someone's order was refused."""
    market = start_market(["buyer", "seller"], 2)           # quiet: both peers are traders
    uris = market.traders()
    rpc.register_name(market.ns(), rpc.trader_name(2),
                      f"PYRO:market.trader@127.0.0.1:{free_ports(1)[0]}")
    wait_until(lambda: "has taken over from Trader 2" in trader_log(market, 1), 15,
               "Trader 1 to take over from Trader 2")
    wait_until(lambda: "steps down" in trader_log(market, 2), 10, "Trader 2 to step down")
    assert "warehouse says it was fenced (declared dead" in trader_log(market, 2)
    with rpc.proxy(uris[2], 5.0) as zombie:
        with pytest.raises(MarketError, match="no longer serves"):
            zombie.ping()                       # retired: its heartbeat loop (and renewal) ends
    wait_until(lambda: market.traders() == {1: uris[1]}, 10, "only Trader 1 to be registered")
    with market.trader(1) as t:
        assert t.buy("salt", 1, "after-the-takeover")["outcome"] == "shipped"
