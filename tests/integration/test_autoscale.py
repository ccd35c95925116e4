"""Autoscaling (the spec's A5) with real processes: scale out, stay put, cap and
cool-down, and replacing a trader killed with -9."""

from __future__ import annotations

import os
import signal
import time

from pyromarket.process import alive, wait_until
from tests.integration.test_failover import assert_consistent, peer_logs, trader_log

ROLES = ["buyer", "buyer", "seller", "buyer", "buyer"]        # peer 5 is the elected trader
LOAD = dict(buyers={"pace_s": 0.01, "max_qty": 2}, sellers={"goods_per_period": 2, "period_s": 0.2},
            rpc={"call_timeout_s": 2.0, "warehouse_timeout_s": 1.0})


def autoscale(**overrides) -> dict:
    return {"autoscale": {"enabled": True, "window_s": 2.0, "threshold": 20, "max_traders": 2,
                          "cooldown_s": 3.0, **overrides}}


def trader_stats(market) -> dict[int, dict]:
    out = {}
    for n in market.traders():
        try:
            with market.trader(n, 2.0) as t:
                out[n] = t.stats()
        except Exception:         # a trader that just died or is still starting
            pass
    return out


def scale_events(market) -> list[dict]:
    events = {(e["at"], e["trader"]): e for s in trader_stats(market).values()
              for e in s["scale_events"]}
    return [events[k] for k in sorted(events)]


def kill_and_await_replacement(market, n: int, pid: int, *stale: str,
                               timeout_s: float = 20.0) -> None:
    """kill -9 the process `pid` serving trader n; return once market.trader.<n> names a
    new one (neither its address now nor any of `stale`)."""
    old = market.traders()[n]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: market.traders().get(n) not in (None, old, *stale), timeout_s,
               f"a replacement Trader {n}")


def trader_pid(market, n: int) -> int:
    """The process serving trader n now (its name's), an elected peer or a launched replica."""
    with market.trader(n, 5.0) as t:
        return t.ping()["pid"]


def serving(market, n: int) -> int:
    """Requests trader n has taken, or 0 while it does not answer."""
    return trader_stats(market).get(n, {}).get("requests", 0)


def test_load_above_the_threshold_adds_a_trader_that_peers_use(start_market):
    market = start_market(ROLES, 1, **LOAD, **autoscale())
    assert sorted(market.traders()) == [1]
    wait_until(lambda: sorted(market.traders()) == [1, 2], 20, "a second trader")
    assert len(market.replicas()) == 1
    wait_until(lambda: trader_stats(market).get(2, {}).get("requests", 0) >= 20, 15,
               "peers to send requests to the new trader")
    before = trader_stats(market)[1]["requests"]
    wait_until(lambda: trader_stats(market)[1]["requests"] >= before + 20, 15,
               "the first trader to keep serving too")
    (event,) = scale_events(market)
    assert (event["kind"], event["trader"], event["by"]) == ("scale_out", 2, 1)
    assert event["mean_load"] > 20 and event["handle"].startswith("pid ")
    wait_until(lambda: "launches a new Trader 2" in trader_log(market, 1), 5, "the launch's log line")
    wait_until(lambda: peer_logs(market).count("Trader 2 now serves at") >= 4, 5,  # every client told
               "every client to log the new trader")
    market.stop_clients()
    assert_consistent(market)
    pids = market.replicas()
    market.stop()
    assert not [p for p in pids if alive(p)]


def test_load_below_the_threshold_adds_no_trader(start_market):
    market = start_market(ROLES, 1, **LOAD, **autoscale(threshold=1_000_000))
    started = time.monotonic()
    # three whole windows of load, with the coordinator's loop running all along
    wait_until(lambda: time.monotonic() - started > 6.0
               and trader_stats(market)[1]["load_window"] > 20, 20, "three windows of load")
    assert sorted(market.traders()) == [1]
    assert scale_events(market) == [] and market.replicas() == []


def test_cap_and_cool_down_are_respected(start_market):
    market = start_market(ROLES, 1, **LOAD, **autoscale(max_traders=3, cooldown_s=4.0))
    wait_until(lambda: sorted(market.traders()) == [1, 2, 3], 30, "the third trader")
    first, second = scale_events(market)
    assert second["at"] - first["at"] >= 4.0                      # the cool-down
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > 6.0
               and trader_stats(market).get(3, {}).get("requests", 0) > 0, 20,
               "a cool-down and a half at the cap, with trader 3 serving")
    assert sorted(market.traders()) == [1, 2, 3]                  # the cap
    assert len(scale_events(market)) == 2 and len(market.replicas()) == 2


def test_a_killed_trader_is_replaced_and_nothing_is_lost_or_doubled(start_market):
    roles = ROLES + ["seller"]                                    # peers 5, 6 become traders
    market = start_market(roles, 2, **LOAD, **autoscale(threshold=1_000_000))
    wait_until(lambda: serving(market, 2) >= 30, 20, "trader 2 to serve")
    kill_and_await_replacement(market, 2, market.services[f"peer-{max(market.trader_peers)}"].pid)
    wait_until(lambda: "launches a replacement Trader 2" in trader_log(market, 1), 5,
               "the replacement's log line")
    ((event),) = scale_events(market)
    assert (event["kind"], event["trader"]) == ("replace", 2)
    with market.trader(2) as t:
        first = t.stats()["requests"]
    wait_until(lambda: trader_stats(market)[2]["requests"] >= first + 20, 20,
               "peers to use the replacement")
    market.stop_clients()
    assert_consistent(market)                  # in-flight requests ended exactly once


