"""The TTL + version cache, with a fake clock: no sockets, no sleeps."""

import threading

import pytest

from pyromarket.cache import UNKNOWN, InventoryCache
from pyromarket.errors import Unavailable


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Warehouse:
    """A fake warehouse answering revalidations ETag-style; counts calls."""

    def __init__(self, **stock):
        self.state = {p: (s, 1) for p, s in stock.items()}
        self.calls = []

    def fetch(self, held):
        self.calls.append(dict(held))
        return {p: sv for p, sv in self.state.items() if p in held and held[p] != sv[1]}

    def set(self, product, stock):
        self.state[product] = (stock, self.state[product][1] + 1)


@pytest.fixture
def clock():
    return Clock()


def test_first_read_is_a_miss_that_fetches_every_product_in_one_call(clock):
    wh = Warehouse(salt=5, fish=2)
    cache = InventoryCache(["salt", "fish"], ttl_s=1.0, clock=clock)
    e = cache.fresh("salt", wh.fetch, timeout_s=1)
    assert (e.stock, e.version) == (5, 1)
    assert wh.calls == [{"salt": UNKNOWN, "fish": UNKNOWN}]
    assert cache.peek("fish").stock == 2                  # the same call filled fish
    assert cache.stats["misses"] == 1 and cache.stats["revalidations"] == 1


def test_fresh_entry_is_a_hit_with_no_call(clock):
    wh = Warehouse(salt=5)
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    cache.fresh("salt", wh.fetch, 1)
    clock.now += 0.99
    assert cache.fresh("salt", wh.fetch, 1).stock == 5
    assert len(wh.calls) == 1 and cache.stats["hits"] == 1


def test_stale_entry_revalidates_and_finds_nothing_changed(clock):
    wh = Warehouse(salt=5)
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    cache.fresh("salt", wh.fetch, 1)
    clock.now += 1.0
    e = cache.fresh("salt", wh.fetch, 1)
    assert wh.calls[-1] == {"salt": 1}                    # sends the version it holds
    assert e.stock == 5 and e.fetched_at == clock.now     # a 304 makes it fresh again
    assert cache.stats["revalidations_unchanged"] == 1


def test_stale_entry_revalidates_and_adopts_new_data(clock):
    wh = Warehouse(salt=5)
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    cache.fresh("salt", wh.fetch, 1)
    wh.set("salt", 0)
    clock.now += 2.0
    e = cache.fresh("salt", wh.fetch, 1)
    assert (e.stock, e.version) == (0, 2)
    assert cache.stats["revalidations_unchanged"] == 0


def test_older_reply_never_overwrites_a_newer_entry(clock):
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    assert cache.observe("salt", 3, 7) is True
    assert cache.observe("salt", 9, 6) is False           # late reply, older version
    assert (cache.peek("salt").stock, cache.peek("salt").version) == (3, 7)
    assert cache.observe("salt", 2, 8) is True
    assert cache.peek("salt").stock == 2


def test_same_version_is_a_confirmation_that_refreshes_and_corrects_stock(clock):
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    cache.observe("salt", 3, 7)
    cache.reserve("salt", 2)                              # local, optimistic
    clock.now += 0.5
    cache.observe("salt", 3, 7)                           # the warehouse still says 3 @ v7
    e = cache.peek("salt")
    assert (e.stock, e.fetched_at) == (3, clock.now)


def test_reserve_takes_stock_only_when_it_suffices(clock):
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    assert cache.reserve("salt", 1) is False              # nothing known
    cache.observe("salt", 2, 1)
    assert cache.reserve("salt", 2) is True
    assert cache.reserve("salt", 1) is False
    assert cache.peek("salt").stock == 0


def test_many_concurrent_stale_readers_cause_one_revalidation(clock):
    gate, entered = threading.Event(), threading.Event()
    calls = []

    def slow_fetch(held):
        calls.append(held)
        entered.set()
        assert gate.wait(5)
        return {"salt": (4, 1)}

    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    results = []
    readers = [threading.Thread(target=lambda: results.append(cache.fresh("salt", slow_fetch, 5)))
               for _ in range(16)]
    readers[0].start()
    assert entered.wait(5)
    for r in readers[1:]:
        r.start()
    for _ in range(1000):                                 # all 15 followers are waiting
        if cache.stats["misses"] == 16:
            break
        threading.Event().wait(0.002)
    gate.set()
    for r in readers:
        r.join(5)
    assert len(calls) == 1
    assert [e.stock for e in results] == [4] * 16


def test_failed_revalidation_raises_and_the_next_read_retries(clock):
    wh = Warehouse(salt=5)
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)

    def down(held):
        raise Unavailable("warehouse down")
    with pytest.raises(Unavailable):
        cache.fresh("salt", down, 1)
    assert cache.fresh("salt", wh.fetch, 1).stock == 5


def test_follower_gives_up_after_its_timeout(clock):
    gate, entered = threading.Event(), threading.Event()

    def stuck(held):
        entered.set()
        gate.wait(5)
        return {}
    cache = InventoryCache(["salt"], ttl_s=1.0, clock=clock)
    leader = threading.Thread(target=lambda: pytest.raises(Unavailable, cache.fresh, "salt", stuck, 5))
    leader.start()
    assert entered.wait(5)
    with pytest.raises(Unavailable, match="longer than"):
        cache.fresh("salt", stuck, timeout_s=0.01)
    gate.set()
    leader.join(5)
