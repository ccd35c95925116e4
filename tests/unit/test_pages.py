"""Paged listings (the ledger, a trader's denials): the server chooses the page size, and
the reader goes on until a page comes back empty, so a server that clamps a page never
cuts a listing short."""

from pyromarket.market import _pages


def _server(items, page_max):
    calls = []

    def fetch(start, limit=1_000_000):
        calls.append(start)
        return items[start:start + min(limit, page_max)]
    return fetch, calls


def test_every_item_comes_once_in_order_whatever_page_the_server_chooses():
    for page_max in (1, 3, 8, 100):
        fetch, calls = _server(list(range(8)), page_max)
        assert list(_pages(fetch)) == list(range(8))
        assert len(calls) == -(-8 // page_max) + 1          # the pages, then one empty


def test_a_cursor_resumes_after_the_last_row_seen():
    rows = [{"seq": s} for s in range(1, 8)]

    def ledger(since_seq, limit=3):
        return [r for r in rows if r["seq"] > since_seq][:min(limit, 3)]
    assert [r["seq"] for r in _pages(ledger, start=2, cursor=lambda r: r["seq"])] == [3, 4, 5, 6, 7]


def test_pages_are_fetched_only_as_they_are_consumed():
    fetch, calls = _server(list(range(10)), 2)
    it = _pages(fetch)
    assert [next(it), next(it)] == [0, 1] and calls == [0]
    next(it)
    assert calls == [0, 2]
