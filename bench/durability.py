"""Experiment `durability`: what fsync costs, and what group commit buys back.

A quiet market (two traders, no buyer or seller peers); closed-loop clients call the
warehouse's own `sell` directly, so every call is one order to commit. Four warehouse
settings: `synchronous` FULL (fsync at every commit: survives power loss) or NORMAL
(WAL synced at checkpoints only: survives a process crash, may lose the last commits on
power loss), each with group commit (batch_max 256: concurrent orders share one
transaction) and without it (batch_max 1: one transaction, one fsync, per order).
Reports orders committed per second, orders per commit and latency, per setting.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import harness, plots
from pyromarket import rpc

DESCRIPTION = "synchronous FULL vs NORMAL, with and without group commit (warehouse alone)"
SETTINGS = [("FULL", 256), ("FULL", 1), ("NORMAL", 256), ("NORMAL", 1)]


def _config(work: Path, sync: str, batch_max: int) -> dict:
    return harness.market_dict(work, ["buyer", "buyer"], 2,
                               warehouse={"synchronous": sync, "batch_max": batch_max})


def _one(work: Path, sync: str, batch_max: int, clients: int, warmup_s: float,
         duration_s: float) -> dict:
    market = harness.start_market(work, _config(work, sync, batch_max))
    try:
        ns = market.cfg.nameserver
        with rpc.translated("name server"), rpc.nameserver(ns.host, ns.port) as proxy:
            uri = str(proxy.lookup(rpc.WAREHOUSE_NAME))
        with market.warehouse() as w:
            before = w.stats()
        res = harness.aggregate(harness.run_clients(uri, clients, warmup_s, duration_s,
                                                    method="sell"), duration_s)
        with market.warehouse() as w:
            after = w.stats()
    finally:
        market.stop()
    batches = max(1, after["batches"] - before["batches"])
    return {**res, "orders_per_commit": round((after["orders"] - before["orders"]) / batches, 2)}


def run(args) -> dict:
    settings = [SETTINGS[0], SETTINGS[1]] if args.quick else SETTINGS
    reps = 1 if args.quick else (args.reps or 2)
    clients = 8
    warmup_s, duration_s = (0.5, 1.5) if args.quick else (1.0, min(args.duration, 4.0))
    out = harness.results_dir("durability", args.out)
    progress = harness.Progress(len(settings) * reps, "durability")
    rows = []
    for rep in range(reps):
        for sync, batch in (settings if rep % 2 == 0 else settings[::-1]):
            res = _one(out / f"work-{rep}-{sync}-{batch}", sync, batch, clients, warmup_s,
                       duration_s)
            rows.append({"rep": rep, "synchronous": sync, "batch_max": batch,
                         "setting": f"{sync}, {'group commit' if batch > 1 else 'no batching'}",
                         "clients": clients, **res})
            progress.step(f"{sync} {batch}")
    summary = {}
    for sync, batch in settings:
        mine = [r for r in rows if r["synchronous"] == sync and r["batch_max"] == batch]
        summary[f"{sync}-{batch}"] = {k: statistics.median(r[k] for r in mine)
                                      for k in ("rate_per_s", "orders_per_commit", "p50_ms", "p99_ms")}
    base = summary["FULL-256"]["rate_per_s"]
    for s in summary.values():
        s["over_full_group"] = round(s["rate_per_s"] / base, 2) if base else None
    harness.write_csv(out / "results.csv", rows)
    plots.durability_bars(rows, out / "durability.png")
    harness.write_json(out / "meta.json", {
        "experiment": "durability", "machine": harness.machine_note(out), "reps": reps,
        "clients": clients, "warmup_s": warmup_s, "duration_s": duration_s,
        "configs": {f"{s}-{b}": _config(out / "cfg", s, b) for s, b in settings},
        "summary": summary})
    _print(summary, out)
    return summary


def _print(summary: dict, out: Path) -> None:
    """The summary as a table; medians of an even number of runs are rounded (3.99, not
    3.9939999999999998)."""
    print(f"{'setting':>12} {'orders/s':>9} {'per commit':>10} {'p50 ms':>7} {'p99 ms':>7} {'÷ FULL+group':>12}")
    for k, s in summary.items():
        print(f"{k:>12} {s['rate_per_s']:>9.0f} {s['orders_per_commit']:>10.2f} {s['p50_ms']:>7.2f} "
              f"{s['p99_ms']:>7.2f} {harness.shown(s['over_full_group']):>12}")
    print(f"results and figure: {out}")
