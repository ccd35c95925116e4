"""The launcher's live status line: its text, its drawing in place, and when it is on.
Pure: no market, no terminal."""

import io

import pytest

from pyromarket import start
from pyromarket.status import BAR_WIDTH, StatusLine, format_status


def test_a_timed_run_shows_a_bar_the_counts_and_the_rate():
    text = format_status(15.2, 60.0, (340, 80, 22.37))
    assert text == (f"trading 15/60 s [{'#' * (BAR_WIDTH // 4)}{'-' * (BAR_WIDTH * 3 // 4)}] "
                    f"340 shipped (22.4/s), 80 stocked")


@pytest.mark.parametrize("elapsed, filled", [(0.0, 0), (59.9, BAR_WIDTH - 1), (60.0, BAR_WIDTH),
                                             (61.5, BAR_WIDTH)])
def test_the_bar_fills_with_the_time_and_never_overflows(elapsed, filled):
    bar = format_status(elapsed, 60.0, (0, 0, 0.0)).split("[", 1)[1].split("]", 1)[0]
    assert bar == "#" * filled + "-" * (BAR_WIDTH - filled)


def test_a_run_until_ctrl_c_has_no_bar_and_says_how_to_stop():
    assert format_status(7.0, None, (3, 0, 0.43)) == \
        "trading 7 s (Ctrl-C stops) 3 shipped (0.43/s), 0 stocked"


def test_a_fractional_duration_is_shown_as_given():
    assert format_status(0.2, 0.5, (0, 0, 0.0)).startswith("trading 0/0.5 s [")


def test_a_line_wider_than_the_terminal_is_cut_so_it_never_wraps():
    out = io.StringIO()
    line = StatusLine(out, enabled=True, columns=10)
    line.show("trading 12/60 s [####")
    assert out.getvalue() == "\rtrading 1"


def test_a_silent_warehouse_is_said_instead_of_stale_counts():
    assert format_status(3.0, 10.0, None).endswith("] warehouse not answering")


def test_a_line_is_redrawn_in_place_over_a_longer_one_and_erased():
    out = io.StringIO()
    line = StatusLine(out, enabled=True)
    line.show("trading 1 s long text")
    line.show("short")
    assert out.getvalue() == "\rtrading 1 s long text" + "\rshort".ljust(1 + 21)
    line.clear()
    assert out.getvalue().endswith("\r" + " " * 21 + "\r")
    line.clear()                        # nothing drawn since: nothing written
    assert out.getvalue().count("\r") == 4


def test_a_disabled_line_writes_nothing():
    out = io.StringIO()
    line = StatusLine(out, enabled=False)
    line.show("trading 1 s")
    line.clear()
    assert out.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("argv, stderr, on", [
    ([], io.StringIO(), False),            # piped or redirected: off
    ([], _Terminal(), True),               # a terminal: on
    (["--progress"], io.StringIO(), True),
    (["--no-progress"], _Terminal(), False),
])
def test_the_status_line_is_on_for_a_terminal_unless_a_flag_says_otherwise(
        monkeypatch, argv, stderr, on):
    monkeypatch.setattr("sys.stderr", stderr)
    assert start._wants_progress(start._parse(argv).progress) is on
