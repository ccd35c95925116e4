"""Figures for the experiments, drawn with seaborn from the experiments' own CSV rows.

seaborn, pandas and matplotlib are imported by the first figure drawn, not with this
module: they take about 1.5 s to import, which `python -m bench --help`, a refused
argument or a run that fails before its figure should not pay."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["selling_vs_ratio", "failover_series", "autoscale_series", "sweep_panels",
           "staleness_vs_ttl", "durability_bars", "setup_bars"]


@functools.cache
def _imported():
    """(pyplot, pandas, seaborn), imported once, with files as the only output."""
    import matplotlib
    matplotlib.use("Agg")                    # files only; no display needed
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    return plt, pd, sns


def _libs():
    """What a figure draws with, seaborn's whitegrid theme set afresh for it."""
    plt, pd, sns = _imported()
    sns.set_theme(style="whitegrid")
    return plt, pd, sns


def _save(fig, path: Path, dpi: int = 120) -> Path:
    plt = _imported()[0]
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def selling_vs_ratio(rows: list[dict], path: Path) -> Path:
    """Over-sells and actual under-sells (% of buy requests) against buyers:sellers."""
    plt, pd, sns = _libs()
    df = pd.DataFrame(rows).melt(id_vars=["ratio", "split"],
                                 value_vars=["oversell_pct", "undersell_pct"],
                                 var_name="kind", value_name="percent")
    df["kind"] = df["kind"].map({"oversell_pct": "over-sells", "undersell_pct": "actual under-sells"})
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=df, x="ratio", y="percent", hue="kind", marker="o", errorbar="sd", ax=ax)
    ax.set_xscale("log", base=2)
    ticks = df.drop_duplicates("ratio").sort_values("ratio")
    ax.set_xticks(ticks["ratio"], ticks["split"])
    ax.minorticks_off()
    ax.set_xlabel("buyers : sellers (log scale)")
    ax.set_ylabel("% of buy requests")
    ax.set_title("Cached traders: selling errors against the buyer:seller ratio")
    return _save(fig, path, dpi=120)


def failover_series(series: list[dict], killed_at_s: float, path: Path) -> Path:
    """Goods shipped per second over time, with the kill marked."""
    plt, pd, sns = _libs()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.lineplot(data=pd.DataFrame(series), x="t_s", y="shipped_per_s", hue="rep",
                 palette="deep", ax=ax, legend="brief")
    ax.axvline(killed_at_s, color="red", linestyle="--", label="trader 2 killed")
    ax.set_xlabel("seconds since the market started trading")
    ax.set_ylabel("goods shipped per second")
    ax.legend(loc="lower right")
    return _save(fig, path, dpi=120)


def autoscale_series(series: list[dict], decided_s: float | None, path: Path) -> Path:
    """Requests answered per second by each trader over time, with the scale-out marked."""
    plt, pd, sns = _libs()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    df = pd.DataFrame(series)
    df["bin"] = (df["t_s"] * 2).round() / 2              # half-second bins
    per_trader = df.groupby(["bin", "trader"])["requests_per_s"].mean().reset_index()
    total = per_trader.groupby("bin")["requests_per_s"].sum().reset_index()
    total = total.rename(columns={"bin": "t_s"})
    sns.lineplot(data=df, x="t_s", y="requests_per_s", hue="trader", ax=ax)
    ax.plot(total["t_s"], total["requests_per_s"], color="black", linewidth=1, label="all traders")
    if decided_s is not None:
        ax.axvline(decided_s, color="red", linestyle="--", label="scale-out decided")
    ax.set_xlabel("seconds since the market started trading")
    ax.set_ylabel("requests answered per second")
    ax.legend(loc="lower right")
    return _save(fig, path, dpi=120)


SWEEP_LABELS = {"traders": "traders (N_t)", "buyers": "buyers (closed-loop)",
                "ratio": "buyers : sellers", "ttl_s": "cache TTL (s)", "stock": "initial stock"}


def sweep_panels(rows: list[dict], path: Path) -> Path:
    """One column per swept parameter: requests answered/s (top) and goods shipped/s
    (bottom), sync against cached."""
    plt, pd, sns = _libs()
    df = pd.DataFrame(rows)
    sweeps = list(dict.fromkeys(df["sweep"]))
    fig, axes = plt.subplots(2, len(sweeps), figsize=(3.0 * len(sweeps), 5.5), squeeze=False)
    for col, sweep in enumerate(sweeps):
        part = df[df["sweep"] == sweep].copy()
        part["x"] = part["ratio"] if sweep == "ratio" else part[sweep].astype(str)
        for row, metric in enumerate(("rate_per_s", "shipped_per_s")):
            ax = axes[row][col]
            sns.barplot(data=part, x="x", y=metric, hue="mode", hue_order=["sync", "cached"],
                        errorbar="sd", ax=ax, legend=(row == 0 and col == 0))
            ax.set_xlabel(SWEEP_LABELS.get(sweep, sweep) if row == 1 else "")
            ax.set_ylabel(("requests answered/s", "goods shipped/s")[row] if col == 0 else "")
    return _save(fig, path, dpi=110)


def staleness_vs_ttl(rows: list[dict], path: Path) -> Path:
    """Measured stale reads (%) against the TTL, with the model's curves."""
    plt, pd, sns = _libs()
    import numpy as np
    df = pd.DataFrame(rows)
    lam = float(df["write_rate_per_s"].median())
    reads_gap = (df["model_effective_pct"] - df["model_pct"]).abs().max()
    ts = np.geomspace(df["ttl_s"].min() * 0.8, df["ttl_s"].max() * 1.25, 100)
    curve = 100 * (1 - (1 - np.exp(-lam * ts)) / (lam * ts))
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=df, x="ttl_s", y="stale_pct", marker="o", errorbar="sd", ax=ax,
                 label="measured")
    ax.plot(ts, curve, color="gray", linestyle="--", label=f"model, λ = {lam:.1f}/s")
    ax.set_xscale("log")
    ax.set_xlabel("cache TTL T (s, log scale)")
    ax.set_ylabel("stale reads (% of cached reads)")
    ax.set_title(f"Staleness against the TTL (model gap from read spacing ≤ {reads_gap:.1f} pt)")
    ax.legend()
    return _save(fig, path, dpi=120)


def durability_bars(rows: list[dict], path: Path) -> Path:
    """Orders committed per second for each durability setting."""
    plt, pd, sns = _libs()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sns.barplot(data=pd.DataFrame(rows), x="setting", y="rate_per_s", errorbar="sd", ax=ax,
                color="steelblue")
    ax.set_xlabel("")
    ax.set_ylabel("orders committed per second")
    ax.tick_params(axis="x", labelsize=8)
    return _save(fig, path, dpi=120)


def setup_bars(rows: list[dict], path: Path, title: str) -> Path:
    """Requests answered per second for each setup (e.g. chain/real, one-hop/sync/cached)
    at each number of closed-loop clients."""
    plt, pd, sns = _libs()
    fig, ax = plt.subplots(figsize=(6, 3.3))
    sns.barplot(data=pd.DataFrame(rows), x="clients", y="rate_per_s", hue="setup",
                errorbar="sd", ax=ax)
    ax.set_xlabel("closed-loop clients")
    ax.set_ylabel("requests answered per second")
    ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi=120)
