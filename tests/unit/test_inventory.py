"""The two inventory strategies and the under-sell audit, with fakes: no sockets."""

import os
import tempfile

import pytest

from pyromarket.audit import in_time_order, rates, undersells
from pyromarket.cache import InventoryCache
from pyromarket.denials import DenialFile
from pyromarket.inventory import CachedInventory, SyncInventory
from pyromarket.orders import Order


class FakeWarehouse:
    def __init__(self, **stock):
        self.stock = {p: [s, 1] for p, s in stock.items()}
        self.orders = []

    def forward(self, order):
        self.orders.append(order)
        stock, version = self.stock[order.product]
        if order.kind == "sell":
            stock, version, outcome = stock + order.qty, version + 1, "stocked"
        elif stock >= order.qty:
            stock, version, outcome = stock - order.qty, version + 1, "shipped"
        else:
            outcome = "unavailable"
        self.stock[order.product] = [stock, version]
        return {"outcome": outcome, "product": order.product, "qty": order.qty,
                "request_id": order.request_id, "stock": stock, "version": version,
                "replayed": False}

    def fetch(self, held):
        return {p: tuple(sv) for p, sv in self.stock.items() if held.get(p) != sv[1]}


def buy(rid, qty=1, product="salt"):
    return Order("buy", product, qty, rid)


_OPEN: list = []


@pytest.fixture(autouse=True)
def _close_inventories():
    yield
    while _OPEN:
        _OPEN.pop().close()


def cached(wh, reserve=True, now=lambda: 0.0, ttl=10.0):
    cache = InventoryCache(["salt"], ttl_s=ttl, clock=now)
    inv = CachedInventory(wh.forward, wh.fetch, cache, reserve, timeout_s=1.0,
                          denials=DenialFile(tempfile.gettempdir(), ["salt", "fish"]),
                          wall_clock=lambda: 50.0)
    _OPEN.append(inv)
    return inv


def test_sync_forwards_every_buy():
    wh = FakeWarehouse(salt=0)
    inv = SyncInventory(wh.forward, lookup=lambda p: {})
    assert inv.buy(buy("a"))["outcome"] == "unavailable"
    assert len(wh.orders) == 1 and inv.snapshot()["forwarded_buys"] == 1


def test_cached_denies_locally_when_the_cache_says_no():
    wh = FakeWarehouse(salt=0)
    inv = cached(wh)
    reply = inv.buy(buy("a"))
    assert reply["outcome"] == "unavailable" and reply["local"] is True
    assert wh.orders == []                                   # no warehouse call
    assert inv.snapshot()["local_denials"] == 1
    assert inv.denials_since(0, 10) == [(50.0, "salt", 1)]


def test_cached_forwards_what_it_can_fill_and_learns_from_the_reply():
    wh = FakeWarehouse(salt=2)
    inv = cached(wh)
    assert inv.buy(buy("a", 2))["outcome"] == "shipped"
    assert inv.cache.peek("salt").stock == 0                # learned from the reply, for free
    assert inv.buy(buy("b"))["local"] is True               # so the next is denied locally
    assert len(wh.orders) == 1


def test_over_sell_is_a_forwarded_buy_the_warehouse_rejects():
    wh = FakeWarehouse(salt=1)
    inv = cached(wh)
    inv.lookup("salt")                                       # cache: 1
    wh.stock["salt"] = [0, 2]                                # another trader took it
    reply = inv.buy(buy("a"))
    assert reply["outcome"] == "unavailable" and "local" not in reply
    snap = inv.snapshot()
    assert (snap["forwarded_buys"], snap["oversells"]) == (1, 1)
    assert inv.cache.peek("salt").stock == 0                 # refreshed from the rejection


def test_sell_is_forwarded_and_updates_the_cache():
    wh = FakeWarehouse(salt=0)
    inv = cached(wh)
    inv.lookup("salt")
    assert inv.sell(Order("sell", "salt", 4, "s"))["outcome"] == "stocked"
    assert inv.cache.peek("salt").stock == 4


def test_reservation_stops_a_second_buy_chasing_the_same_unit():
    wh = FakeWarehouse(salt=1)
    inv = cached(wh, reserve=True)
    inv.lookup("salt")
    assert inv.cache.reserve("salt", 1)                      # as if a forward were in flight
    assert inv.buy(buy("b"))["local"] is True


def test_without_reservation_the_cache_only_reads():
    wh = FakeWarehouse(salt=1)
    inv = cached(wh, reserve=False)
    inv.buy(buy("a"))
    assert inv.cache.peek("salt").stock == 0 and len(wh.orders) == 1


def test_lookup_answers_from_a_fresh_cache():
    wh = FakeWarehouse(salt=3)
    inv = cached(wh)
    first = inv.lookup("salt")
    wh.stock["salt"] = [9, 5]
    assert inv.lookup("salt")["stock"] == 3 == first["stock"] and first["cached"] is True


