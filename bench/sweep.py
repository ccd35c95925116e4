"""Experiment `sweep`: cached against cache-less throughput across the spec's parameters.

Each point is a fresh market: N_t elected traders, seller peers (N_g = 5 every
T_g = 0.25 s, 20 goods/s each) and closed-loop buyers (bench.loadgen --names: like a
buyer peer, a random registered trader per call, 1 unit of a random product, no think
time; the offered load is the number of buyers). Stock starts at 0 (supply-bound, the
scarce market where a cache can deny locally) unless the point says `abundant`. After
a warm-up the buyers measure a steady window; from it come requests answered per
second, latency percentiles (the worst buyer's), goods shipped per second (the
warehouse ledger's view) and warehouse calls per buy (the traders' counters).

The base point is N_t = 2, 4 buyers, 2 sellers, TTL 0.5 s; each sweep varies one of
  traders (N_t 1, 2, 4), buyers (2, 4, 8), ratio (buyers:sellers 2:4, 4:2, 5:1),
  ttl (0.05, 0.5, 2 s; cached only) and stock (scarce, abundant),
in both modes, so the gain (cached ÷ sync) is read per setting.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import harness, plots
from bench.cache import _trader_totals

DESCRIPTION = "cached vs cache-less across N_t, buyers, buyers:sellers, TTL and stock, with plots"
PRODUCTS = "salt,fish,boar"
BASE = {"traders": 2, "buyers": 4, "sellers": 2, "ttl_s": 0.5, "stock": "scarce"}
SWEEPS = {"traders": [1, 2, 4], "buyers": [2, 4, 8], "ratio": [(2, 4), (4, 2), (5, 1)],
          "ttl_s": [0.05, 0.5, 2.0], "stock": ["scarce", "abundant"]}
QUICK = {"traders": [1, 2]}


def points(sweeps: dict) -> list[tuple[str, str, dict]]:
    """(sweep, mode, setting) for every point; the base point appears in each sweep."""
    out = []
    for sweep, values in sweeps.items():
        for value in values:
            point = dict(BASE)
            if sweep == "ratio":
                point["buyers"], point["sellers"] = value
            else:
                point[sweep] = value
            modes = ["cached"] if sweep == "ttl_s" else ["sync", "cached"]
            out += [(sweep, mode, point) for mode in modes]
    return out


def _config(work: Path, mode: str, p: dict) -> dict:
    stock = 10**9 if p["stock"] == "abundant" else 0
    return harness.market_dict(
        work, ["seller"] * p["sellers"] + ["buyer"] * p["traders"], p["traders"],
        traders={"mode": mode}, cache={"ttl_s": p["ttl_s"]},
        warehouse={"synchronous": "FULL", "initial_stock": {k: stock for k in ("salt", "fish", "boar")}},
        sellers={"goods_per_period": 5, "period_s": 0.25})


def _one(work: Path, mode: str, p: dict, warmup_s: float, duration_s: float) -> dict:
    market = harness.start_market(work, _config(work, mode, p))
    try:
        ns = market.cfg.nameserver
        before = _trader_totals(market)
        res = harness.aggregate(harness.run_clients(
            None, p["buyers"], warmup_s, duration_s, products=PRODUCTS,
            names=f"{ns.host}:{ns.port}"), duration_s)
        d = {k: v - before.get(k, 0) for k, v in _trader_totals(market).items()}
    finally:
        market.stop()
    buys = max(1, d.get("buys", 0))
    return {**res, "warehouse_calls_per_buy":
            round((d.get("warehouse_calls", 0) + d.get("revalidations", 0)) / buys, 4),
            "oversell_pct": round(100 * d.get("oversells", 0) / buys, 3)}


def run(args) -> dict:
    sweeps = QUICK if args.quick else SWEEPS
    reps = 1 if args.quick else (args.reps or 2)
    warmup_s, duration_s = (0.5, 1.5) if args.quick else (1.0, min(args.duration, 4.0))
    out = harness.results_dir("sweep", args.out)
    todo = points(sweeps)
    progress = harness.Progress(len(todo) * reps, "sweep")
    rows = []
    for rep in range(reps):
        for i, (sweep, mode, p) in enumerate(todo):
            res = _one(out / f"work-{rep}-{i}", mode, p, warmup_s, duration_s)
            rows.append({"rep": rep, "sweep": sweep, "mode": mode,
                         "ratio": f"{p['buyers']}:{p['sellers']}", **p, **res})
            progress.step(f"{sweep} {mode}")
    summary = _summarize(rows, sweeps)
    harness.write_csv(out / "results.csv", rows)
    plots.sweep_panels(rows, out / "sweep.png")
    harness.write_json(out / "meta.json", {
        "experiment": "sweep", "machine": harness.machine_note(out), "reps": reps,
        "warmup_s": warmup_s, "duration_s": duration_s, "base": BASE, "sweeps": sweeps,
        "synchronous": "FULL", "cpu_pinning": False,
        "config_base": _config(out / "cfg", "cached", BASE), "summary": summary})
    _print(summary, out)
    return summary


def _key(sweep: str, row: dict):
    return row["ratio"] if sweep == "ratio" else row[sweep]


def _summarize(rows: list[dict], sweeps: dict) -> dict:
    out = {}
    for sweep in sweeps:
        mine = [r for r in rows if r["sweep"] == sweep]
        for value in dict.fromkeys(_key(sweep, r) for r in mine):
            at = [r for r in mine if _key(sweep, r) == value]
            entry = {}
            for mode in ("sync", "cached"):
                m = [r for r in at if r["mode"] == mode]
                if m:
                    for k in ("rate_per_s", "shipped_per_s", "p50_ms", "p99_ms",
                              "warehouse_calls_per_buy"):
                        entry[f"{mode}_{k}"] = statistics.median(r[k] for r in m)
            if "sync_rate_per_s" in entry and entry["sync_rate_per_s"]:
                entry["cached_over_sync"] = round(entry["cached_rate_per_s"] / entry["sync_rate_per_s"], 2)
            out[f"{sweep}={value}"] = entry
    return out


def _print(summary: dict, out: Path) -> None:
    print(f"{'point':>16} {'sync req/s':>10} {'cached req/s':>12} {'gain':>5} {'p99 s|c ms':>15} "
          f"{'shipped/s s|c':>14}")
    shown = harness.shown
    for point, e in summary.items():
        print(f"{point:>16} {shown(e.get('sync_rate_per_s'), '.0f'):>10} "
              f"{shown(e['cached_rate_per_s'], '.0f'):>12} {shown(e.get('cached_over_sync')):>5} "
              f"{shown(e.get('sync_p99_ms'), '.2f'):>7}|{shown(e['cached_p99_ms'], '.2f'):<7} "
              f"{shown(e.get('sync_shipped_per_s'), '.1f'):>6}|{shown(e['cached_shipped_per_s'], '.1f')}")
    print(f"results and figure: {out}")
