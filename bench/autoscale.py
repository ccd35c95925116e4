"""Experiment `autoscale`: throughput over time as the load rises and a second trader joins.

One elected trader, pinned to a core (cpu.pin_traders); the launcher pins the replica to
the other core. The load rises in steps: every STEP_S seconds one more closed-loop
client starts (bench.loadgen --names, which like a peer picks a random registered
trader for each call and re-reads the names every 0.5 s), up to STEPS clients. When the
coordinator's count over the sliding window (WINDOW_S) passes THRESHOLD, it launches
trader 2, and the clients start using it. Cached mode with scarce stock, so most buys
are answered from the trader's cache and the trader's CPU is the bottleneck, which is
what one more trader relieves. Every 0.25 s the bench reads each trader's request
counter; from those it reports requests answered per second, per trader and in all, at
each step of the load, just before the scale-out, and with every client running once
trader 2 serves; and the time from the decision to trader 2's first answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

from bench import harness, plots
from pyromarket import rpc
from pyromarket.errors import MarketError
from pyromarket.process import python_module

DESCRIPTION = "requests/s over time as the load rises and autoscaling adds a trader, with a plot"
WINDOW_S, THRESHOLD = 2.0, 4000          # 2000 requests/s per trader
STEPS, STEP_S = 4, 3.0
ROLES = ["seller", "buyer"]             # peer 2 is elected; the load comes from bench.loadgen


def _config(work: Path, threshold: int = THRESHOLD) -> dict:
    return harness.market_dict(
        work, ROLES, 1, traders={"mode": "cached"},
        warehouse={"initial_stock": {"salt": 100, "fish": 100, "boar": 100}},
        sellers={"goods_per_period": 4, "period_s": 0.5}, cpu={"pin_traders": True},
        rpc={"call_timeout_s": 2.0, "warehouse_timeout_s": 1.0},
        autoscale={"enabled": True, "window_s": WINDOW_S, "threshold": threshold,
                   "max_traders": 2, "cooldown_s": 60.0, "replace_failed": False})


def _clients(names: str, begin: float, end: float, steps: int) -> list[subprocess.Popen]:
    """One client more every STEP_S, all calling until `end`."""
    procs = []
    for i in range(steps):
        at = begin + i * STEP_S
        argv = python_module("bench.loadgen", "--names", names, "--products", "salt,fish,boar",
                             "--start-at", str(at), "--warmup-s", "0",
                             "--duration-s", str(end - at))
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, cwd=harness.ROOT))
    return procs


class _Sampler:
    """Each trader's request count, read every `step_s` from the bench process."""

    def __init__(self, market):
        self.market, self.rows, self._proxies = market, [], {}

    def sample(self, t: float) -> dict[int, dict]:
        stats = {}
        for n, uri in self.market.traders().items():
            if n not in self._proxies:
                self._proxies[n] = rpc.proxy(uri, 2.0)
            with contextlib.suppress(MarketError), rpc.translated(f"trader {n}"):
                stats[n] = self._proxies[n].stats()
                self.rows.append({"t": t, "trader": n, "requests": stats[n]["requests"]})
        return stats

    def close(self) -> None:
        for p in self._proxies.values():
            rpc.release(p)


def _rates(rows: list[dict], t0: float, t1: float) -> float:
    """Requests answered per second in [t0, t1], all traders together."""
    total = 0.0
    for n in {r["trader"] for r in rows}:
        mine = [r for r in rows if r["trader"] == n and t0 <= r["t"] <= t1]
        if len(mine) >= 2:
            total += mine[-1]["requests"] - mine[0]["requests"]
    return total / (t1 - t0) if t1 > t0 else 0.0


def _series(rows: list[dict], begin: float, bin_s: float = 0.5) -> list[dict]:
    out = []
    for n in sorted({r["trader"] for r in rows}):
        mine = [r for r in rows if r["trader"] == n]
        for a, b in zip(mine, mine[1:]):
            out.append({"t_s": round(b["t"] - begin, 2), "trader": f"trader {n}",
                        "requests_per_s": (b["requests"] - a["requests"]) / (b["t"] - a["t"])})
    return out


