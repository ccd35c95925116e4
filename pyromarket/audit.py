"""After-the-fact accounting from the warehouse ledger. Pure: rows in, numbers out.

The ledger records the stock after every operation with a timestamp, and every process
shares this machine's clock, so the stock at any instant is known exactly. A trader's
local denial of a buy is an *actual* under-sell only if the warehouse held at least the
quantity asked for at that instant; this module decides that, with no estimate.

It streams: the ledger in sequence order and the denials in time order are walked
together, once, so an audit of a long run holds one page of each, not the run.
"""

from __future__ import annotations

import heapq
from typing import Iterable, Mapping, Sequence

__all__ = ["undersells", "in_time_order", "rates"]


def undersells(seed: Mapping[str, int], ledger_rows: Iterable[Mapping],
               denials: Iterable[Sequence]) -> tuple[int, int]:
    """(denials, actual under-sells): how many (time, product, qty) denials there were,
    and how many came while the warehouse could have filled them.

    `ledger_rows` in sequence order (their timestamps never decrease: the warehouse
    commits one batch at a time) and `denials` in time order; the stock at a denial's
    instant is the seed changed by every row stamped at or before it."""
    stock = dict(seed)
    rows = iter(ledger_rows)
    row = next(rows, None)
    count = under = 0
    for t, product, qty in denials:
        count += 1
        while row is not None and row["ts"] <= t:
            stock[row["product"]] = row["stock_after"]
            row = next(rows, None)
        if stock.get(product, 0) >= qty:
            under += 1
    return count, under


def in_time_order(*streams: Iterable[Sequence]) -> Iterable[Sequence]:
    """Several traders' denials, each stream already in time order, as one stream."""
    return heapq.merge(*streams, key=lambda d: d[0])


def rates(buy_requests: int, oversells: int, undersells: int) -> dict:
    """Both as a percentage of buy requests."""
    pct = (lambda n: round(100.0 * n / buy_requests, 3)) if buy_requests else (lambda n: 0.0)
    return {"buy_requests": buy_requests, "oversells": oversells, "undersells": undersells,
            "oversell_pct": pct(oversells), "undersell_pct": pct(undersells)}
