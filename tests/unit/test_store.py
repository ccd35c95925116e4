"""The warehouse store: atomic batches, idempotent replay, durability, audit."""

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from pyromarket import config
from pyromarket.errors import (ConflictingRequest, FencedOut, InvalidRequest, UnknownProduct,
                               Unavailable)
from pyromarket.eventlog import EventLog
from pyromarket.orders import MAX_STOCK, Order
from pyromarket.store import (SHIPPED, STOCKED, UNAVAILABLE, WAREHOUSE_TABLES, DatabaseInUse,
                              NotAWarehouseDatabase, Store, conservation, lock_database)
from pyromarket.warehouse import _open_store
from tests.helpers import config_dict, write_config


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "wh.sqlite3"), {"salt": 5, "fish": 0})
    yield s
    s.close()


def buy(rid, product="salt", qty=1):
    return Order("buy", product, qty, rid, "trader 1")


def sell(rid, product="salt", qty=1):
    return Order("sell", product, qty, rid, "trader 1")


def test_buy_ships_when_stock_suffices_and_bumps_the_version(store):
    [r] = store.apply([buy("a", qty=3)], now=1.0)
    assert (r["outcome"], r["stock"], r["version"], r["replayed"]) == (SHIPPED, 2, 1, False)
    assert store.lookup("salt") == {"product": "salt", "stock": 2, "version": 1}


def test_buy_beyond_stock_is_unavailable_and_changes_nothing(store):
    [r] = store.apply([buy("a", qty=6)], now=1.0)
    assert (r["outcome"], r["stock"], r["version"]) == (UNAVAILABLE, 5, 0)
    assert store.lookup("salt")["stock"] == 5


def test_sell_increments(store):
    [r] = store.apply([sell("s", "fish", 4)], now=1.0)
    assert (r["outcome"], r["stock"], r["version"]) == (STOCKED, 4, 1)


def test_batch_applies_in_order_and_never_goes_negative(store):
    results = store.apply([buy(f"b{i}", qty=2) for i in range(4)], now=1.0)
    assert [r["outcome"] for r in results] == [SHIPPED, SHIPPED, UNAVAILABLE, UNAVAILABLE]
    assert store.lookup("salt")["stock"] == 1


def test_replay_returns_recorded_outcome_and_applies_nothing(store):
    first = store.apply([buy("same", qty=2)], now=1.0)[0]
    again = store.apply([buy("same", qty=2)], now=2.0)[0]
    assert again["outcome"] == first["outcome"] == SHIPPED
    assert again["replayed"] is True
    assert store.lookup("salt")["stock"] == 3
    assert len(store.ledger()) == 1


def test_replay_within_one_batch_applies_once(store):
    results = store.apply([buy("dup", qty=1), buy("dup", qty=1)], now=1.0)
    assert [r["replayed"] for r in results] == [False, True]
    assert store.lookup("salt")["stock"] == 4


def test_replayed_rejection_stays_rejected_even_after_restock(store):
    assert store.apply([buy("x", qty=9)], now=1.0)[0]["outcome"] == UNAVAILABLE
    store.apply([sell("s", qty=20)], now=2.0)
    assert store.apply([buy("x", qty=9)], now=3.0)[0]["outcome"] == UNAVAILABLE


def test_conflicting_replay_is_refused_and_changes_nothing(store):
    store.apply([buy("id1", qty=1)], now=1.0)
    [r] = store.apply([buy("id1", qty=2)], now=2.0)
    assert isinstance(r, ConflictingRequest)
    [r] = store.apply([sell("id1", qty=1)], now=2.0)
    assert isinstance(r, ConflictingRequest)
    assert store.lookup("salt")["stock"] == 4


def test_an_id_reused_in_one_batch_or_with_an_unknown_product_is_refused(store):
    first, again, other = store.apply([buy("id1"), buy("id1", qty=2), Order("buy", "gold", 1, "id1")],
                                      now=1.0)
    assert first["outcome"] == SHIPPED and not first["replayed"]
    assert isinstance(again, ConflictingRequest) and isinstance(other, ConflictingRequest)
    assert [r["request_id"] for r in store.ledger()] == ["id1"]
    assert store.lookup("salt") == {"product": "salt", "stock": 4, "version": 1}


def test_refusal_in_a_batch_does_not_stop_the_others(store):
    results = store.apply([buy("ok1"), Order("buy", "gold", 1, "bad"), buy("ok2")], now=1.0)
    assert isinstance(results[1], UnknownProduct)
    assert results[0]["outcome"] == results[2]["outcome"] == SHIPPED


