"""The report builder: placeholders come from data, and the committed report is exactly
what the template and the committed data produce (so no number is typed by hand)."""

from __future__ import annotations

import json

import pytest

from writeup import __main__ as build
from writeup import tables


def test_placeholders_are_filled_from_the_data_with_formats():
    data = {"cache": {"summary": {"per_clients": {"8": {"gain": 2.8456}}}}, "ratio": {"n_g": 8}}
    text = build.fill("gain {{cache/summary/per_clients/8/gain|.2f}}x, N_g = {{ ratio/n_g }}", data)
    assert text == "gain 2.85x, N_g = 8"


def test_a_figure_the_run_did_not_produce_reads_as_a_dash():
    """A failover run whose kill was never detected has detection_s None; the report
    still builds, and shows it as its tables show a missing figure."""
    data = {"failover": {"summary": {"detection_s": None}}}
    text = build.fill("declared dead {{failover/summary/detection_s|.2f}} s after", data)
    assert text == "declared dead – s after"


def test_an_unknown_placeholder_is_an_error_naming_it():
    with pytest.raises(KeyError, match="cache/nope"):
        build.fill("{{cache/nope}}", {"cache": {}})


def test_tables_render_markdown_rows():
    data = {"ratio": {"summary": {"1:7": {"oversell_pct": 0.0, "undersell_pct": 0.26},
                                  "4:4": {"oversell_pct": 2.345, "undersell_pct": 15.2}}}}
    text = tables.ratio(data)
    lines = text.splitlines()
    assert lines[0].startswith("| buyers : sellers |") and len(lines) == 4
    assert "| 4:4 | 2.35 | 15.20 |" in text


def test_core_table_shows_the_a_a_column_only_for_runs_that_measured_it():
    row = {"chain_per_s": 2500.0, "real_per_s": 2250.0, "ratio": 0.9, "paired_ratio": 0.91,
           "normal_per_s": 2200.0, "normal_ratio": 0.88}
    before = tables.core({"core": {"summary": {"per_clients": {"8": row}}}})
    assert "A/A" not in before and before.splitlines()[-1].endswith("| 0.880 |")
    row = {**row, "aa_ratio": 0.98, "aa_paired_range": [0.93, 1.04]}
    after = tables.core({"core": {"summary": {"per_clients": {"8": row}}}}).splitlines()
    assert "A/A" in after[0] and after[-1].endswith("| 0.98 (0.93–1.04) |")


def test_the_committed_report_is_what_the_template_and_data_make():
    data = build.load()
    made = build.GENERATED + build.fill(build.TEMPLATE.read_text(encoding="utf-8"), data)
    assert build.REPORT.read_text(encoding="utf-8") == made, \
        "writeup/report.md is stale or hand-edited: run python -m writeup"
    assert build.PDF.exists() and build.PDF.read_bytes()[:5] == b"%PDF-"


