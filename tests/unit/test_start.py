"""The launcher's summary text and argument checks: pure, no market."""

from types import SimpleNamespace

import pytest

from pyromarket.start import format_summary, gone_traders, main, trader_exit_note
from pyromarket.supervisor import MAX_TRADER_RELAUNCHES, Relauncher
from pyromarket.status import format_status
from pyromarket.trader import STAT_KEYS


def _summary(**trader_counts) -> dict:
    stats = {"peer": 6, "mode": "sync", **{k: 0 for k in STAT_KEYS}, **trader_counts}
    return {"elapsed_s": 10.0, "goods_shipped": 3, "shipped_per_s": 0.3, "goods_stocked": 0,
            "orders_per_commit": 1.0, "traders": {1: stats},
            "accuracy": {"oversells": 0, "oversell_pct": 0.0, "buy_requests": 1,
                         "undersells": 0, "undersell_pct": 0.0},
            "conservation_ok": True, "run_dir": "logs/run-x"}


def test_a_trader_line_counts_refused_requests_and_uses_plurals_right():
    text = format_summary(_summary(requests=3, buys=1, sells=0, shipped=1, refused=2))
    line = next(ln for ln in text.splitlines() if ln.startswith("trader 1"))
    assert line == ("trader 1 (peer 6, sync): 3 requests (1 buy, 0 sells; 1 shipped, "
                    "0 unavailable, 0 denied from cache, 2 refused with an error)")


def test_a_trader_gone_before_the_end_is_named_not_dropped():
    """The summary listed only the traders that answered at the end, so one that failed
    mid-run vanished from it without a word."""
    events = [{"trader": 3, "kind": "scale_out"}]
    assert gone_traders(2, events, {1: {}, 3: {}}) == [2]
    assert gone_traders(2, [], {1: {}, 2: {}}) == []
    text = format_summary({**_summary(requests=1), "gone": [2]})
    assert ("trader 2: gone before the end (failed, or fenced and retired); the over- and "
            "under-sells below leave out what it served") in text.splitlines()
    assert "gone" not in format_summary(_summary(requests=1))


def test_a_retried_replacement_says_which_try_it_was():
    event = {"time": "25.11.2026 08:21:02.00", "by": 2, "kind": "replace", "trader": 1,
             "mean_load": 40.0, "live": 1, "handle": "pid 6288"}
    lines = format_summary({**_summary(requests=1),
                            "scale_events": [{**event, "attempt": 1}, {**event, "attempt": 2}]})
    first, retry = [ln for ln in lines.splitlines() if ln.startswith("autoscale:")]
    assert first.endswith("trader 2 replaced trader 1 (load 40.0 per trader, 1 live; pid 6288)")
    assert "(try 2, the one before never registered; load 40.0" in retry


def test_a_broken_conservation_is_shouted():
    s = _summary(requests=1)
    s["conservation_ok"] = False
    assert "conservation per product: VIOLATED" in format_summary(s)


def test_a_slow_rate_keeps_two_significant_digits():
    lines = {r: format_summary({**_summary(requests=1), "shipped_per_s": r}).splitlines()[1]
             for r in (2 / 60, 0.0, 12.345)}
    assert lines[2 / 60] == "goods shipped: 3 (0.033/s); goods stocked: 0"
    assert "(0.0/s)" in lines[0.0] and "(12.3/s)" in lines[12.345]


@pytest.mark.parametrize("per_s, shown", [(0.0, "0.0"), (2 / 60, "0.033"), (0.94, "0.94"),
                                          (0.95, "0.95"), (0.96, "1.0"), (12.345, "12.3")])
def test_a_slow_market_reads_the_same_rate_on_the_line_as_in_the_summary(per_s, shown):
    assert format_status(60.0, None, (2, 0, per_s)).endswith(f"({shown}/s), 0 stocked")
    summary = format_summary({**_summary(requests=1), "shipped_per_s": per_s})
    assert f"({shown}/s)" in summary


def test_denials_the_disk_refused_are_owned_up_to_under_the_under_sells():
    assert "local denials' records" not in format_summary(_summary(requests=1))
    text = format_summary(_summary(requests=1, unrecorded_denials=7))
    assert ("(the disk refused 7 local denials' records, so under-sells may be undercounted "
            "by up to that many)") in text


