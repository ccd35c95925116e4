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


def test_a_launch_that_never_shows_up_is_given_up_on():
    p = policy(max_traders=2, cooldown_s=0.0, launch_timeout_s=10.0)
    assert p.decide(0.0, {1: 50}, {1}).index == 2
    assert p.decide(11.0, {1: 50}, {1, 2}).index == 3      # a fresh n, never reused


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
        self.done = threading.Event()

    def launch(self, index: int) -> str:
        self.started.append(index)
        self.done.set()
        if self.fail:
            raise RuntimeError("no capacity")
        return f"pid {1000 + index}"


def _scaler(launcher, replace_failed: bool = True):
    from types import SimpleNamespace
    cfg = SimpleNamespace(threshold=10, max_traders=3, cooldown_s=5.0, window_s=2.0,
                          replace_failed=replace_failed)
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
