"""The launcher's live status line: how long the market has traded, and what the
warehouse has shipped and stocked so far, redrawn in place about once a second.

It goes to stderr, so a piped summary on stdout stays clean, and by default only when
stderr is a terminal. `format_status` is pure; `StatusLine` only draws and erases.
"""

from __future__ import annotations

from typing import TextIO

__all__ = ["format_status", "format_rate", "StatusLine", "BAR_WIDTH"]

BAR_WIDTH = 20


def format_rate(per_s: float) -> str:
    """One decimal, but two significant digits where one decimal would read below 1/s: a
    quiet market's 2 goods in 60 s read 0.033/s, not 0.0/s (the status line and the
    launcher's summary alike). A higher rate never reads lower: 0.95 is 0.95, 0.96 is 1.0."""
    tenths = f"{per_s:.1f}"
    return tenths if per_s == 0 or float(tenths) >= 1 else f"{per_s:.2g}"


def format_status(elapsed_s: float, duration_s: float | None,
                  counts: tuple[int, int, float] | None) -> str:
    """`trading 12/60 s [####----] 340 shipped (28.3/s), 80 stocked`. `counts` is
    (shipped, stocked, shipped per second) since trading began, as of the last time the
    warehouse was asked, or None while it does not answer. Without a duration the market
    trades until Ctrl-C, so there is no bar."""
    if duration_s:
        done = min(1.0, max(0.0, elapsed_s / duration_s))
        filled = int(BAR_WIDTH * done)
        head = (f"trading {elapsed_s:.0f}/{duration_s:g} s "
                f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}]")
    else:
        head = f"trading {elapsed_s:.0f} s (Ctrl-C stops)"
    if counts is None:
        return f"{head} warehouse not answering"
    shipped, stocked, per_s = counts
    return f"{head} {shipped} shipped ({format_rate(per_s)}/s), {stocked} stocked"


class StatusLine:
    """One line redrawn in place with a carriage return. `clear()` erases it, so the
    next ordinary line starts at column 0; a disabled line writes nothing. A text wider
    than `columns - 1` is cut there: a line the terminal wrapped could not be redrawn."""

    def __init__(self, stream: TextIO, enabled: bool, columns: int = 80):
        self._stream, self.enabled, self._width = stream, enabled, 0
        self._room = max(1, columns - 1)

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        text = text[:self._room]
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(text))

    def clear(self) -> None:
        if not self.enabled or not self._width:
            return
        self._stream.write("\r" + " " * self._width + "\r")
        self._stream.flush()
        self._width = 0