def _core_run(folder, started: str, ratio: float, normal: float | None = 0.8,
              aa: float | None = None):
    folder.mkdir(parents=True)
    row = {"real_per_s": 2000.0, "chain_per_s": 2000.0 / ratio, "ratio": ratio,
           "paired_ratio": ratio + 0.01, "normal_ratio": normal}
    if aa is not None:                       # runs since the A/A control carry it
        row.update(aa_ratio=aa, aa_paired_range=[round(aa - 0.05, 3), round(aa + 0.05, 3)])
    meta = {"experiment": "core", "reps": 4, "summary": {"per_clients": {"8": row}},
            "machine": {"git_commit": "abcdef1234567890", "started": started}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_core_repeats_keep_every_run_in_time_order_with_the_medians(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "REPEATS", tmp_path / "repeats.json")
    runs = [_core_run(tmp_path / "core-b", "2026-11-24 09:00:00", 0.95, aa=0.97),
            _core_run(tmp_path / "all-a" / "core-x", "2026-11-24 08:00:00", 0.75).parent,
            _core_run(tmp_path / "core-c", "2026-11-24 10:00:00", 0.85, aa=1.01)]
    build.collect_repeats(runs)
    made = json.loads((tmp_path / "repeats.json").read_text())
    assert [r["ratio"] for r in made["runs"]] == [0.75, 0.95, 0.85]
    assert (made["median_ratio"], made["min_ratio"], made["max_ratio"]) == (0.85, 0.75, 0.95)
    assert made["median_paired_ratio"] == 0.86 and made["count"] == 3
    # the A/A median is over the runs that have the control only (the oldest has none)
    assert (made["median_aa_ratio"], made["aa_count"]) == (0.99, 2)
    assert (made["aa_paired_low"], made["aa_paired_high"]) == (0.92, 1.06)
    assert made["ratio_interval"] is None          # three runs cannot give a 95% interval
    assert made["paired_ratio_interval"] is None
    assert (made["ratio_at_goal"], made["paired_ratio_at_goal"]) == (1, 1)   # 0.95 (0.96) only
    table = tables.core_repeats({"core_repeats": made}).splitlines()
    assert table[-1].startswith("| **median** |") and "**0.850**" in table[-1]
    assert table[-1].endswith("| **0.990** |")
    assert table[2].endswith("| – |") and table[3].endswith("| 0.97 (0.92–1.02) |")


def test_a_run_started_when_its_folder_was_made_not_when_its_note_was_taken(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(build, "REPEATS", tmp_path / "repeats.json")
    runs = [_core_run(tmp_path / "core-20261124-131411", "2026-11-24 13:20:30", 0.9),
            _core_run(tmp_path / "all-20261124-104846" / "core-20261124-104850",
                      "2026-11-24 10:55:02", 0.8).parent]
    build.collect_repeats(runs)
    made = json.loads((tmp_path / "repeats.json").read_text())
    assert [r["started"] for r in made["runs"]] == ["2026-11-24 10:48:50", "2026-11-24 13:14:11"]


def test_median_interval_is_the_order_statistics_that_cover_the_median():
    # the textbook cases: 6 values give min..max (1 - 2/64), 13 the 3rd..11th, and
    # 100 the 40th..61st; 5 values cannot reach 95% at all
    assert build.median_interval([6, 1, 5, 2, 4, 3]) == (1, 6, 0.969)
    assert build.median_interval(list(range(13, 0, -1))) == (3, 11, 0.978)
    assert build.median_interval(list(range(1, 101)))[:2] == (40, 61)
    assert build.median_interval([1, 2, 3, 4, 5]) is None
    low, high, coverage = build.median_interval(list(range(1, 30)), level=0.5)
    assert low < 15 < high and 0.5 <= coverage < 0.95


def test_core_repeats_refuse_a_folder_without_a_core_result(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "REPEATS", tmp_path / "repeats.json")
    old = _core_run(tmp_path / "core-old", "2026-11-24 01:00:00", 0.7, normal=None)
    (old / "empty").mkdir()
    with pytest.raises(SystemExit, match="predates"):
        build.collect_repeats([old])
    with pytest.raises(SystemExit, match="no bench core result"):
        build.collect_repeats([tmp_path / "core-old" / "empty"])
    assert not (tmp_path / "repeats.json").exists()


def test_a_partial_bench_run_is_refused_before_any_data_is_replaced(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "core").mkdir(parents=True)
    (data / "core" / "meta.json").write_text('{"kept": true}')
    monkeypatch.setattr(build, "DATA", data)
    run = tmp_path / "all-20261124-180000"
    for name in build.EXPERIMENTS[:-1]:                  # autoscale never finished...
        (run / f"{name}-20261124-180000").mkdir(parents=True)
        (run / f"{name}-20261124-180000" / "meta.json").write_text('{"new": true}')
    (run / "autoscale-20261124-182000").mkdir()          # ...so it has no meta.json
    with pytest.raises(SystemExit, match="no finished autoscale-"):
        build.main(["--results", str(run), "--no-pdf"])
    assert (data / "core" / "meta.json").read_text() == '{"kept": true}'
    assert sorted(p.name for p in data.iterdir()) == ["core"]
    (run / "autoscale.failed.txt").write_text("Traceback ...\nRuntimeError: boom\n")
    with pytest.raises(SystemExit, match=r"no finished autoscale-.*autoscale\.failed\.txt"):
        build.main(["--results", str(run), "--no-pdf"])


def test_the_confirmation_batch_is_judged_alone_by_both_medians(tmp_path, monkeypatch):
    # the pre-registered rule (writeup/core-confirmation.md): met if the median ratio and
    # the median paired ratio are both at least 0.9, over the batch's own runs only
    monkeypatch.setattr(build, "REPEATS", tmp_path / "repeats.json")
    monkeypatch.setattr(build, "CONFIRMATION", tmp_path / "confirmation.json")

    def batch(name: str, ratios: list[float]) -> dict:
        runs = [_core_run(tmp_path / name / f"core-20261124-1{i}0000", "x", r, aa=1.0)
                for i, r in enumerate(ratios)]
        build.collect_repeats(runs, target=build.CONFIRMATION)
        return json.loads((tmp_path / "confirmation.json").read_text())

    met = batch("met", [0.92, 0.88, 0.95])
    assert (met["median_ratio"], met["median_paired_ratio"]) == (0.92, 0.93)
    assert met["goal_met_at_median"] is True and met["count"] == 3
    assert batch("edge", [0.90, 0.85, 0.95])["goal_met_at_median"] is True   # 0.90 counts
    missed = batch("missed", [0.89, 0.80, 0.95])
    assert missed["median_ratio"] == 0.89 and missed["goal_met_at_median"] is False
    assert not (tmp_path / "repeats.json").exists()       # the pooled list is untouched
    table = tables.TABLES["core_confirmation"]({"core_confirmation": missed}).splitlines()
    assert table[-1].startswith("| **median** |") and "**0.890**" in table[-1]