@pytest.mark.parametrize("duration", ["nan", "inf", "-inf", "0", "-1"])
def test_a_duration_that_is_not_a_finite_positive_number_is_refused_before_anything(
        duration, capsys):
    """--duration nan used to stop the market at once, inf never (as without it)."""
    with pytest.raises(SystemExit) as stop:
        main([f"--duration={duration}"])
    assert stop.value.code == 2
    assert "--duration must be a finite number of seconds > 0" in capsys.readouterr().err


@pytest.mark.parametrize("left", [1, None], ids=["one left", "replicas elsewhere"])
def test_a_trader_exit_promises_a_takeover_only_while_a_trader_may_be_left(left):
    assert trader_exit_note("peer-6", left).endswith("its survivors take over")
    last = trader_exit_note("peer-6", 0)
    assert "no trader is left" in last and "survivors" not in last
    assert "nothing trades" in last
    relaunched = trader_exit_note("peer-6", 0, relaunching=True)
    assert "no trader is left" in relaunched and "nothing trades" not in relaunched


class _FakeMarket:
    """What `Relauncher` looks at: the config, the elected traders' services, the
    replicas' pids; `launch_trader` records its calls and adds a live replica."""

    def __init__(self, cfg, elected_running: bool):
        self.cfg, self.trader_peers = cfg, {5}
        self.services = {"peer-5": SimpleNamespace(running=elected_running)}
        self.live_replicas: list[int] = []
        self.launched: list[int] = []

    def replicas(self) -> list[int]:
        return list(self.live_replicas)

    def launch_trader(self, index: int) -> int:
        self.launched.append(index)
        self.live_replicas.append(1000 + len(self.launched))
        return self.live_replicas[-1]


def _autoscaling(**overrides):
    return SimpleNamespace(autoscale=SimpleNamespace(
        **{"enabled": True, "replace_failed": True, "launcher": "local", **overrides}))


def test_the_launcher_starts_trader_1_again_only_when_no_trader_process_is_left():
    market = _FakeMarket(_autoscaling(), elected_running=True)
    relauncher = Relauncher(market)
    assert relauncher.check() is None and market.launched == []       # one is left
    market.services["peer-5"].running = False
    said = relauncher.check()
    assert market.launched == [1] and "started Trader 1 again (pid 1001; 1 of at most" in said
    assert relauncher.check() is None and market.launched == [1]      # its replica lives
    said = []
    for _ in range(2 * MAX_TRADER_RELAUNCHES):                         # each one dies at once
        market.live_replicas.clear()
        said.append(relauncher.check())
    assert market.launched == [1] * MAX_TRADER_RELAUNCHES
    assert sum("nothing trades" in (line or "") for line in said) == 1   # said once


class _FakeProbe:
    """A ServingProbe's verdict, set by the test; records the grace each launch gave."""
    verdict = "no trader answered 3 probes in a row"

    def __init__(self):
        self.down, self.graces = False, []

    def none_serving(self) -> bool:
        return self.down

    def restart(self, grace_s: float) -> None:
        self.down = False
        self.graces.append(grace_s)


def test_the_launcher_starts_trader_1_again_when_trader_processes_run_but_none_serves():
    market = _FakeMarket(_autoscaling(launch_timeout_s=30.0), elected_running=True)
    probe = _FakeProbe()
    relauncher = Relauncher(market, probe)
    assert relauncher.check() is None and market.launched == []       # it serves
    probe.down = True                                                  # hung, paused...
    said = relauncher.check()
    assert market.launched == [1] and probe.graces == [30.0]
    assert said.startswith("no trader answered 3 probes in a row: the launcher started "
                           "Trader 1 again (pid 1001; 1 of at most"), said
    assert relauncher.check() is None and market.launched == [1]      # given its grace


@pytest.mark.parametrize("overrides", [{"enabled": False}, {"replace_failed": False},
                                       {"launcher": "ec2"}])
def test_the_launcher_relaunches_only_when_the_config_replaces_failed_local_traders(overrides):
    assert Relauncher.wanted(_autoscaling())
    assert not Relauncher.wanted(_autoscaling(**overrides))
