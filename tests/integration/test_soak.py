"""A soak: for a while, at random (a fixed seed), kill -9 a trader (autoscaling replaces
it), pause a trader with SIGSTOP (briefly, or until it is replaced, so that it wakes
fenced), kill -9 and restart the warehouse, or pause it, each under load and as soon as
the last fault has healed. Afterwards nothing may be lost, doubled or abandoned.

This is the test that found a replacement's own death going unreplaced; a longer run
(SOAK_S=150: 54 trader kills, 51 warehouse kills and 37 pauses in sync mode, about as
many in cached mode) passed before it was committed."""

from __future__ import annotations

import faulthandler
import os
import random
import signal
import time

import pytest

from pyromarket.process import wait_until
from tests.integration.test_autoscale import (autoscale, kill_and_await_replacement,
                                              trader_pid, trader_stats)
from tests.integration.test_failover import LOAD, assert_consistent, total

ROLES = ["buyer", "buyer", "seller", "buyer", "buyer", "seller"]   # peers 5, 6 trade
SOAK_S = float(os.environ.get("SOAK_S", "20"))
SOAK_SEED = int(os.environ.get("SOAK_SEED", "28"))    # another seed, another order of faults
# pytest's own per-test limit (300 s in setup.cfg) would end a long soak early, so the
# soak's limit grows with it: the faults' time, plus room to start, settle and check.
# (The test also cancels the faulthandler's 300 s dump; on a hang this limit dumps the
# stacks instead.)
SOAK_LIMIT_S = max(300, int(SOAK_S) + 300)


def served(market) -> int:
    return sum(total(market, key) for key in ("shipped", "stocked", "unavailable"))


def two_settled_traders(market) -> None:
    """Wait until the same two traders have answered for two detection windows. Just
    after a pause a trader may still be declared dead, and a fault picked meanwhile can
    leave no survivor to take over, which is not what this test asks. (Seen once: the
    test paused Trader 2 midway through its takeover from a Trader 1 just woken from a
    pause; Trader 1 found itself fenced and stepped down, and no trader was left to
    replace Trader 2 until it woke.)"""
    hb = market.cfg.heartbeat
    settle_s = 2 * (hb.misses * hb.interval_s + hb.timeout_s)
    seen = {"traders": None, "since": 0.0}

    def settled() -> bool:
        traders = market.traders() if len(trader_stats(market)) == 2 else None
        now = time.monotonic()
        if traders is None or traders != seen["traders"]:
            seen.update(traders=traders, since=now)
            return False
        return now - seen["since"] >= settle_s
    wait_until(settled, 60, f"the same two traders to answer for {settle_s:.1f} s")


def kill_a_trader(market, rng) -> None:
    two_settled_traders(market)
    n = rng.choice(sorted(market.traders()))
    kill_and_await_replacement(market, n, trader_pid(market, n), timeout_s=30.0)


def kill_the_warehouse(market, rng) -> None:
    warehouse = market.services["warehouse"]
    warehouse.signal(signal.SIGKILL)
    warehouse.wait(10)
    time.sleep(rng.uniform(0.0, 1.0))            # down for a while: peers retry meanwhile
    market.start_warehouse()


def pause_the_warehouse(market, rng) -> None:
    warehouse = market.services["warehouse"]
    warehouse.signal(signal.SIGSTOP)
    time.sleep(rng.uniform(0.2, 2.0))             # a stall longer than the call deadlines
    warehouse.signal(signal.SIGCONT)


def pause_a_trader(market, rng) -> None:
    """SIGSTOP a trader: briefly (it may be declared dead or not), or until a replacement
    serves (it was fenced, and steps down when it wakes)."""
    two_settled_traders(market)
    n = rng.choice(sorted(market.traders()))
    uri, pid = market.traders()[n], trader_pid(market, n)
    os.kill(pid, signal.SIGSTOP)
    try:
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.1, 1.0))
        else:
            wait_until(lambda: market.traders().get(n) not in (None, uri), 30,
                       f"a replacement for the paused Trader {n}")
    finally:
        os.kill(pid, signal.SIGCONT)


FAULTS = [kill_a_trader, kill_the_warehouse, pause_the_warehouse, pause_a_trader]


@pytest.mark.slow
@pytest.mark.timeout(SOAK_LIMIT_S)
@pytest.mark.parametrize("mode", ["sync", "cached"])
def test_random_kills_and_pauses_lose_and_double_nothing(start_market, mode):
    faulthandler.cancel_dump_traceback_later()       # SOAK_LIMIT_S is the limit here
    rng = random.Random(SOAK_SEED)
    market = start_market(ROLES, 2, traders={"mode": mode}, **LOAD,
                          **autoscale(threshold=1_000_000, cooldown_s=0.5))
    faults: dict[str, int] = {}
    end = time.monotonic() + SOAK_S
    while time.monotonic() < end or len(faults) < len(FAULTS):   # every kind, however slow
        before = served(market)
        wait_until(lambda: served(market) >= before + 20, 60, "trading between faults")
        fault = rng.choice(FAULTS)
        fault(market, rng)
        faults[fault.__name__] = faults.get(fault.__name__, 0) + 1
    before = served(market)
    wait_until(lambda: served(market) >= before + 20, 60, "trading after the last fault")
    market.stop_clients()
    print(f"soak, {mode} mode, seed {SOAK_SEED}: {faults}")    # shown by pytest -rP
    assert_consistent(market)
