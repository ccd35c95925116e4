"""What the bench runner prints at the end of an experiment, from summaries made up here:
medians of an even number of runs show without float noise, and missing figures show
as such instead of ending a long run with a traceback."""

from __future__ import annotations

import re
from pathlib import Path

from bench import autoscale, durability, failover, sweep

NOISE = re.compile(r"\d\.\d{5,}")      # 3.4995000000000003, 5.7219999999999995


def test_sweep_rounds_noisy_medians_and_marks_unmeasured_setups(capsys):
    sweep._print({
        "traders=1": {"sync_rate_per_s": 2245.65, "cached_rate_per_s": 6071.5,
                      "cached_over_sync": 2.7, "sync_p99_ms": 3.4995000000000003,
                      "cached_p99_ms": 2.812, "sync_shipped_per_s": 40.0,
                      "cached_shipped_per_s": 39.75},
        "ttl_s=0.5": {"cached_rate_per_s": 7247.5, "cached_p99_ms": 2.1505,
                      "cached_shipped_per_s": 40.0},
    }, Path("results"))
    out = capsys.readouterr().out
    assert not NOISE.search(out), out
    traders, ttl = out.splitlines()[1:3]
    assert traders.split() == ["traders=1", "2246", "6072", "2.7", "3.50|2.81", "40.0|39.8"]
    assert ttl.split() == ["ttl_s=0.5", "-", "7248", "-", "-|2.15", "-|40.0"]


def test_durability_rounds_noisy_medians(capsys):
    row = {"rate_per_s": 1950.0, "orders_per_commit": 1.0, "p50_ms": 3.9939999999999998,
           "p99_ms": 7.2125, "over_full_group": 0.65}
    durability._print({"FULL-1": row, "NORMAL-1": {**row, "over_full_group": None}},
                      Path("results"))
    out = capsys.readouterr().out
    assert not NOISE.search(out), out
    assert out.splitlines()[1].split() == ["FULL-1", "1950", "1.00", "3.99", "7.21", "0.65"]
    assert out.splitlines()[2].split()[-1] == "-"


def _autoscale_summary(**changes) -> dict:
    return {"decided_s": 1.2, "clients_when_decided": 1, "launch_to_serving_s": 0.41,
            "before_req_per_s": 2969.0, "after_req_per_s": 6288.0, "after_over_before": 2.19,
            "by_clients": {1: {"req_per_s": 3514.0, "traders_serving": 1},
                           2: {"req_per_s": 5056.0, "traders_serving": 2}},
            **changes}


def test_autoscale_counts_clients_and_traders_in_words(capsys):
    autoscale._print(_autoscale_summary(), 3, Path("results"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("scale-out decided 1.2 s in, with 1 client; trader 2 answered "
                        "0.41 s after the decision")
    assert lines[2] == "  1 client: 3514 requests/s, up to 1 trader serving"
    assert lines[3] == "  2 clients: 5056 requests/s, up to 2 traders serving"


def test_autoscale_says_when_the_launched_trader_never_answered(capsys):
    """A scale-out whose trader never served in any repetition: the run's results are
    written before this is printed, and the summary says so instead of raising."""
    autoscale._print(_autoscale_summary(launch_to_serving_s=None, after_over_before=None,
                                        clients_when_decided=1.5), 2, Path("results"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scale-out decided 1.2 s in, with 1.5 clients; trader 2 never answered"
    assert lines[1].endswith("(after/before -; medians of 2 runs)")


def _failover_row(**changes) -> dict:
    return {"before_per_s": 1960.0, "after_per_s": 2333.0, "alone_per_s": 2229.0,
            "detection_s": 0.446, "longest_gap_s": 0.049, "longest_client_gap_s": 0.064,
            "after_over_alone": 1.047, **changes}


def test_failover_takes_medians_over_the_repetitions_that_have_a_figure(capsys):
    summary = failover._summarize([_failover_row(), _failover_row(detection_s=None),
                                   _failover_row(detection_s=0.5, before_per_s=2000.0)])
    assert summary["detection_s"] == 0.473 and summary["before_per_s"] == 1960.0
    assert summary["after_over_before"] == round(2333.0 / 1960.0, 3)
    failover._print(summary, 3, Path("results"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("shipped/s before 1960, after 2333 (after/before 1.19); one trader "
                        "alone 2229 (after/alone 1.05)")
    assert lines[1].startswith("detection 0.473 s; longest gap between any shipments 0.049 s")
    assert lines[1].endswith("(medians of 3 runs)")


def test_failover_says_when_no_kill_was_detected_and_nothing_shipped_before(capsys):
    """Every repetition without a detection, and a market that shipped nothing before the
    kill: the summary names that instead of ending the run with a traceback."""
    summary = failover._summarize([_failover_row(detection_s=None, before_per_s=0.0)] * 2)
    assert summary["detection_s"] is None and summary["after_over_before"] is None
    failover._print(summary, 1, Path("results"))
    lines = capsys.readouterr().out.splitlines()
    assert "(after/before -)" in lines[0]
    assert lines[1].startswith("the kill was never detected; longest gap")
    assert lines[1].endswith("(one run)")
