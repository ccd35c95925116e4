"""Cached mode against real processes: over-sells, local denials and exact under-sells."""

from __future__ import annotations

QUIET = ["buyer", "seller"]      # both become traders; the test drives them


def test_oversell_local_denial_and_actual_undersell_are_each_counted(start_market):
    market = start_market(QUIET, 2, traders={"mode": "cached"},
                          cache={"ttl_s": 60.0, "reserve_on_forward": True},
                          warehouse={"initial_stock": {"salt": 1, "fish": 0, "boar": 0}})
    with market.trader(1) as t1, market.trader(2) as t2, market.warehouse() as w:
        assert t1.lookup("salt")["stock"] == t2.lookup("salt")["stock"] == 1   # both caches: 1
        # Over-sell: both caches show the last unit, both forward, one is rejected.
        assert t1.buy("salt", 1)["outcome"] == "shipped"
        rejected = t2.buy("salt", 1)
        assert rejected["outcome"] == "unavailable" and not rejected.get("local")
        assert (t2.stats()["forwarded_buys"], t2.stats()["oversells"]) == (1, 1)
        assert w.stats()["rejected"] == 1
        # Local denial: trader 1's fresh cache says 0, so the warehouse never hears of it.
        orders_before = w.stats()["orders"]
        denied = t1.buy("salt", 1)
        assert denied["outcome"] == "unavailable" and denied["local"] is True
        assert t1.stats()["local_denials"] == 1 and w.stats()["orders"] == orders_before
        # Actual under-sell: trader 1 restocks; trader 2's cache (fresh for 60 s) still
        # says 0, so it denies a buy the warehouse could have filled.
        assert t1.sell("salt", 2)["outcome"] == "stocked"
        assert t2.buy("salt", 1)["local"] is True
        assert w.lookup("salt")["stock"] == 2
    acc = market.accuracy()
    assert (acc["buy_requests"], acc["oversells"], acc["local_denials"], acc["undersells"]) \
        == (4, 1, 2, 1)
    assert acc["oversell_pct"] == 25.0 and acc["undersell_pct"] == 25.0


def test_stale_cache_revalidates_with_one_cheap_call(start_market):
    market = start_market(QUIET, 2, traders={"mode": "cached"},
                          cache={"ttl_s": 0.2, "reserve_on_forward": True})
    with market.trader(1) as t1, market.warehouse() as w:
        t1.lookup("salt")
        first = t1.stats()["revalidations"]
        from pyromarket.process import wait_until
        wait_until(lambda: t1.lookup("fish")["age_s"] < 0.2 and t1.stats()["revalidations"] > first,
                   10, "a revalidation after the TTL")
        stats = t1.stats()
        assert stats["revalidations_unchanged"] >= 1          # nothing changed: a 304
        assert w.stats()["revalidations"] == stats["revalidations"]
        assert w.revalidate({"salt": 0, "fish": 0, "boar": 0}) == {}
        assert w.revalidate({"salt": 7}) == {"salt": [10, 0]}
