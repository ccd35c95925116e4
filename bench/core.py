"""Experiment `core`: real cache-less buys against a bare two-hop Pyro5 chain.

Same run, same load generators, same number of client processes (1, 4, 8):
  chain:       client -> middle -> backend that does nothing (bench.chain)
  real:        client -> trader -> warehouse, a real SQLite buy with synchronous=FULL
  real-normal: the same with synchronous=NORMAL (no fsync per commit), a diagnostic
  chain-b:     a second chain in processes of its own, an A/A control
The ratio real/chain says how much the business logic and durability cost beyond the
transport; real-normal/chain says how much of that is the fsync; chain-b/chain, two
identical setups, says how far apart this run can put two things that are the same,
which is the resolution of the other two ratios. The setups take turns within each
repetition, and the summary gives both the ratio of medians and the median of ratios
paired within a repetition (seconds apart, so machine drift cancels). Around each
real-market measurement it reads the trader's counters, so the summary also gives each
market's orders per warehouse call and a call's mean time per client count.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import harness, plots

# the real markets measured: the goal's (FULL), and one without the fsync, which
# splits the gap to the chain into what durability costs and what the rest costs
MARKETS = {"real": "FULL", "real-normal": "NORMAL"}
DESCRIPTION = "cache-less buys (trader -> warehouse, FULL) vs a bare two-hop Pyro5 chain"


def run(args) -> dict:
    clients = [1, 4] if args.quick else [1, 4, 8]
    reps = 1 if args.quick else (args.reps or 4)
    warmup_s, duration_s = (0.5, 1.5) if args.quick else (1.0, args.duration)
    out = harness.results_dir("core", args.out)
    work = out / "work"
    chain_services, chain_uri = harness.start_chain(work / "chain")
    chain_b_services, chain_b_uri = harness.start_chain(work / "chain-b")
    chain_services += chain_b_services
    configs = {setup: _market_config(work / setup, sync) for setup, sync in MARKETS.items()}
    markets = {}
    rows = []
    progress = harness.Progress(len(clients) * reps * (2 + len(MARKETS)), "core")
    try:
        for setup, data in configs.items():
            markets[setup] = harness.start_market(work / setup, data)
        targets = {"chain": (chain_uri, "call"),
                   **{setup: (m.traders()[1], "buy") for setup, m in markets.items()},
                   "chain-b": (chain_b_uri, "call")}
        for n in clients:
            for rep in range(reps):
                for setup in _rotated(list(targets), rep):
                    uri, method = targets[setup]
                    before = _link_totals(uri) if setup in MARKETS else None
                    res = harness.run_clients(uri, n, warmup_s, duration_s, method=method)
                    rows.append({"setup": setup, "clients": n, "rep": rep,
                                 **harness.aggregate(res, duration_s),
                                 **(_link_delta(before, _link_totals(uri)) if before else {})})
                    progress.step(f"{setup} n={n}")
        with markets["real"].warehouse() as w:
            wstats = w.stats()
        with harness.rpc.proxy(targets["real"][0], 5) as t:
            tstats = t.stats()
    finally:
        for m in markets.values():
            m.stop()
        for s in chain_services:
            s.stop()
    summary = _summarize(rows, clients)
    summary["warehouse_orders_per_commit"] = wstats["orders_per_commit"]
    summary["warehouse_commit_ms"] = wstats["commit_ms"]
    summary["warehouse_apply_ms"] = wstats["apply_ms"]
    summary["trader_warehouse_call_ms"] = tstats["warehouse_call_ms"]
    summary["warehouse_calls_per_buy"] = round(tstats["warehouse_calls"] / max(1, tstats["buys"]), 3)
    harness.write_csv(out / "results.csv", rows)
    harness.write_json(out / "meta.json", {"experiment": "core", "machine": harness.machine_note(out),
                                           "config": configs["real"], "warmup_s": warmup_s,
                                           "duration_s": duration_s, "reps": reps,
                                           "summary": summary})
    plots.setup_bars(rows, out / "core.png", "Cache-less buys against a bare two-hop chain")
    _print(summary, out)
    return summary


def _market_config(workdir: Path, synchronous: str) -> dict:
    return harness.market_dict(workdir, ["buyer"], 1,
                               warehouse={"synchronous": synchronous,
                                          "initial_stock": {"salt": 10**12, "fish": 0, "boar": 0}},
                               max_quantity=100)


def _link_totals(trader_uri: str) -> dict:
    """The trader's cumulative warehouse-link counters: calls, orders (cache-less, every
    buy is one order) and the time spent in calls."""
    with harness.rpc.proxy(trader_uri, 10.0) as t:
        s = t.stats()
    return {"calls": s["warehouse_calls"], "orders": s["buys"] + s["sells"],
            "call_ms": s["warehouse_call_ms"] * s["warehouse_calls"]}


def _link_delta(before: dict, after: dict) -> dict:
    """One measurement's batches: orders per warehouse call, and a call's mean time (the
    warmup included; taken outside the timed window)."""
    calls = max(1, after["calls"] - before["calls"])
    return {"orders_per_call": round((after["orders"] - before["orders"]) / calls, 2),
            "warehouse_call_ms": round((after["call_ms"] - before["call_ms"]) / calls, 3)}


def _rotated(setups: list[str], rep: int) -> list[str]:
    """Each repetition starts with the next setup, so slow drift hits every one alike."""
    k = rep % len(setups)
    return setups[k:] + setups[:k]


def _summarize(rows: list[dict], clients: list[int]) -> dict:
    """Per client count: medians, their ratio, and the median of the ratios paired within
    a repetition (measured seconds apart, so machine drift cancels)."""
    per_n = {}
    for n in clients:
        rate = {(r["setup"], r["rep"]): r["rate_per_s"] for r in rows if r["clients"] == n}
        reps = sorted({rep for _, rep in rate})
        med = {setup: statistics.median(v for (s, _), v in rate.items() if s == setup)
               for setup in ("chain", *MARKETS, "chain-b")}
        per_n[n] = {"chain_per_s": med["chain"], "real_per_s": med["real"],
                    "ratio": round(med["real"] / med["chain"], 3),
                    "paired_ratio": _paired(rate, "real", reps),
                    "normal_per_s": med["real-normal"],
                    "normal_ratio": round(med["real-normal"] / med["chain"], 3),
                    "normal_paired_ratio": _paired(rate, "real-normal", reps),
                    "aa_ratio": round(med["chain-b"] / med["chain"], 3),
                    "aa_paired_ratio": _paired(rate, "chain-b", reps),
                    "aa_paired_range": _paired_range(rate, "chain-b", reps),
                    **_batches(rows, n)}
    return {"per_clients": per_n}


def _batches(rows: list[dict], n: int) -> dict:
    """Per real market at `n` clients: the median orders per warehouse call and call time,
    which say whether a faster commit bought throughput or only smaller batches."""
    out = {}
    for key, digits in (("orders_per_call", 2), ("warehouse_call_ms", 3)):
        out[key] = {setup: round(statistics.median(r[key] for r in rows
                                                   if r["setup"] == setup and r["clients"] == n),
                                 digits)
                    for setup in MARKETS}
    return out


def _per_rep(rate: dict, setup: str, reps: list[int]) -> list[float]:
    """`setup`'s rate over the chain's, within each repetition."""
    return [rate[(setup, rep)] / rate[("chain", rep)] for rep in reps]


def _paired(rate: dict, setup: str, reps: list[int]) -> float:
    return round(statistics.median(_per_rep(rate, setup, reps)), 3)


def _paired_range(rate: dict, setup: str, reps: list[int]) -> list[float]:
    ratios = _per_rep(rate, setup, reps)
    return [round(min(ratios), 3), round(max(ratios), 3)]


def _print(summary: dict, out: Path) -> None:
    print(f"{'clients':>7} {'chain/s':>9} {'real/s':>9} {'real/chain':>10} {'paired':>7} "
          f"{'NORMAL/s':>9} {'NORMAL/chain':>12} {'A/A':>5}")
    for n, s in summary["per_clients"].items():
        print(f"{n:>7} {s['chain_per_s']:>9.0f} {s['real_per_s']:>9.0f} {s['ratio']:>10.2f} "
              f"{s['paired_ratio']:>7.2f} {s['normal_per_s']:>9.0f} {s['normal_ratio']:>12.2f} "
              f"{s['aa_ratio']:>5.2f}")
    for n, s in summary["per_clients"].items():
        print(f"{n} clients: orders per warehouse call " + ", ".join(
            f"{setup} {s['orders_per_call'][setup]} ({s['warehouse_call_ms'][setup]} ms a call)"
            for setup in MARKETS))
    print(f"warehouse orders per commit: {summary['warehouse_orders_per_commit']}; "
          f"warehouse calls per buy: {summary['warehouse_calls_per_buy']}; a trader's warehouse "
          f"call {summary['trader_warehouse_call_ms']} ms, of which apply "
          f"{summary['warehouse_apply_ms']} ms, of which the commit {summary['warehouse_commit_ms']} ms")
    print(f"results: {out}")
