"""After-the-fact accounting from the warehouse ledger. Pure: rows in, numbers out.

The ledger records the stock after every operation with a timestamp, and every process
shares this machine's clock, so the stock at any instant is known exactly. A trader's
local denial of a buy is an *actual* under-sell only if the warehouse held at least the
quantity asked for at that instant; this module decides that, with no estimate.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Mapping, Sequence

__all__ = ["StockTimeline", "actual_undersells", "rates"]


class StockTimeline:
    """The stock of every product as a step function of time."""

    def __init__(self, seed: Mapping[str, int], ledger_rows: Iterable[Mapping]):
        self._times: dict[str, list[float]] = {p: [] for p in seed}
        self._stocks: dict[str, list[int]] = {p: [] for p in seed}
        self._seed = dict(seed)
        for row in sorted(ledger_rows, key=lambda r: r["seq"]):
            self._times.setdefault(row["product"], []).append(row["ts"])
            self._stocks.setdefault(row["product"], []).append(row["stock_after"])

    def at(self, product: str, t: float) -> int:
        """The committed stock of `product` at time t (after every op stamped <= t)."""
        i = bisect.bisect_right(self._times.get(product, []), t)
        return self._stocks[product][i - 1] if i else self._seed.get(product, 0)


def actual_undersells(denials: Iterable[Sequence], timeline: StockTimeline) -> int:
    """How many (time, product, qty) denials came while the warehouse could have filled them."""
    return sum(1 for t, product, qty in denials if timeline.at(product, t) >= qty)


def rates(buy_requests: int, oversells: int, undersells: int) -> dict:
    """Both as a percentage of buy requests."""
    pct = (lambda n: round(100.0 * n / buy_requests, 3)) if buy_requests else (lambda n: 0.0)
    return {"buy_requests": buy_requests, "oversells": oversells, "undersells": undersells,
            "oversell_pct": pct(oversells), "undersell_pct": pct(undersells)}