def test_a_sell_past_the_most_a_product_may_hold_is_refused_alone(tmp_path):
    """SQLite ints stop at 2**63 - 1; a sell past that used to raise OverflowError in the
    middle of the transaction, and every other order of its batch failed with it."""
    s = Store(str(tmp_path / "wh.sqlite3"), {"salt": MAX_STOCK - 5, "fish": 2})
    try:
        fish, huge, fits = s.apply([buy("a", "fish"), sell("b", qty=6), sell("c", qty=5)], 1.0)
        assert fish["outcome"] == SHIPPED and fits["outcome"] == STOCKED
        assert isinstance(huge, InvalidRequest) and "past" in str(huge)
        assert s.lookup("salt")["stock"] == MAX_STOCK and s.lookup("fish")["stock"] == 1
        assert [r["request_id"] for r in s.ledger()] == ["a", "c"]
    finally:
        s.close()


def test_storage_failure_rolls_back_the_whole_batch(store, monkeypatch):
    real = store._apply_one
    calls = []

    def flaky(order, staged, now):
        calls.append(order)
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real(order, staged, now)
    monkeypatch.setattr(store, "_apply_one", flaky)
    results = store.apply([buy("a"), buy("b")], now=1.0)
    assert all(isinstance(r, Unavailable) for r in results)
    assert store.lookup("salt") == {"product": "salt", "stock": 5, "version": 0}
    assert store.ledger() == []


def test_a_full_database_refuses_the_batch_loses_nothing_and_recovers(store):
    """A real SQLITE_FULL (the page limit stands in for a full disk): the batch fails as
    a whole with an error the trader retries, the committed state is untouched, and once
    there is room the same request ids commit, each once."""
    store.apply([sell("s0", "fish", 3)], now=1.0)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    big = [sell(f"r{i}-" + "x" * 120, "fish") for i in range(50)]   # needs new pages
    results = store.apply(big, now=2.0)
    assert all(isinstance(r, Unavailable) and "full" in str(r) for r in results)
    assert store.lookup("fish") == {"product": "fish", "stock": 3, "version": 1}
    assert [r["request_id"] for r in store.ledger()] == ["s0"]
    assert not store._db.in_transaction
    store._db.execute(f"PRAGMA max_page_count = {pages * 100}")
    assert all(r["outcome"] == STOCKED for r in store.apply(big, now=3.0))
    assert [r["replayed"] for r in store.apply(big[:2], now=4.0)] == [True, True]
    assert store.lookup("fish")["stock"] == 3 + 50
    assert len(store.ledger()) == 51


def test_join_and_fence_on_storage_that_refuses_writes_are_unavailable_and_change_nothing(
        store):
    """The warehouse's other writes fail as a batch does when the storage refuses
    (query_only stands in for a read-only or failing disk): Unavailable, which a trader
    retries, nothing granted or fenced, and no transaction left open. Before, SQLite's
    own error reached the trader as an internal error, which it did not retry."""
    e1 = store.join(1)
    store._db.execute("PRAGMA query_only = 1")
    with pytest.raises(Unavailable, match="warehouse storage failed: attempt to write"):
        store.join(2)
    with pytest.raises(Unavailable, match="warehouse storage failed: attempt to write"):
        store.fence(1)
    assert not store._db.in_transaction and not store.is_fenced(e1)
    assert store._db.execute("SELECT trader FROM epochs").fetchall() == [(1,)]
    store._db.execute("PRAGMA query_only = 0")
    assert store.join(2) > e1
    assert store.fence(1) == e1 and store.is_fenced(e1)


def test_a_non_sqlite_failure_rolls_back_and_leaves_no_transaction_open(store, monkeypatch):
    real = store._apply_one

    def buggy(order, staged, now):
        if order.request_id == "b":
            raise TypeError("a bug")
        return real(order, staged, now)
    monkeypatch.setattr(store, "_apply_one", buggy)
    with pytest.raises(TypeError):
        store.apply([buy("a"), buy("b")], now=1.0)
    assert store.ledger() == [] and store.lookup("salt")["stock"] == 5
    assert store.apply([buy("c")], now=2.0)[0]["outcome"] == SHIPPED     # the next batch commits
    assert [r["request_id"] for r in store.ledger()] == ["c"]


def test_a_second_store_on_the_same_file_is_refused_naming_the_holder(store):
    with pytest.raises(DatabaseInUse, match=rf"in use by another warehouse \(pid {os.getpid()}\)"):
        Store(store.path, {"salt": 5})
    assert store.apply([buy("a")], now=1.0)[0]["outcome"] == SHIPPED     # the first is unharmed


