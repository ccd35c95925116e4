"""Experiment `ratio`: over-selling (and actual under-selling) against buyers:sellers.

Two cached traders; eight trading peers split between buyers and sellers at each ratio
(1:7 ... 7:1), all real peer processes. Sellers accrue N_g = 8 goods every T_g = 0.25 s
(32 goods/s each); a buyer asks for 1-2 units every 20 ms plus its call, about 60-70
units/s. So supply exceeds demand up to about 2:6 and falls well short beyond 4:4: the
sweep crosses from abundance, where caches rarely matter, through the balance point,
where a cache most often shows a last unit the other trader has just sold, into
scarcity, where most buys are denied from the cache.
Each point is a fresh market traded for --duration seconds; the rates come from
Market.accuracy() (over-sells counted by the traders, under-sells decided from the
ledger) as a percentage of buy requests.
"""

from __future__ import annotations

import statistics
import time

from bench import harness, plots

DESCRIPTION = "over- and under-selling against the buyer:seller ratio (cached mode), with a plot"
SPLITS = [(1, 7), (2, 6), (4, 4), (6, 2), (7, 1)]
N_G, T_G = 8, 0.25


def _config(work, buyers: int, sellers: int) -> dict:
    return harness.market_dict(
        work, ["buyer"] * buyers + ["seller"] * sellers + ["buyer", "buyer"], 2,
        traders={"mode": "cached"}, warehouse={"initial_stock": {"salt": 0, "fish": 0, "boar": 0}},
        buyers={"pace_s": 0.02, "max_qty": 2},
        sellers={"goods_per_period": N_G, "period_s": T_G})


def _one(work, buyers: int, sellers: int, duration_s: float) -> dict:
    market = harness.start_market(work, _config(work, buyers, sellers))
    try:
        time.sleep(duration_s)
        market.stop_clients()
        acc = market.accuracy()
    finally:
        market.stop()
    return {"buyers": buyers, "sellers": sellers, "ratio": buyers / sellers,
            "split": f"{buyers}:{sellers}", **acc}


def run(args) -> dict:
    splits = [SPLITS[0], SPLITS[2], SPLITS[4]] if args.quick else SPLITS
    reps = 1 if args.quick else (args.reps or 3)
    duration_s = 3.0 if args.quick else max(args.duration, 10.0)
    out = harness.results_dir("ratio", args.out)
    progress = harness.Progress(len(splits) * reps, "ratio")
    rows = []
    for rep in range(reps):
        for b, s in splits:
            rows.append({"rep": rep, **_one(out / f"work-{rep}-{b}-{s}", b, s, duration_s)})
            progress.step(f"{b}:{s}")
    summary = {f"{b}:{s}": {k: statistics.median(r[k] for r in rows if r["buyers"] == b)
                            for k in ("oversell_pct", "undersell_pct")} for b, s in splits}
    harness.write_csv(out / "results.csv", rows)
    figure = plots.selling_vs_ratio(rows, out / "selling_vs_ratio.png")
    harness.write_json(out / "meta.json", {
        "experiment": "ratio", "machine": harness.machine_note(out), "reps": reps,
        "duration_s": duration_s, "n_g": N_G, "t_g_s": T_G, "summary": summary,
        "config_4_4": _config(out / "cfg", 4, 4),
        "figure": figure.name})
    print(f"{'buyers:sellers':>14} {'over-sell %':>11} {'under-sell %':>12}")
    for split, s in summary.items():
        print(f"{split:>14} {s['oversell_pct']:>11.3f} {s['undersell_pct']:>12.3f}")
    print(f"results and figure: {out}")
    return summary
