"""Experiment `cache`: cached against cache-less traders in a scarce market.

Two traders, two slow sellers (supply far below demand) and closed-loop buyer processes
spread over the traders, so most buys cannot be filled (`--stock N` starts every product
at N instead of 0, to see the cache's gain vanish in an abundant market). Both modes run in the same
run with the same clients, alternating; beside them, the physical ceiling: the same
clients calling a bare Pyro5 object that does nothing (one hop). Per configuration it
reports buy requests answered per second, goods shipped per second, latency,
warehouse calls per buy request, and the over-sell and actual under-sell rates.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import harness, plots
from pyromarket import rpc

DESCRIPTION = "cached vs cache-less traders in a scarce market, against a bare one-hop call"
PRODUCTS = "salt,fish,boar"


def _market(work: Path, mode: str, ttl_s: float, stock: int):
    data = harness.market_dict(
        work / mode, ["seller", "seller", "buyer", "buyer"], 2,
        traders={"mode": mode}, cache={"ttl_s": ttl_s},
        warehouse={"synchronous": "FULL",
                   "initial_stock": {"salt": stock, "fish": stock, "boar": stock}},
        sellers={"goods_per_period": 1, "period_s": 0.5})
    return harness.start_market(work / mode, data), data


def _trader_totals(market) -> dict:
    total: dict[str, int] = {}
    for uri in market.traders().values():
        with rpc.proxy(uri, 10.0) as t:
            for k, v in t.stats().items():
                if isinstance(v, int):
                    total[k] = total.get(k, 0) + v
    return total


def _measure(market, n: int, warmup_s: float, duration_s: float) -> dict:
    uris = [uri for _, uri in sorted(market.traders().items())]
    before = _trader_totals(market)
    res = harness.aggregate(harness.run_clients(uris, n, warmup_s, duration_s,
                                                products=PRODUCTS), duration_s)
    after = _trader_totals(market)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    buys = max(1, d["buys"])
    return {**res, "warehouse_calls_per_buy": round((d["warehouse_calls"] + d["revalidations"]) / buys, 4),
            "oversell_pct": round(100 * d["oversells"] / buys, 3),
            "local_denial_pct": round(100 * d["local_denials"] / buys, 2)}


def run(args) -> dict:
    clients = [8] if args.quick else [4, 8]
    reps = 1 if args.quick else (args.reps or 3)
    warmup_s, duration_s = (0.5, 1.5) if args.quick else (1.0, args.duration)
    out = harness.results_dir("cache", args.out)
    work = out / "work"
    backend, backend_uri = harness.start_backend(work / "backend")
    markets = {}
    try:
        for mode in ("sync", "cached"):
            markets[mode] = _market(work, mode, args.ttl, args.stock)
        rows, progress = [], harness.Progress(len(clients) * reps * 3, "cache")
        for n in clients:
            for rep in range(reps):
                order = ["one-hop", "sync", "cached"]
                for setup in (order if rep % 2 == 0 else order[::-1]):
                    if setup == "one-hop":
                        row = harness.aggregate(harness.run_clients(
                            backend_uri, n, warmup_s, duration_s, method="call"), duration_s)
                    else:
                        row = _measure(markets[setup][0], n, warmup_s, duration_s)
                    rows.append({"setup": setup, "clients": n, "rep": rep, **row})
                    progress.step(f"{setup} n={n}")
        accuracy = {mode: m.accuracy() for mode, (m, _d) in markets.items()}
    finally:
        for m, _d in markets.values():
            m.stop()
        backend.stop()
    summary = _summarize(rows, clients)
    summary["accuracy_whole_run"] = accuracy
    harness.write_csv(out / "results.csv", rows)
    harness.write_json(out / "meta.json", {
        "experiment": "cache", "machine": harness.machine_note(out), "ttl_s": args.ttl,
        "initial_stock": args.stock,
        "configs": {mode: d for mode, (_m, d) in markets.items()}, "warmup_s": warmup_s,
        "duration_s": duration_s, "reps": reps, "summary": summary})
    plots.setup_bars(rows, out / "cache.png",
                     "Scarce market: cached, cache-less and a bare one-hop call")
    _print(summary, out)
    return summary


def _median(rows, setup, n, key):
    return statistics.median(r[key] for r in rows if r["setup"] == setup and r["clients"] == n)


def _summarize(rows: list[dict], clients: list[int]) -> dict:
    per_n = {}
    for n in clients:
        hop, sync, cached = (_median(rows, s, n, "rate_per_s") for s in ("one-hop", "sync", "cached"))
        per_n[n] = {"one_hop_per_s": hop, "sync_per_s": sync, "cached_per_s": cached,
                    "cached_over_one_hop": round(cached / hop, 3),
                    "cached_over_sync": round(cached / sync, 3),
                    "sync_warehouse_calls_per_buy": _median(rows, "sync", n, "warehouse_calls_per_buy"),
                    "cached_warehouse_calls_per_buy": _median(rows, "cached", n, "warehouse_calls_per_buy"),
                    "cached_oversell_pct": _median(rows, "cached", n, "oversell_pct"),
                    "sync_shipped_per_s": _median(rows, "sync", n, "shipped_per_s"),
                    "cached_shipped_per_s": _median(rows, "cached", n, "shipped_per_s")}
    return {"per_clients": per_n}


def _print(summary: dict, out: Path) -> None:
    print(f"{'clients':>7} {'one-hop/s':>10} {'sync/s':>8} {'cached/s':>9} {'c/hop':>6} "
          f"{'c/sync':>7} {'wh calls/buy s|c':>17} {'oversell%':>9}")
    for n, s in summary["per_clients"].items():
        print(f"{n:>7} {s['one_hop_per_s']:>10.0f} {s['sync_per_s']:>8.0f} {s['cached_per_s']:>9.0f} "
              f"{s['cached_over_one_hop']:>6.2f} {s['cached_over_sync']:>7.2f} "
              f"{s['sync_warehouse_calls_per_buy']:>8.3f}|{s['cached_warehouse_calls_per_buy']:<8.4f} "
              f"{s['cached_oversell_pct']:>9.3f}")
    for mode, a in summary["accuracy_whole_run"].items():
        print(f"{mode}: over-sells {a['oversell_pct']:.3f}%, actual under-sells "
              f"{a['undersell_pct']:.3f}% of {a['buy_requests']} buy requests")
    print(f"results: {out}")
