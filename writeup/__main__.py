"""Build the report: `python -m writeup [--results bench/results/all-<time>]`.

1. With --results, copy each experiment's meta.json and CSVs from a `python -m bench`
   run into writeup/data/ (committed, so the report can be rebuilt without re-running).
2. Redraw every figure from writeup/data/ with bench.plots into writeup/figures/.
3. Fill report.template.md's placeholders from the data: `{{cache/summary/per_clients/8/ratio|.2f}}`
   is a value from data/cache/meta.json (path parts split on "/", an optional format
   after "|"), and `{{table:NAME}}` is a table made by one of TABLES below. No number
   from a bench run is typed by hand.
4. With --core-repeats, keep the 8-client result of several `bench core` runs in
   data/core-repeats.json (one run's ratio is not enough on a noisy machine; appendix A.3
   quotes the spread and the median from this file). --confirmation does the same for the
   pre-registered batch of core-confirmation.md, into data/core-confirmation.json,
   which A.3 judges on its own.
5. Write writeup/report.md (the filled Markdown, readable on its own) and the PDF
   writeup/report.pdf (markdown + xhtml2pdf: `pip install -e '.[report]'`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import sys
from datetime import datetime
from pathlib import Path

import matplotlib
import pandas as pd

from bench import harness, plots
from writeup import diagram, tables

HERE = Path(__file__).resolve().parent
DATA, FIGURES = HERE / "data", HERE / "figures"
TEMPLATE, REPORT, PDF = HERE / "report.template.md", HERE / "report.md", HERE / "report.pdf"
EXPERIMENTS = ("core", "cache", "sweep", "ratio", "staleness", "durability", "failover",
               "autoscale")
REPEATS = DATA / "core-repeats.json"
CONFIRMATION = DATA / "core-confirmation.json"   # the pre-registered batch, judged alone
REPEAT_KEYS = ("real_per_s", "chain_per_s", "ratio", "paired_ratio", "normal_ratio")
AA_KEYS = ("aa_ratio", "aa_paired_range")      # the A/A control; runs before it lack them
GOAL = 0.9                     # the market-core issue's goal for real ÷ chain at 8 clients
PLACEHOLDER = re.compile(r"\{\{\s*([^}|]+?)\s*(?:\|\s*([^}]+?)\s*)?\}\}")


def experiment_folders(results: Path) -> dict[str, Path]:
    """Each experiment's newest folder in one bench run; SystemExit, before anything is
    copied, if one is missing or unfinished (a run stopped early leaves no meta.json)."""
    folders = {}
    for name in EXPERIMENTS:
        found = sorted(f for f in results.glob(f"{name}-*") if (f / "meta.json").exists())
        if not found:
            failed = results / f"{name}.failed.txt"       # bench keeps a failure's traceback
            why = (f"it failed there, see {failed}" if failed.exists()
                   else "run `python -m bench`")
            raise SystemExit(f"error: {results} has no finished {name}-* folder; {why}")
        folders[name] = found[-1]
    return folders


def collect(results: Path, folders: dict[str, Path]) -> None:
    """Copy meta.json and the CSVs of each experiment of one bench run into data/."""
    for name, folder in folders.items():
        target = DATA / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for f in [folder / "meta.json", *folder.glob("*.csv")]:
            shutil.copy(f, target / f.name)
    manifest = results / "manifest.json"
    if manifest.exists():
        shutil.copy(manifest, DATA / "manifest.json")


def collect_repeats(runs: list[Path], clients: str = "8", target: Path | None = None) -> None:
    """The `clients` row of each run's core summary (a `bench core` folder, or a
    `python -m bench` folder holding one), with the median of each ratio, into `target`
    (default REPEATS)."""
    rows = []
    for run in runs:
        metas = ([run / "meta.json"] if (run / "meta.json").exists()
                 else sorted(run.glob("core-*/meta.json")))
        if not metas:
            raise SystemExit(f"error: {run} holds no bench core result (meta.json)")
        meta = json.loads(metas[-1].read_text())
        if meta.get("experiment") != "core" or clients not in meta["summary"]["per_clients"]:
            raise SystemExit(f"error: {metas[-1]} is not a bench core result with {clients} clients")
        entry = meta["summary"]["per_clients"][clients]
        if any(entry.get(k) is None for k in REPEAT_KEYS):
            raise SystemExit(f"error: {metas[-1]} predates the paired and NORMAL columns")
        rows.append({"run": run.name, "commit": meta["machine"]["git_commit"][:7],
                     "started": _started(metas[-1].parent.name, meta), "reps": meta["reps"],
                     **{k: entry[k] for k in REPEAT_KEYS}, **{k: entry.get(k) for k in AA_KEYS}})
    rows.sort(key=lambda r: r["started"])
    summary = {f"median_{k}": round(statistics.median(r[k] for r in rows), 3)
               for k in ("ratio", "paired_ratio", "normal_ratio")}
    summary.update(_aa_summary([r for r in rows if r["aa_ratio"] is not None]))
    for key in ("ratio", "paired_ratio"):
        summary.update(_interval_summary(key, [r[key] for r in rows]))
    summary.update(count=len(rows), clients=int(clients), min_ratio=min(r["ratio"] for r in rows),
                   max_ratio=max(r["ratio"] for r in rows), runs=rows)
    summary["goal_met_at_median"] = all(summary[f"median_{k}"] >= GOAL
                                        for k in ("ratio", "paired_ratio"))
    (target or REPEATS).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def _started(folder: str, meta: dict) -> str:
    """When a run started: its folder's name says (`core-20261124-131411`, made as the run
    began). The note's own time is the fallback; notes taken before that fix were taken
    as the run finished."""
    try:
        made = datetime.strptime(folder.split("-", 1)[1], harness.FOLDER_TIME)
    except (IndexError, ValueError):
        return meta["machine"]["started"]
    return made.strftime("%Y-%m-%d %H:%M:%S")


def _interval_summary(key: str, values: list[float]) -> dict:
    """For one ratio over the runs: the median's 95% interval and how many runs met GOAL."""
    low, high, coverage = median_interval(values) or (None, None, None)
    return {f"{key}_interval": None if low is None else [low, high],
            f"{key}_interval_coverage": coverage,
            f"{key}_at_goal": sum(v >= GOAL for v in values)}


