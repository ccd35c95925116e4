"""Experiment `core`: real cache-less buys against a bare two-hop Pyro5 chain.

Same run, same load generators, same number of client processes (1, 4, 8):
  chain: client -> middle -> backend that does nothing (bench.chain)
  real:  client -> trader -> warehouse, a real SQLite buy with synchronous=FULL
The ratio real/chain says how much the business logic and durability cost beyond the
transport. Chain and real alternate within each repetition so drift hits both.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import harness, plots

DESCRIPTION = "cache-less buys (trader -> warehouse, FULL) vs a bare two-hop Pyro5 chain"


def run(args) -> dict:
    clients = [1, 4] if args.quick else [1, 4, 8]
    reps = 1 if args.quick else (args.reps or 3)
    warmup_s, duration_s = (0.5, 1.5) if args.quick else (1.0, args.duration)
    out = harness.results_dir("core", args.out)
    work = out / "work"
    chain_services, chain_uri = harness.start_chain(work / "chain")
    data = harness.market_dict(work / "market", ["buyer"], 1,
                               warehouse={"synchronous": "FULL",
                                          "initial_stock": {"salt": 10**12, "fish": 0, "boar": 0}},
                               max_quantity=100)
    market = harness.start_market(work / "market", data)
    rows = []
    progress = harness.Progress(len(clients) * reps * 2, "core")
    try:
        trader_uri = market.traders()[1]
        for n in clients:
            for rep in range(reps):
                order = [("chain", chain_uri, "call"), ("real", trader_uri, "buy")]
                for setup, uri, method in (order if rep % 2 == 0 else order[::-1]):
                    res = harness.run_clients(uri, n, warmup_s, duration_s, method=method)
                    rows.append({"setup": setup, "clients": n, "rep": rep,
                                 **harness.aggregate(res, duration_s)})
                    progress.step(f"{setup} n={n}")
        with market.warehouse() as w:
            wstats = w.stats()
        with harness.rpc.proxy(trader_uri, 5) as t:
            tstats = t.stats()
    finally:
        market.stop()
        for s in chain_services:
            s.stop()
    summary = _summarize(rows, clients)
    summary["warehouse_orders_per_commit"] = wstats["orders_per_commit"]
    summary["warehouse_calls_per_buy"] = round(tstats["warehouse_calls"] / max(1, tstats["buys"]), 3)
    harness.write_csv(out / "results.csv", rows)
    harness.write_json(out / "meta.json", {"experiment": "core", "machine": harness.machine_note(),
                                           "config": data, "warmup_s": warmup_s,
                                           "duration_s": duration_s, "reps": reps,
                                           "summary": summary})
    plots.setup_bars(rows, out / "core.png", "Cache-less buys against a bare two-hop chain")
    _print(summary, out)
    return summary


def _summarize(rows: list[dict], clients: list[int]) -> dict:
    per_n = {}
    for n in clients:
        chain = statistics.median(r["rate_per_s"] for r in rows if r["setup"] == "chain" and r["clients"] == n)
        real = statistics.median(r["rate_per_s"] for r in rows if r["setup"] == "real" and r["clients"] == n)
        per_n[n] = {"chain_per_s": chain, "real_per_s": real, "ratio": round(real / chain, 3)}
    return {"per_clients": per_n}


def _print(summary: dict, out: Path) -> None:
    print(f"{'clients':>7} {'chain/s':>9} {'real/s':>9} {'real/chain':>10}")
    for n, s in summary["per_clients"].items():
        print(f"{n:>7} {s['chain_per_s']:>9.0f} {s['real_per_s']:>9.0f} {s['ratio']:>10.2f}")
    print(f"warehouse orders per commit: {summary['warehouse_orders_per_commit']}; "
          f"warehouse calls per buy: {summary['warehouse_calls_per_buy']}")
    print(f"results: {out}")