def _one(work: Path, steps: int, hold_s: float, threshold: int) -> dict:
    market = harness.start_market(work, _config(work, threshold))
    sampler = _Sampler(market)
    ns = market.cfg.nameserver
    begin = time.time() + 1.5                    # time for the clients to start up
    full_at = begin + (steps - 1) * STEP_S       # from here on every client runs
    end = full_at + hold_s
    clients = _clients(f"{ns.host}:{ns.port}", begin, end, steps)
    decided = joined = None
    try:
        while time.time() < end:
            now = time.time()
            stats = sampler.sample(now)
            events = stats.get(1, {}).get("scale_events", [])
            decided = decided or (events[0]["at"] if events else None)
            if joined is None and stats.get(2, {}).get("requests", 0) > 0:
                joined = now
            time.sleep(max(0.0, 0.25 - (time.time() - now)))
    finally:
        for p in clients:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        sampler.close()
        market.stop()
    rows = sampler.rows
    before = (max(begin, (decided or end) - 1.5), decided or end)
    after = (max(full_at, (joined or end) + 1.0), end)
    return {"decided_s": round(decided - begin, 2) if decided else None,
            "joined_s": round(joined - begin, 2) if joined else None,
            "launch_to_serving_s": round(joined - decided, 2) if decided and joined else None,
            "clients_when_decided": 1 + int((decided - begin) // STEP_S) if decided else None,
            "before_req_per_s": round(_rates(rows, *before), 1),
            "after_req_per_s": round(_rates(rows, *after), 1),
            "steps": [_step(rows, begin, k, steps, end) for k in range(steps)],
            "series": _series(rows, begin)}


def _step(rows: list[dict], begin: float, k: int, steps: int, end: float) -> dict:
    """Requests/s while k+1 clients ran (the first half second of a step left out)."""
    t0 = begin + k * STEP_S + 0.5
    t1 = end if k == steps - 1 else begin + (k + 1) * STEP_S
    serving = {r["trader"] for r in rows if t0 <= r["t"] <= t1 and r["requests"] > 0}
    return {"clients": k + 1, "req_per_s": round(_rates(rows, t0, t1), 1),
            "traders_serving": len(serving)}


def run(args) -> dict:
    reps = 1 if args.quick else (args.reps or 3)
    steps, hold_s = (2, 3.0) if args.quick else (STEPS, max(args.duration, 6.0))
    threshold = THRESHOLD // 4 if args.quick else THRESHOLD     # quick: scale out at once
    out = harness.results_dir("autoscale", args.out)
    progress = harness.Progress(reps, "autoscale")
    rows, series, step_rows = [], [], []
    for rep in range(reps):
        res = _one(out / f"work-{rep}", steps, hold_s, threshold)
        series += [{"rep": rep, **p} for p in res.pop("series")]
        step_rows += [{"rep": rep, **p} for p in res.pop("steps")]
        rows.append({"rep": rep, **res,
                     "after_over_before": round(res["after_req_per_s"] / res["before_req_per_s"], 3)
                     if res["before_req_per_s"] else None})
        progress.step(f"rep {rep}")
    keys = ("decided_s", "clients_when_decided", "launch_to_serving_s", "before_req_per_s",
            "after_req_per_s", "after_over_before")
    summary = {k: statistics.median(vals) if (vals := [r[k] for r in rows if r[k] is not None])
               else None for k in keys}
    harness.write_csv(out / "results.csv", rows)
    harness.write_csv(out / "series.csv", series)
    harness.write_csv(out / "steps.csv", step_rows)
    by_clients = {c: {"req_per_s": statistics.median(r["req_per_s"] for r in step_rows
                                                     if r["clients"] == c),
                      "traders_serving": max(r["traders_serving"] for r in step_rows
                                             if r["clients"] == c)}
                  for c in sorted({r["clients"] for r in step_rows})}
    summary["by_clients"] = by_clients
    decided = [r["decided_s"] for r in rows if r["decided_s"] is not None]
    plots.autoscale_series([s for s in series if s["rep"] == 0],
                           decided[0] if decided else None, out / "autoscale.png")
    harness.write_json(out / "meta.json", {
        "experiment": "autoscale", "machine": harness.machine_note(out), "reps": reps,
        "window_s": WINDOW_S, "threshold": threshold, "steps": steps, "step_s": STEP_S,
        "hold_s": hold_s,
        "config": _config(out / "cfg", threshold), "summary": summary})
    _print(summary, reps, out)
    return summary


def _print(summary: dict, reps: int, out: Path) -> None:
    """The summary in a few lines. Every figure may be missing (None): no scale-out, a
    launched trader that never answered, no requests before it."""
    def fig(key: str, spec: str) -> str:
        return harness.shown(summary[key], spec)
    if summary["decided_s"] is None:
        print("no scale-out happened: the load never passed the threshold on this machine")
    else:
        n = summary["clients_when_decided"]
        joined = ("trader 2 never answered" if summary["launch_to_serving_s"] is None else
                  f"trader 2 answered {fig('launch_to_serving_s', '.2f')} s after the decision")
        print(f"scale-out decided {fig('decided_s', '.1f')} s in, with {n:g} "
              f"client{'' if n == 1 else 's'}; {joined}")
        print(f"requests answered/s: one trader {fig('before_req_per_s', '.0f')}, two traders "
              f"{fig('after_req_per_s', '.0f')} (after/before {fig('after_over_before', '.2f')}; "
              f"{harness.over_runs(reps)})")
    for c, v in summary["by_clients"].items():
        print(f"  {c} client{'' if c == 1 else 's'}: {v['req_per_s']:.0f} requests/s, up to "
              f"{v['traders_serving']} trader{'' if v['traders_serving'] == 1 else 's'} serving")
    print(f"results: {out}")