def test_the_audit_reads_the_stock_at_each_denial_s_instant():
    rows = [{"seq": 1, "product": "salt", "ts": 10.0, "stock_after": 4},
            {"seq": 2, "product": "fish", "ts": 11.0, "stock_after": 7},
            {"seq": 3, "product": "salt", "ts": 12.0, "stock_after": 0}]
    seed = {"salt": 5, "fish": 0}
    # one denial of qty 5/4/1 per instant: an under-sell only if the stock then was >= qty
    assert undersells(seed, rows, [(9.0, "salt", 5)]) == (1, 1)        # seed 5
    assert undersells(seed, rows, [(10.0, "salt", 5)]) == (1, 0)       # 4 from t=10 on
    assert undersells(seed, rows, [(11.9, "salt", 4)]) == (1, 1)
    assert undersells(seed, rows, [(12.0, "salt", 1)]) == (1, 0)       # 0 from t=12 on
    assert undersells(seed, rows, [(10.5, "fish", 1)]) == (1, 0)
    assert undersells(seed, rows, [(11.0, "fish", 7)]) == (1, 1)


def test_actual_undersells_count_only_denials_the_warehouse_could_fill():
    rows = [{"seq": 1, "product": "salt", "ts": 10.0, "stock_after": 2},
            {"seq": 2, "product": "salt", "ts": 20.0, "stock_after": 0}]
    denials = [(5.0, "salt", 1),     # stock 0: a true denial
               (15.0, "salt", 1),    # stock 2: an under-sell
               (15.0, "salt", 3),    # stock 2 < 3: a true denial
               (25.0, "salt", 1)]    # stock 0: a true denial
    assert undersells({"salt": 0}, rows, denials) == (4, 1)


def test_the_audit_merges_traders_denials_and_reads_no_ledger_past_the_last_one():
    def rows():
        yield {"seq": 1, "product": "salt", "ts": 10.0, "stock_after": 2}
        yield {"seq": 2, "product": "salt", "ts": 20.0, "stock_after": 0}
        raise AssertionError("read a ledger row no denial needed")
    one, two = [(5.0, "salt", 1), (15.0, "salt", 1)], [(12.0, "salt", 2), (16.0, "salt", 3)]
    assert undersells({"salt": 0}, rows(), in_time_order(one, two)) == (4, 2)
    assert undersells({"salt": 0}, rows(), []) == (0, 0)


def test_denials_are_read_back_by_index_in_the_order_made(tmp_path):
    f = DenialFile(str(tmp_path), ["salt", "fish"])
    for i in range(5):
        f.append(100.0 + i, ["salt", "fish"][i % 2], i + 1)
    assert f.read(0, 2) == [(100.0, "salt", 1), (101.0, "fish", 2)]
    assert f.read(3, 10) == [(103.0, "fish", 4), (104.0, "salt", 5)]
    assert f.read(5, 10) == [] and f.read(2**62, 10) == [] and f.count == 5
    assert list(tmp_path.iterdir()) == []        # the file has no name: nothing left behind
    f.close()


class _Disk:
    """os for denials.py, with a pwrite that a test can make refuse or cut short."""

    def __init__(self):
        self.full, self.cut_after = False, None

    def pwrite(self, fd, data, offset):
        if self.full:
            raise OSError(28, "No space left on device")
        if self.cut_after is not None:
            n, self.cut_after, self.full = self.cut_after, None, True     # then full
            return os.pwrite(fd, bytes(data[:n]), offset)
        return os.pwrite(fd, data, offset)

    pread = staticmethod(os.pread)


def test_denials_the_disk_refuses_are_counted_not_raised(tmp_path, monkeypatch):
    """Once the disk was full, every local denial raised OSError to its buyer, and the
    audit's read did too."""
    from pyromarket import denials
    disk = _Disk()
    monkeypatch.setattr(denials, "os", disk)
    f = DenialFile(str(tmp_path), ["salt", "fish"])
    n = denials.WRITE_RECORDS
    for i in range(n - 1):
        f.append(float(i), "salt", 1)
    disk.cut_after = 25                      # the disk takes a record and a bit, then is full
    f.append(float(n - 1), "fish", 2)        # the write of the first n records
    assert f.read(0, 2 * n) == [(0.0, "salt", 1)] and f.lost == n - 1
    for i in range(n):
        f.append(1000.0 + i, "salt", 3)      # refused: never raised
    assert f.read(0, 2 * n) == [(0.0, "salt", 1)] and f.lost == 2 * n - 1
    disk.full = False
    f.append(5000.0, "fish", 4)
    assert f.read(1, 10) == [(5000.0, "fish", 4)]   # over the cut-off record, in its place
    assert f.count == 2 and f.lost == 2 * n - 1
    f.close()


@pytest.mark.parametrize("buys,expected", [(200, (1.5, 0.5)), (0, (0.0, 0.0))])
def test_rates_are_percentages_of_buy_requests(buys, expected):
    r = rates(buys, 3, 1)
    assert (r["oversell_pct"], r["undersell_pct"]) == expected


def test_a_retried_buy_goes_to_the_warehouse_even_when_the_cache_says_no():
    wh = FakeWarehouse(salt=1)
    inv = cached(wh)
    first = wh.forward(buy("r1"))                 # attempt 1 was applied; its reply was lost
    assert first["outcome"] == "shipped"
    inv.lookup("salt")                            # the cache now says 0
    assert inv.buy(buy("other"))["local"] is True
    retried = inv.buy_at_warehouse(buy("r1"))     # attempt 2 of r1
    assert "local" not in retried and wh.orders[-1].request_id == "r1"
