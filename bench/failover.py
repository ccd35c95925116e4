"""Experiment `failover`: goods shipped per second before and after a trader is killed.

Two traders, each pinned to its own core (cpu.pin_traders), real buyer peers (which fail
over as the market's peers do) and plenty of stock, so throughput is the market's
capacity. Trader 2 is killed with SIGKILL mid-run. From the warehouse ledger it reports
shipped/s over time, throughput before and after the kill, the detection time (kill to
the survivor's declaration), the longest gap between two shipments, and the longest any
single buyer waited between two of its own (client-visible downtime). A second market
with one trader alone, under the same core cap and the same buyers, gives the rate the
survivor should reach.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

from bench import harness, plots

DESCRIPTION = "throughput before and after a trader is killed, vs one trader alone"
BUYERS = ["buyer"] * 6 + ["seller"]
STOCK = {"salt": 10**9, "fish": 10**9, "boar": 10**9}


def _config(work: Path, n_traders: int) -> dict:
    return harness.market_dict(
        work, BUYERS + ["buyer"] * n_traders, n_traders, traders={"mode": "cached"},
        warehouse={"synchronous": "FULL", "initial_stock": STOCK},
        buyers={"pace_s": 0.0, "max_qty": 1}, cpu={"pin_traders": True},
        rpc={"call_timeout_s": 2.0, "warehouse_timeout_s": 1.0})


def _shipments(market, since_seq: int) -> list[tuple[float, int]]:
    return [(r["ts"], r["qty"], r["request_id"].split("-")[0])
            for r in market.ledger_rows(since_seq) if r["outcome"] == "shipped"]


def _rate(ships, t0: float, t1: float) -> float:
    return sum(q for t, q, _b in ships if t0 <= t < t1) / (t1 - t0)


def _longest_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def _client_gap(ships, t0: float, t1: float) -> float:
    """The longest any one buyer waited between two of its own successful buys: the
    downtime a client saw (request ids start with the buyer's id, p<id>-...)."""
    by_buyer: dict[str, list[float]] = {}
    for t, _q, buyer in ships:
        if t0 <= t <= t1:
            by_buyer.setdefault(buyer, []).append(t)
    return max((_longest_gap(ts) for ts in by_buyer.values()), default=0.0)


def _series(ships, t0: float, t1: float, bin_s: float = 0.25) -> list[dict]:
    out, t = [], t0
    while t < t1:
        out.append({"t_s": round(t - t0, 3), "shipped_per_s": _rate(ships, t, t + bin_s)})
        t += bin_s
    return out


def _one_failover(work: Path, warm_s: float, after_s: float, settle_s: float) -> dict:
    market = harness.start_market(work, _config(work, 2))
    try:
        begin = time.time()
        time.sleep(warm_s)
        killed_at = time.time()
        market.services[f"peer-{max(market.trader_peers)}"].signal(signal.SIGKILL)
        time.sleep(after_s)
        end = time.time()
        survivor = market.statuses({min(market.trader_peers)})[min(market.trader_peers)]
        ships = _shipments(market, market.baseline["last_seq"])
    finally:
        market.stop()
    detected = survivor.get("declared_dead", {}).get("2")
    times = [t for t, _q, _b in ships if begin + 1.0 <= t <= end]
    return {"before_per_s": _rate(ships, begin + 1.0, killed_at),
            "after_per_s": _rate(ships, killed_at + settle_s, end),
            "detection_s": round(detected - killed_at, 3) if detected else None,
            "longest_gap_s": round(_longest_gap(times), 3),
            "longest_client_gap_s": round(_client_gap(ships, begin + 1.0, end), 3),
            "series": _series(ships, begin, end), "killed_at_s": round(killed_at - begin, 3)}


def _alone(work: Path, run_s: float) -> float:
    market = harness.start_market(work, _config(work, 1))
    try:
        begin = time.time()
        time.sleep(run_s)
        end = time.time()
        ships = _shipments(market, market.baseline["last_seq"])
    finally:
        market.stop()
    return _rate(ships, begin + 1.0, end)


def run(args) -> dict:
    reps = 1 if args.quick else (args.reps or 3)
    warm_s, after_s, settle_s = (3.0, 3.0, 1.0) if args.quick else (8.0, 8.0, 2.0)
    out = harness.results_dir("failover", args.out)
    progress = harness.Progress(reps * 2, "failover")
    rows, series = [], []
    for rep in range(reps):
        res = _one_failover(out / f"work-{rep}" / "two", warm_s, after_s, settle_s)
        progress.step(f"failover rep {rep}")
        alone = _alone(out / f"work-{rep}" / "alone", warm_s)
        progress.step(f"alone rep {rep}")
        series += [{"rep": rep, **p} for p in res.pop("series")]
        rows.append({"rep": rep, **res, "alone_per_s": alone,
                     "after_over_alone": round(res["after_per_s"] / alone, 3) if alone else None})
    summary = _summarize(rows)
    harness.write_csv(out / "results.csv", rows)
    harness.write_csv(out / "series.csv", series)
    plots.failover_series(series, statistics.median(r["killed_at_s"] for r in rows),
                          out / "failover.png")
    harness.write_json(out / "meta.json", {
        "experiment": "failover", "machine": harness.machine_note(out), "reps": reps,
        "warm_s": warm_s, "after_s": after_s, "settle_s": settle_s,
        "config": _config(out / "cfg", 2), "summary": summary})
    _print(summary, reps, out)
    return summary


def _summarize(rows: list[dict]) -> dict:
    """Medians over the repetitions. A figure no repetition has is None: a kill the
    survivor never declared (no detection time), a market that shipped nothing."""
    summary = {}
    for k in ("before_per_s", "after_per_s", "alone_per_s", "detection_s", "longest_gap_s",
              "longest_client_gap_s", "after_over_alone"):
        values = [r[k] for r in rows if r[k] is not None]
        summary[k] = statistics.median(values) if values else None
    before, after = summary["before_per_s"], summary["after_per_s"]
    summary["after_over_before"] = (round(after / before, 3) if before and after is not None
                                    else None)
    return summary


def _print(summary: dict, reps: int, out: Path) -> None:
    def fig(key: str, spec: str) -> str:
        return harness.shown(summary[key], spec)
    detected = ("the kill was never detected" if summary["detection_s"] is None
                else f"detection {fig('detection_s', '.3f')} s")
    print(f"shipped/s before {fig('before_per_s', '.0f')}, after {fig('after_per_s', '.0f')} "
          f"(after/before {fig('after_over_before', '.2f')}); one trader alone "
          f"{fig('alone_per_s', '.0f')} (after/alone {fig('after_over_alone', '.2f')})")
    print(f"{detected}; longest gap between any shipments {fig('longest_gap_s', '.3f')} s; "
          f"longest a single buyer waited {fig('longest_client_gap_s', '.3f')} s "
          f"({harness.over_runs(reps)})")
    print(f"results: {out}")
