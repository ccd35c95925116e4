"""The report's tables, each made from one experiment's data (`{{table:NAME}}` in the template)."""

from __future__ import annotations

from typing import Callable, Iterable


def _md(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None or v != v:          # None or NaN
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
    return str(v)


def core(d: dict) -> str:
    s = d["core"]["summary"]["per_clients"]
    header = ["closed-loop clients", "bare two-hop chain (req/s)", "real, FULL (req/s)",
              "real ÷ chain", "paired within a rep", "real, NORMAL (req/s)", "NORMAL ÷ chain"]
    rows = [[n, e["chain_per_s"], e["real_per_s"], e["ratio"], e.get("paired_ratio"),
             e.get("normal_per_s"), e.get("normal_ratio")] for n, e in s.items()]
    if any(e.get("aa_ratio") is not None for e in s.values()):    # runs with the A/A control
        header.append("A/A: chain-b ÷ chain (paired range)")
        rows = [row + [_aa(e)] for row, e in zip(rows, s.values())]
    return _md(header, rows)


def _aa(e: dict) -> str | None:
    """The A/A control of one row: chain-b ÷ chain, and the range of its paired ratios."""
    if e.get("aa_ratio") is None:
        return None
    low, high = e["aa_paired_range"]
    return f"{e['aa_ratio']:.2f} ({low:.2f}–{high:.2f})"


def cache(d: dict) -> str:
    s = d["cache"]["summary"]["per_clients"]
    return _md(["clients", "one-hop (req/s)", "sync", "cached", "cached ÷ sync", "cached ÷ one-hop",
                "warehouse calls per buy (sync / cached)", "over-sells"],
               [(n, e["one_hop_per_s"], e["sync_per_s"], e["cached_per_s"], e["cached_over_sync"],
                 e["cached_over_one_hop"],
                 f"{e['sync_warehouse_calls_per_buy']:.3f} / {e['cached_warehouse_calls_per_buy']:.4f}",
                 f"{e['cached_oversell_pct']:.2f}%") for n, e in s.items()])


def sweep(d: dict) -> str:
    rows = []
    for point, e in d["sweep"]["summary"].items():
        rows.append((point.replace("ttl_s", "TTL").replace("=", " = "),
                     e.get("sync_rate_per_s"), e.get("cached_rate_per_s"), e.get("cached_over_sync"),
                     _pair(e, "p50_ms"), _pair(e, "p99_ms"), _pair(e, "shipped_per_s"),
                     _pair(e, "warehouse_calls_per_buy")))
    return _md(["point", "sync req/s", "cached req/s", "cached ÷ sync", "p50 ms (s / c)",
                "p99 ms (s / c)", "shipped/s (s / c)", "wh calls per buy (s / c)"], rows)


def _pair(e: dict, key: str) -> str:
    return f"{_cell(e.get('sync_' + key))} / {_cell(e.get('cached_' + key))}"


def ratio(d: dict) -> str:
    s = d["ratio"]["summary"]
    return _md(["buyers : sellers", "over-sells (% of buys)", "actual under-sells (% of buys)"],
               [(k, f"{e['oversell_pct']:.2f}", f"{e['undersell_pct']:.2f}") for k, e in s.items()])


def staleness(d: dict) -> str:
    s = d["staleness"]["summary"]
    return _md(["TTL T (s)", "λ measured (/s)", "stale reads measured", "model (T)", "model (T + 1/r)"],
               [(k, e["write_rate_per_s"], f"{e['stale_pct']:.1f}%", f"{e['model_pct']:.1f}%",
                 f"{e['model_effective_pct']:.1f}%") for k, e in s.items()])


def durability(d: dict) -> str:
    s = d["durability"]["summary"]
    names = {"FULL-256": "FULL, group commit", "FULL-1": "FULL, one commit per order",
             "NORMAL-256": "NORMAL, group commit", "NORMAL-1": "NORMAL, one commit per order"}
    return _md(["setting", "orders/s", "orders per commit", "p50 ms", "p99 ms", "÷ FULL + group"],
               [(names.get(k, k), e["rate_per_s"], e["orders_per_commit"], e["p50_ms"], e["p99_ms"],
                 e["over_full_group"]) for k, e in s.items()])


def failover(d: dict) -> str:
    s = d["failover"]["summary"]
    return _md(["measure", "value"], [
        ("goods shipped/s before the kill (two traders)", s["before_per_s"]),
        ("goods shipped/s after the kill (survivor)", s["after_per_s"]),
        ("after ÷ before", s["after_over_before"]),
        ("one trader alone, same core cap (goods/s)", s["alone_per_s"]),
        ("after ÷ alone", s["after_over_alone"]),
        ("detection: kill → declared dead (s)", s["detection_s"]),
        ("longest gap between any two shipments (s)", s["longest_gap_s"]),
        ("longest a single buyer waited (s)", s["longest_client_gap_s"])])


def autoscale(d: dict) -> str:
    s = d["autoscale"]["summary"]
    rows = [(c, e["req_per_s"], e["traders_serving"]) for c, e in s["by_clients"].items()]
    return _md(["closed-loop clients", "requests answered/s", "traders serving"], rows)


def core_repeats(d: dict, key: str = "core_repeats") -> str:
    r = d[key]
    rows = [(e["started"], e["commit"], e["reps"], e["chain_per_s"], e["real_per_s"], e["ratio"],
             e["paired_ratio"], e["normal_ratio"], _aa(e)) for e in r["runs"]]
    aa = r.get("median_aa_ratio")
    # three places, as in the rows: a median of 0.899 must not read as 0.90
    rows.append(("**median**", "", "", "", "", f"**{r['median_ratio']:.3f}**",
                 f"**{r['median_paired_ratio']:.3f}**", f"**{r['median_normal_ratio']:.3f}**",
                 f"**{aa:.3f}**" if aa is not None else None))
    return _md(["run started", "commit", "reps", "chain (req/s)", "real, FULL (req/s)",
                "real ÷ chain", "paired", "NORMAL ÷ chain", "A/A (paired range)"], rows)


def machine(d: dict) -> str:
    m = d["core"]["machine"]
    total = d.get("manifest", {}).get("total_s")
    return _md(["item", "value"], [
        ("cores", m["cores"]), ("Python / Pyro5", f"{m['python']} / {m['pyro5']}"),
        ("platform", m["platform"]), ("git commit of the run", m["git_commit"][:12]),
        # notes without "finished" predate the fix that takes them at the start of a run
        ("started" if "finished" in m else "core experiment finished", m["started"]),
        ("`python -m bench`, all experiments", f"{total / 60:.1f} min" if total else "–")])


TABLES: dict[str, Callable[[dict], str]] = {
    "core": core, "cache": cache, "sweep": sweep, "ratio": ratio, "staleness": staleness,
    "durability": durability, "failover": failover, "autoscale": autoscale, "machine": machine,
    "core_repeats": core_repeats,
    "core_confirmation": lambda d: core_repeats(d, "core_confirmation")}
