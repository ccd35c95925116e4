"""The report builder: placeholders come from data, and the committed report is exactly
what the template and the committed data produce (so no number is typed by hand)."""

from __future__ import annotations

import pytest

from writeup import __main__ as build
from writeup import tables


def test_placeholders_are_filled_from_the_data_with_formats():
    data = {"cache": {"summary": {"per_clients": {"8": {"gain": 2.8456}}}}, "ratio": {"n_g": 8}}
    text = build.fill("gain {{cache/summary/per_clients/8/gain|.2f}}x, N_g = {{ ratio/n_g }}", data)
    assert text == "gain 2.85x, N_g = 8"


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


def test_the_committed_report_is_what_the_template_and_data_make():
    data = build.load()
    made = build.GENERATED + build.fill(build.TEMPLATE.read_text(encoding="utf-8"), data)
    assert build.REPORT.read_text(encoding="utf-8") == made, \
        "writeup/report.md is stale or hand-edited: run python -m writeup"
    assert build.PDF.exists() and build.PDF.read_bytes()[:5] == b"%PDF-"
