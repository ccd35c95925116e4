"""The group-commit batcher: batches form from whatever queued, results go to the right caller."""

import threading

import pytest

from pyromarket.batching import Batcher, _Slot
from pyromarket.errors import Unavailable


def test_single_item_round_trip():
    b = Batcher(lambda items: [x * 2 for x in items], max_batch=8)
    try:
        assert b.submit(21, timeout=5) == 42
    finally:
        b.close()


def test_items_queued_during_a_batch_share_the_next_one():
    gate, entered = threading.Event(), threading.Event()
    batches = []

    def handler(items):
        batches.append(list(items))
        if len(batches) == 1:
            entered.set()
            gate.wait(5)
        return items

    b = Batcher(handler, max_batch=100)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", b.submit("first", 5)))
    first.start()
    assert entered.wait(5)
    workers = [threading.Thread(target=lambda i=i: results.setdefault(i, b.submit(i, 5)))
               for i in range(10)]
    for w in workers:
        w.start()
    # every worker's item is queued before the gate opens: wait on that condition
    deadline = threading.Event()
    for _ in range(500):
        if b._queue.qsize() == 10:
            break
        deadline.wait(0.01)
    gate.set()
    for t in [first, *workers]:
        t.join(5)
    b.close()
    assert batches[0] == ["first"]
    assert sorted(batches[1]) == list(range(10))           # one batch, not ten
    assert all(results[i] == i for i in range(10))


def test_max_batch_caps_a_batch():
    sizes = []
    b = Batcher(lambda items: (sizes.append(len(items)), items)[1], max_batch=3)
    for i in range(7):
        b._queue.put(_Slot(i))
    b.close()
    assert max(sizes) <= 3 and sum(sizes) == 7


def test_exception_result_is_raised_in_its_submitter_only():
    b = Batcher(lambda items: [ValueError("bad") if x < 0 else x for x in items], max_batch=8)
    try:
        with pytest.raises(ValueError):
            b.submit(-1, 5)
        assert b.submit(1, 5) == 1
    finally:
        b.close()


def test_handler_failure_fails_the_whole_batch():
    def boom(items):
        raise RuntimeError("handler broke")
    b = Batcher(boom, max_batch=8)
    try:
        with pytest.raises(RuntimeError, match="handler broke"):
            b.submit(1, 5)
    finally:
        b.close()


def test_wrong_result_count_is_an_error_not_a_hang():
    b = Batcher(lambda items: [], max_batch=8)
    try:
        with pytest.raises(RuntimeError, match="0 results for 1"):
            b.submit(1, 5)
    finally:
        b.close()


def test_submit_times_out_as_unavailable():
    gate = threading.Event()
    b = Batcher(lambda items: (gate.wait(5), items)[1], max_batch=8)
    try:
        with pytest.raises(Unavailable, match="no result within"):
            b.submit(1, timeout=0.05)
    finally:
        gate.set()
        b.close()


def test_closed_batcher_refuses_and_close_is_idempotent():
    b = Batcher(lambda items: items, max_batch=8)
    b.close()
    b.close()
    with pytest.raises(Unavailable, match="shutting down"):
        b.submit(1, 1)