def test_a_replacement_that_dies_in_turn_is_replaced_again(start_market):
    """Seen in a soak: Trader 2 replaced Trader 1, the replacement (n = 1) became the
    coordinator, and Trader 2 stopped settling its own pending launch, so when the
    replacement was killed too, the launch still looked under way and nothing replaced it."""
    roles = ROLES + ["seller"]                                    # peers 5, 6 become traders
    market = start_market(roles, 2, **LOAD, **autoscale(threshold=1_000_000))
    wait_until(lambda: serving(market, 1) >= 10, 20, "trader 1 to serve")
    first_uri = market.traders()[1]
    kill_and_await_replacement(market, 1, market.services[f"peer-{min(market.trader_peers)}"].pid)
    wait_until(lambda: "now watches Trader 1" in trader_log(market, 2), 10,
               "Trader 2 to watch the replacement")
    wait_until(lambda: serving(market, 1) >= 10, 20, "the replacement to serve")
    (replica,) = market.replicas()
    kill_and_await_replacement(market, 1, replica, first_uri)      # the replacement dies too
    assert trader_log(market, 2).count("launches a replacement Trader 1") == 2
    wait_until(lambda: serving(market, 1) >= 10, 20, "peers to use the second replacement")
    market.stop_clients()
    assert_consistent(market)


def test_a_replacement_that_never_registers_is_stopped_and_launched_again(start_market):
    """With the warehouse paused, the first replacement cannot join it, so it never
    registers within launch_timeout_s: the trader that launched it stops it and launches
    another, which serves once the warehouse is back. Nothing is lost or doubled."""
    roles = ROLES + ["seller"]                                    # peers 5, 6 become traders
    market = start_market(roles, 2, **LOAD,
                          **autoscale(threshold=1_000_000, launch_timeout_s=5.0))
    wait_until(lambda: serving(market, 1) >= 10, 20, "trader 1 to serve")
    dead_uri, warehouse = market.traders()[1], market.services["warehouse"]
    warehouse.signal(signal.SIGSTOP)
    try:
        os.kill(market.services[f"peer-{min(market.trader_peers)}"].pid, signal.SIGKILL)
        wait_until(lambda: "gives up on launch 1 of Trader 1" in trader_log(market, 2), 40,
                   "Trader 2 to give up on the first replacement")
        first = [e for e in scale_events(market) if e["trader"] == 1][0]["handle"]
        wait_until(lambda: not alive(int(first.split()[1])), 10, "the first replacement to stop")
        assert "trying again (2 of 3)" in trader_log(market, 2)
    finally:
        warehouse.signal(signal.SIGCONT)
    wait_until(lambda: market.traders().get(1) not in (None, dead_uri), 20,
               "the second replacement to register")
    wait_until(lambda: serving(market, 1) >= 10, 20, "peers to use the second replacement")
    tries = [(e["kind"], e["attempt"]) for e in scale_events(market) if e["trader"] == 1]
    assert tries[:2] == [("replace", 1), ("replace", 2)]
    (replica,) = market.replicas()
    assert f"pid {replica}" in [e["handle"] for e in scale_events(market)][1:]
    market.stop_clients()
    assert_consistent(market)


def test_a_replica_that_steps_down_exits_and_leaves_its_launches_serving(start_market):
    """A launched trader that was paused, declared dead and fenced steps down on waking.
    It used to linger as an idle process holding its warehouse connections; it now exits,
    and the trader it had launched itself as coordinator keeps serving."""
    roles = ROLES + ["seller"]                                    # peers 5, 6 become traders
    market = start_market(roles, 2, **LOAD, **autoscale(threshold=1_000_000))
    wait_until(lambda: serving(market, 1) >= 10 and serving(market, 2) >= 10, 20, "both to serve")
    kill_and_await_replacement(market, 2, trader_pid(market, 2))      # Trader 1 launches R2
    wait_until(lambda: serving(market, 2) >= 10, 20, "R2 to serve")
    kill_and_await_replacement(market, 1, trader_pid(market, 1))      # R2 launches R1
    wait_until(lambda: serving(market, 1) >= 10, 20, "R1 to serve")
    r1, r2, r2_uri = trader_pid(market, 1), trader_pid(market, 2), market.traders()[2]
    os.kill(r2, signal.SIGSTOP)                                       # R1 replaces it ...
    try:
        wait_until(lambda: market.traders().get(2) not in (None, r2_uri), 30,
                   "a replacement for the paused R2")
    finally:
        os.kill(r2, signal.SIGCONT)                                   # ... and R2 wakes up fenced
    wait_until(lambda: not alive(r2), 20, "R2 to step down and exit")
    assert "exits: it stepped down" in trader_log(market, 2)
    assert alive(r1) and trader_pid(market, 1) == r1                  # its launch serves on
    before = serving(market, 1)
    wait_until(lambda: serving(market, 1) >= before + 10, 20, "R1 to keep serving")
    market.stop_clients()
    assert_consistent(market)