def test_a_lock_whose_pid_cannot_be_written_still_locks(tmp_path, monkeypatch):
    """On a full disk, writing the holder's pid fails. The flock is the lock, so it is
    still taken (and `--fresh` can still delete the database to free the space); a second
    taker is refused, told only that the holder is unknown."""
    path = str(tmp_path / "wh.sqlite3")

    def full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    fd = lock_database(path)
    monkeypatch.undo()
    try:
        with pytest.raises(DatabaseInUse, match=r"in use by another warehouse \(pid unknown\)"):
            os.close(lock_database(path))
    finally:
        os.close(fd)
    os.close(lock_database(path))


def test_the_lock_dies_with_its_process_even_by_kill_9(tmp_path):
    path = str(tmp_path / "wh.sqlite3")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pyromarket.store "
                               "import lock_database; lock_database(sys.argv[1]); print(1, "
                               "flush=True); time.sleep(60)", path], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"1"
        with pytest.raises(DatabaseInUse, match=f"pid {holder.pid}"):
            lock_database(path)
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    os.close(lock_database(path))


def test_a_file_that_is_not_a_database_is_refused_and_holds_no_lock(tmp_path):
    path = tmp_path / "wh.sqlite3"
    path.write_bytes(b"not a database " * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        Store(str(path), {"salt": 5})
    os.close(lock_database(str(path)))                 # nothing kept the lock


def _foreign(path, *statements) -> bytes:
    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("statements,said", [
    (["CREATE TABLE notes (text)", "INSERT INTO notes VALUES ('keep me')"],
     "it holds tables ['notes']"),
    (["CREATE TABLE inventory (x)"],
     "its table 'inventory' has columns ['x'], and a warehouse's has ['product', 'stock', "
     "'version']")])
def test_somebody_elses_sqlite_database_is_refused_and_left_exactly_as_it_was(
        tmp_path, statements, said):
    """Before, the store added its five tables (and WAL mode) to any SQLite file at its
    path, and only then failed on a missing column, or not at all."""
    path = tmp_path / "theirs.sqlite3"
    before = _foreign(path, *statements)
    with pytest.raises(NotAWarehouseDatabase, match=re.escape(said)):
        Store(str(path), {"salt": 5})
    assert path.read_bytes() == before
    assert not (tmp_path / "theirs.sqlite3-wal").exists()
    os.close(lock_database(str(path)))                 # nothing kept the lock


def test_a_schema_cut_short_is_completed(tmp_path):
    path = tmp_path / "wh.sqlite3"
    _foreign(path, "CREATE TABLE seed (product TEXT PRIMARY KEY, stock INTEGER NOT NULL)")
    s = Store(str(path), {"salt": 5})
    try:
        assert s.lookup("salt")["stock"] == 5
    finally:
        s.close()
    db = sqlite3.connect(path)
    assert {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} \
        == set(WAREHOUSE_TABLES)
    db.close()


def test_state_and_ledger_survive_reopen(tmp_path):
    path = str(tmp_path / "wh.sqlite3")
    s = Store(path, {"salt": 5})
    s.apply([buy("a", qty=2), sell("b", qty=7)], now=1.0)
    s.close()
    again = Store(path, {"salt": 999})          # the seed never overwrites a known product
    assert again.lookup("salt") == {"product": "salt", "stock": 10, "version": 2}
    assert [r["request_id"] for r in again.ledger()] == ["a", "b"]
    assert again.apply([buy("a", qty=2)], now=2.0)[0]["replayed"] is True
    again.close()


def test_ledger_records_stock_after_each_operation_and_time(store):
    store.apply([buy("a", qty=2)], now=10.0)
    store.apply([sell("b", qty=1)], now=11.0)
    rows = store.ledger()
    assert [(r["request_id"], r["stock_after"], r["ts"]) for r in rows] == [("a", 3, 10.0), ("b", 4, 11.0)]
    assert store.ledger(since_seq=rows[0]["seq"])[0]["request_id"] == "b"


def test_audit_holds_after_mixed_traffic(store):
    store.apply([buy("a", qty=3), sell("b", qty=2), buy("c", qty=9), sell("d", "fish", 5),
                 buy("e", "fish", 5)], now=1.0)
    report = store.audit()
    assert all(entry["ok"] for entry in report.values())
    assert report["salt"] == {"initial": 5, "stocked": 2, "shipped": 3, "expected_stock": 4,
                              "stock": 4, "ok": True}


def test_conservation_counts_only_applied_outcomes():
    rows = [{"product": "salt", "outcome": SHIPPED, "qty": 2},
            {"product": "salt", "outcome": UNAVAILABLE, "qty": 5},
            {"product": "salt", "outcome": STOCKED, "qty": 1}]
    assert conservation({"salt": 3}, rows)["salt"]["expected_stock"] == 2


def test_unknown_product_lookup(store):
    with pytest.raises(UnknownProduct):
        store.lookup("gold")


def test_join_gives_fresh_epochs_and_fence_refuses_the_old_one(store):
    e1 = store.join(1)
    e2 = store.join(2)
    assert e2 > e1
    assert store.apply([Order("buy", "salt", 1, "a", "trader 2", e2)], now=1.0)[0]["outcome"] == SHIPPED
    assert store.fence(2) == e2
    [r] = store.apply([Order("buy", "salt", 1, "b", "trader 2", e2)], now=2.0)
    assert isinstance(r, FencedOut)
    [r] = store.apply([Order("buy", "salt", 1, "a", "trader 2", e2)], now=2.0)
    assert isinstance(r, FencedOut)                 # even a replay: a fenced trader must step down
    assert store.lookup("salt")["stock"] == 4
    assert store.join(2) > e2                       # a replacement in the same slot may write
    assert store.fence(9) is None


def test_a_trader_joining_an_occupied_slot_fences_the_one_before_it(store):
    """The launcher starts Trader 1 again while the old one hangs: the old epoch can no
    longer write, even a replay, and the other slots are untouched."""
    old, other = store.join(1), store.join(2)
    [r] = store.apply([Order("buy", "salt", 1, "a", "trader 1", old)], now=1.0)
    assert r["outcome"] == SHIPPED
    new = store.join(1)
    assert new > other and store.is_fenced(old) and not store.is_fenced(other)
    assert store.epoch_of(1) == new and store.epoch_of(9) is None
    [late, again] = store.apply([Order("buy", "salt", 1, "b", "trader 1", old),
                                 Order("buy", "salt", 1, "a", "trader 1", old)], now=2.0)
    assert isinstance(late, FencedOut) and isinstance(again, FencedOut)
    [r] = store.apply([Order("buy", "salt", 1, "b", "trader 1", new)], now=3.0)
    assert r["outcome"] == SHIPPED and store.lookup("salt")["stock"] == 3
    [r] = store.apply([Order("buy", "salt", 1, "c", "trader 2", other)], now=4.0)
    assert r["outcome"] == SHIPPED


def test_a_fenced_trader_cannot_fence_another(store):
    """Two traders cut off from each other each declare the other dead: the first fence
    is taken, the second is refused because its sender was fenced meanwhile, so one
    trader is left. Nothing is fenced by a refused call."""
    e1, e2 = store.join(1), store.join(2)
    assert store.fence(2, e2, by_epoch=e1) == e2
    with pytest.raises(FencedOut, match=f"epoch {e2} was fenced itself"):
        store.fence(1, e1, by_epoch=e2)
    assert not store.is_fenced(e1) and store.is_fenced(e2)
    [r] = store.apply([Order("buy", "salt", 1, "a", "trader 1", e1)], now=1.0)
    assert r["outcome"] == SHIPPED                  # the first to ask serves on
    assert store.fence(2, e2, by_epoch=e1) == e2    # again: idempotent
    e3 = store.join(3)
    assert store.fence(3, by_epoch=e1) == e3        # the slot's epoch, by a live trader


def test_fencing_survives_a_restart(tmp_path):
    path = str(tmp_path / "wh.sqlite3")
    s = Store(path, {"salt": 5})
    epoch = s.join(1)
    s.fence(1)
    s.close()
    again = Store(path, {"salt": 5})
    assert again.is_fenced(epoch) and again.join(1) > epoch
    again.close()


def test_a_product_left_out_of_initial_stock_starts_at_zero(tmp_path):
    data = config_dict(["buyer", "seller"], 2)
    data["warehouse"]["db_path"] = str(tmp_path / "w.sqlite3")
    data["warehouse"]["initial_stock"] = {"salt": 7}
    cfg = config.load(write_config(tmp_path / "m.yaml", data))
    store = _open_store(cfg, EventLog(None, "warehouse"))
    try:
        assert {p: s["stock"] for p, s in store.inventory().items()} == \
            {"salt": 7, "fish": 0, "boar": 0}
    finally:
        store.close()