def _aa_summary(controlled: list[dict]) -> dict:
    """The A/A control over the runs that have it: the median chain-b ÷ chain, and the
    lowest and highest ratio of one repetition's pair."""
    if not controlled:
        return {"aa_count": 0, "median_aa_ratio": None, "aa_paired_low": None,
                "aa_paired_high": None}
    return {"aa_count": len(controlled),
            "median_aa_ratio": round(statistics.median(r["aa_ratio"] for r in controlled), 3),
            "aa_paired_low": min(r["aa_paired_range"][0] for r in controlled),
            "aa_paired_high": max(r["aa_paired_range"][1] for r in controlled)}


def median_interval(values: list[float], level: float = 0.95) -> tuple | None:
    """A distribution-free interval for the median: `(low, high, coverage)`, the k-th
    smallest and k-th largest value for the largest k whose coverage (the chance that
    the true median lies between them, from the binomial distribution of how many
    values fall below it) is still at least `level`. None when even the smallest and
    largest value are not enough (fewer than 6 values for 95%)."""
    xs, n = sorted(values), len(values)
    best, below = None, 0.0                   # below: P(fewer than k values below the median)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2 ** n
        if 1 - 2 * below < level:
            break
        best = (xs[k - 1], xs[n - k], round(1 - 2 * below, 3))
    return best


def load() -> dict:
    data: dict = {}
    for name in EXPERIMENTS:
        folder = DATA / name
        if not (folder / "meta.json").exists():
            raise SystemExit(f"error: {folder}/meta.json is missing; build with --results")
        data[name] = json.loads((folder / "meta.json").read_text())
        data[name]["csv"] = {f.stem: pd.read_csv(f).to_dict("records")
                             for f in sorted(folder.glob("*.csv"))}
    for key, path in (("core_repeats", REPEATS), ("core_confirmation", CONFIRMATION)):
        if path.exists():
            data[key] = json.loads(path.read_text())
    if (DATA / "manifest.json").exists():
        data["manifest"] = json.loads((DATA / "manifest.json").read_text())
    dur = data["durability"]["summary"]              # older runs keyed "FULL/256"
    data["durability"]["summary"] = {k.replace("/", "-"): v for k, v in dur.items()}
    return data


def figures(data: dict) -> None:
    FIGURES.mkdir(exist_ok=True)
    diagram.draw(FIGURES / "architecture.png")
    plots.setup_bars(data["core"]["csv"]["results"], FIGURES / "core.png",
                     "Cache-less buys against a bare two-hop chain")
    plots.setup_bars(data["cache"]["csv"]["results"], FIGURES / "cache.png",
                     "Scarce market: cached, cache-less and a bare one-hop call")
    plots.sweep_panels(data["sweep"]["csv"]["results"], FIGURES / "sweep.png")
    plots.selling_vs_ratio(data["ratio"]["csv"]["results"], FIGURES / "selling_vs_ratio.png")
    plots.staleness_vs_ttl(data["staleness"]["csv"]["results"], FIGURES / "staleness.png")
    plots.durability_bars(data["durability"]["csv"]["results"], FIGURES / "durability.png")
    fo = data["failover"]
    killed = pd.DataFrame(fo["csv"]["results"])["killed_at_s"].median()
    plots.failover_series(fo["csv"]["series"], float(killed), FIGURES / "failover.png")
    au = data["autoscale"]
    decided = [r["decided_s"] for r in au["csv"]["results"] if pd.notna(r["decided_s"])]
    plots.autoscale_series([s for s in au["csv"]["series"] if s["rep"] == 0],
                           decided[0] if decided else None, FIGURES / "autoscale.png")


