"""The autoscaler's pure parts: the sliding load window and the scale-out rule."""

from __future__ import annotations

import threading

import pytest

from pyromarket.autoscale import LoadWindow, ScalePolicy
from pyromarket.launcher import user_data
from pyromarket.process import wait_until
from pyromarket.scaler import Scaler


def test_window_counts_only_the_last_window():
    w = LoadWindow(window_s=10.0, buckets=10)
    w.record(0.5, 3)
    w.record(5.0)
    assert w.count(9.9) == 4
    assert w.count(10.5) == 1            # the first second slid out
    assert w.count(15.5) == 0


def test_window_rejects_nonsense():
    with pytest.raises(ValueError):
        LoadWindow(0)


def policy(**kw) -> ScalePolicy:
    return ScalePolicy(**{"threshold": 10, "max_traders": 3, "cooldown_s": 5.0, **kw})


def test_scales_out_only_above_the_threshold():
    p = policy()
    assert p.decide(0.0, {1: 10}, {1}) is None            # at the threshold: stay put
    d = p.decide(0.1, {1: 11}, {1})
    assert (d.index, d.kind, d.mean_load, d.live) == (2, "scale_out", 11.0, 1)


def test_the_mean_per_live_trader_decides():
    assert policy().decide(0.0, {1: 15, 2: 4}, {1, 2}) is None          # mean 9.5
    assert policy().decide(0.0, {1: 15, 2: 8}, {1, 2}).index == 3        # mean 11.5


def test_cool_down_and_pending_launch_block_a_second_launch():
    p = policy()
    assert p.decide(0.0, {1: 50}, {1}).index == 2
    assert p.decide(1.0, {1: 50}, {1}) is None            # cooling down
    assert p.decide(6.0, {1: 50, 2: 50}, {1}).index == 3  # 2 is live, the cool-down is over
    assert p.pending == [3]


def test_cap_counts_pending_launches():
    p = policy(max_traders=2, cooldown_s=0.0)
    assert p.decide(0.0, {1: 50}, {1}).index == 2
    assert p.decide(1.0, {1: 50}, {1}) is None            # 2 is still starting: at the cap
    assert p.decide(2.0, {1: 50, 2: 50}, {1, 2}) is None  # 2 is up: at the cap


def test_a_scale_out_that_never_shows_up_is_given_up_on_and_not_retried():
    p = policy(max_traders=2, cooldown_s=0.0, launch_timeout_s=10.0)
    assert p.decide(0.0, {1: 50}, {1}).index == 2
    assert p.settle(10.0, {1: 50}) == []                  # still within its time
    (g,) = p.settle(10.5, {1: 50})
    assert (g.index, g.kind, g.attempt, g.waited_s, g.retry) == (2, "scale_out", 1, 10.0, None)
    assert p.pending == []
    assert p.decide(11.0, {1: 50}, {1}).index == 2        # the load rule decides afresh


def test_a_replacement_that_never_shows_up_is_retried_with_doubling_deadlines():
    p = policy(launch_timeout_s=10.0, attempts=3)
    assert p.replacement(0.0, 2, {1: 5}).attempt == 1
    (g,) = p.settle(10.5, {1: 5})
    assert (g.index, g.kind, g.attempt, g.waited_s) == (2, "replace", 1, 10.0)
    assert (g.retry.index, g.retry.kind, g.retry.attempt) == (2, "replace", 2)
    assert p.pending == [2]                               # the retry is under way
    assert p.replacement(11.0, 2, {1: 5}) is None         # so a second death adds none
    assert p.settle(30.0, {1: 5}) == []                   # try 2 has 20 s
    (g,) = p.settle(31.0, {1: 5})
    assert (g.attempt, g.waited_s, g.retry.attempt) == (2, 20.0, 3)
    (g,) = p.settle(71.5, {1: 5})                         # try 3 had 40 s: the last one
    assert (g.attempt, g.waited_s, g.retry) == (3, 40.0, None)
    assert p.pending == []
    assert p.replacement(72.0, 2, {1: 5}).attempt == 1    # a later death starts afresh


def test_a_retried_replacement_that_serves_ends_its_launch():
    p = policy(launch_timeout_s=10.0)
    p.replacement(0.0, 2, {1: 5})
    (g,) = p.settle(11.0, {1: 5})
    assert g.retry is not None
    assert p.settle(12.0, {1: 5, 2: 0}) == [] and p.pending == []


def test_replacement_reuses_the_name_ignores_the_cool_down_and_happens_once():
    p = policy()
    assert p.decide(0.0, {1: 50}, {1}).index == 2
    assert p.decide(1.0, {1: 50, 2: 50}, {1, 2}) is None  # 2 is live
    d = p.replacement(2.0, 2, {1: 50})                     # ... and then dies
    assert (d.index, d.kind) == (2, "replace")
    assert p.replacement(1.5, 2, {1: 50}) is None          # already under way
    assert p.pending == [2]


def test_user_data_installs_writes_the_config_and_starts_the_replica():
    script = user_data(3, "products: [salt]\n", "pyromarket==0.1.0")
    assert script.startswith("#!/bin/bash\n")
    assert "pip install pyromarket==0.1.0" in script
    assert "base64 -d > /etc/pyromarket/market.yaml" in script
    assert script.rstrip().endswith('--index 3 --host "$HOST"')


class _Launcher:
    def __init__(self, fail: bool = False):
        self.started, self.fail = [], fail
        self.calls: list[tuple[str, int]] = []          # ("launch" | "stop", n), in order
        self.done = threading.Event()

    def launch(self, index: int) -> str:
        self.started.append(index)
        self.calls.append(("launch", index))
        self.done.set()
        if self.fail:
            raise RuntimeError("no capacity")
        return f"pid {1000 + index}"

    def stop(self, index: int) -> None:
        self.calls.append(("stop", index))


def _scaler(launcher, replace_failed: bool = True):
    from types import SimpleNamespace
    cfg = SimpleNamespace(threshold=10, max_traders=3, cooldown_s=5.0, window_s=2.0,
                          replace_failed=replace_failed, launch_timeout_s=10.0,
                          launch_attempts=2)
    trader = SimpleNamespace(index=1, scale_events=[])
    lines = []
    return Scaler(trader, cfg, launcher, lines.append), trader, lines


def test_scaler_launches_records_the_event_and_logs_it():
    launcher = _Launcher()
    scaler, trader, lines = _scaler(launcher)
    scaler.tick(0.0, {1: 50}, {1})
    assert launcher.done.wait(5)
    (event,) = trader.scale_events
    assert (event["kind"], event["trader"], event["by"], event["mean_load"]) == ("scale_out", 2, 1, 50.0)
    assert launcher.started == [2] and "launches a new Trader 2" in lines[0]
    scaler.tick(1.0, {1: 50}, {1})                 # cooling down: nothing more
    assert len(trader.scale_events) == 1


def test_a_failed_launch_is_recorded_not_raised():
    launcher = _Launcher(fail=True)
    scaler, trader, lines = _scaler(launcher)
    scaler.replace(0.0, 2, {1: 5})
    assert launcher.done.wait(5)
    wait_until(lambda: trader.scale_events[0]["handle"] is not None, 5, "the launch thread")
    assert trader.scale_events[0]["handle"] == "failed: no capacity"


def test_no_replacement_unless_configured():
    launcher = _Launcher()
    scaler, trader, _ = _scaler(launcher, replace_failed=False)
    scaler.replace(0.0, 2, {1: 5})
    assert trader.scale_events == [] and launcher.started == []


def test_a_replacement_seen_live_and_dead_again_is_replaced_again_by_a_non_coordinator():
    """The scaler's owner may stop coordinating once its replacement (a lower n) is up;
    `observe` still ends that launch, so the replacement's own death is replaced too."""
    launcher = _Launcher()
    scaler, trader, _ = _scaler(launcher)               # this is trader 1 ...
    scaler.replace(0.0, 2, {1: 5})                      # ... replacing trader 2
    assert launcher.done.wait(5)
    scaler.observe(1.0, {1: 5, 2: 0})                   # trader 2 is live: the launch is over
    assert scaler.policy.pending == []
    launcher.done.clear()
    scaler.replace(2.0, 2, {1: 5})                      # and it dies in turn
    assert launcher.done.wait(5)
    assert launcher.started == [2, 2]
    assert [e["kind"] for e in trader.scale_events] == ["replace", "replace"]


def test_a_replacement_given_up_on_is_stopped_before_its_retry_and_then_left_alone():
    launcher = _Launcher()
    scaler, trader, lines = _scaler(launcher)
    scaler.replace(0.0, 2, {1: 5})
    scaler.observe(10.5, {1: 5})                        # launch 1 did not serve in 10 s
    scaler.observe(31.0, {1: 5})                        # nor launch 2 in 20 s: no tries left
    wait_until(lambda: len(launcher.calls) == 4, 5, "the launcher thread")
    assert launcher.calls == [("launch", 2), ("stop", 2), ("launch", 2), ("stop", 2)]
    assert [(e["kind"], e["trader"], e["attempt"]) for e in trader.scale_events] == \
        [("replace", 2, 1), ("replace", 2, 2)]
    gave_up = [line for line in lines if "gives up" in line]
    assert "launch 1 of Trader 2" in gave_up[0] and "trying again (2 of 2)" in gave_up[0]
    assert "no tries left of 2, so it is not replaced" in gave_up[1]
    assert scaler.policy.pending == []