def lookup(data: dict, path: str):
    node = data
    for part in path.split("/"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit():
            node = node[int(part)]
        else:
            raise KeyError(f"report.template.md: no value at {path!r} (stuck at {part!r})")
    return node


def fill(text: str, data: dict) -> str:
    def one(m: re.Match) -> str:
        key, fmt = m.group(1), m.group(2)
        if key.startswith("table:"):
            return tables.TABLES[key[6:]](data)
        value = lookup(data, key)
        if value is None:            # a figure the run did not produce, as in the tables
            return "–"
        return format(value, fmt) if fmt else str(value)
    return PLACEHOLDER.sub(one, text)


def pdf(markdown_text: str, target: Path) -> None:
    try:
        import markdown
        from xhtml2pdf import pisa
    except ImportError:
        raise SystemExit("error: building the PDF needs: pip install -e '.[report]'") from None
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "toc"])
    _register_fonts()
    html = (f"<html><head><meta charset='utf-8'><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")

    def resolve(uri: str, _rel) -> str:
        path = (HERE / uri).resolve()
        return str(path) if path.exists() else uri
    with open(target, "wb") as fh:
        status = pisa.CreatePDF(html, dest=fh, link_callback=resolve, encoding="utf-8")
    if status.err:
        raise SystemExit(f"error: xhtml2pdf reported {status.err} errors")


def _register_fonts() -> None:
    """DejaVu (shipped with matplotlib) for the text, so λ, −, ÷ and → print."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from xhtml2pdf.default import DEFAULT_FONT
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for family, files in (("dejavu", ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique",
                                      "DejaVuSans-BoldOblique")),
                          ("dejavumono", ("DejaVuSansMono",) * 4)):
        for (bold, italic), name in zip(((0, 0), (1, 0), (0, 1), (1, 1)), files):
            face = f"{family}-{bold}{italic}"
            pdfmetrics.registerFont(TTFont(face, str(folder / f"{name}.ttf")))
            addMapping(family, bold, italic, face)
        DEFAULT_FONT[family] = f"{family}-00"


GENERATED = ("<!-- Generated by `python -m writeup` from report.template.md and data/; "
             "edit those, not this file. -->\n\n")

CSS = """
@page { size: a4; margin: 1.8cm 1.8cm 1.8cm 1.8cm;
        @frame footer { -pdf-frame-content: footer; bottom: 0.8cm; height: 0.6cm; } }
body { font-family: dejavu; font-size: 9.5pt; line-height: 1.35; }
h1 { font-size: 18pt; margin-bottom: 4pt; }
h2 { font-size: 13.5pt; margin-top: 12pt; border-bottom: 1px solid #888; -pdf-keep-with-next: true; }
h3 { font-size: 11pt; margin-top: 8pt; -pdf-keep-with-next: true; }
table { margin: 4pt 0 8pt 0; }
th { background-color: #e8e8e8; font-weight: bold; }
td, th { border: 0.5px solid #999; padding: 2pt 3pt; font-size: 8.5pt; }
code { font-family: dejavumono; font-size: 8pt; }
pre { font-family: dejavumono; font-size: 7.5pt; background-color: #f4f4f4; padding: 4pt; }
img { zoom: 80%; }
.pagebreak { page-break-before: always; }
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m writeup", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=None,
                        help="a `python -m bench` run folder (bench/results/all-<time>) to take "
                             "the data from; default: the data already in writeup/data/")
    parser.add_argument("--core-repeats", type=Path, nargs="+", default=None, metavar="RUN",
                        help="`bench core` (or `python -m bench`) run folders whose 8-client "
                             "ratios appendix A.3 lists as repeats; default: the list already "
                             "in writeup/data/core-repeats.json")
    parser.add_argument("--confirmation", type=Path, nargs="+", default=None, metavar="RUN",
                        help="the `bench core` run folders of the pre-registered batch "
                             "(writeup/core-confirmation.md); default: the list already in "
                             "writeup/data/core-confirmation.json")
    parser.add_argument("--no-pdf", action="store_true", help="stop after report.md")
    args = parser.parse_args(argv)
    folders = experiment_folders(args.results) if args.results else None   # checked first
    if args.core_repeats:
        collect_repeats(args.core_repeats)
    if args.confirmation:
        collect_repeats(args.confirmation, target=CONFIRMATION)
    if args.results:
        collect(args.results, folders)
    data = load()
    figures(data)
    text = fill(TEMPLATE.read_text(encoding="utf-8"), data)
    REPORT.write_text(GENERATED + text, encoding="utf-8")
    print(f"wrote {REPORT} and the figures in {FIGURES}")
    if not args.no_pdf:
        pdf(text, PDF)
        print(f"wrote {PDF}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
