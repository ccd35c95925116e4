"""Both batching strategies (leader/follower `Batcher`, dedicated-thread `Pump`): batches
form from whatever queued, results reach the right caller, waiters give up cleanly, and
nothing needs a sleep to test."""

import threading

import pytest

from pyromarket.batching import Batcher, Pump
from pyromarket.errors import Unavailable


def wait_for(cond, what, timeout=5.0):
    ev = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if cond():
            return
        ev.wait(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class Gated:
    """A handler whose first batch blocks until `gate` opens, recording every batch."""

    def __init__(self, transform=lambda x: x):
        self.gate, self.entered = threading.Event(), threading.Event()
        self.batches, self.threads, self.transform = [], [], transform

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.append(threading.current_thread())
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(5)
        return [self.transform(x) for x in items]


def submit_in_threads(b, items, results, timeout=5.0):
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, b.submit(i, timeout)))
               for i in items]
    for t in threads:
        t.start()
    return threads


def lead_then_queue(b, handler, followers, results):
    """Submit "lead" and hold its batch at the gate, queue `followers` behind it, then
    open the gate and let everything finish. Returns the lead's thread."""
    lead = submit_in_threads(b, ["lead"], results)
    assert handler.entered.wait(5)
    others = submit_in_threads(b, followers, results)
    wait_for(lambda: len(b._pending) == len(followers), f"{len(followers)} queued followers")
    handler.gate.set()
    for t in lead + others:
        t.join(5)
    return lead[0]


@pytest.fixture(params=[Batcher, Pump])
def make(request):
    """Each test runs against both strategies; every one made is closed afterwards."""
    made = []

    def factory(handler, max_batch):
        made.append(request.param(handler, max_batch))
        return made[-1]
    yield factory
    for b in made:
        b.close(timeout=1)


def test_single_submitter_leads_its_own_batch():
    seen = []
    b = Batcher(lambda items: (seen.append(threading.current_thread()), [x * 2 for x in items])[1], 8)
    assert b.submit(21, timeout=5) == 42
    assert seen == [threading.current_thread()]       # no hand-off to another thread


def test_an_idle_pump_runs_the_batch_on_the_submitters_thread():
    seen = []
    p = Pump(lambda items: (seen.append(threading.current_thread()), [x * 2 for x in items])[1], 8)
    assert p.submit(21, timeout=5) == 42 and p.submit(1, timeout=5) == 2
    assert seen == [threading.current_thread()] * 2    # no hand-off while idle
    p.close()
    assert not p._thread.is_alive()                     # close() stops the pump


def test_what_queues_behind_a_running_batch_goes_to_the_pump_thread():
    handler = Gated()
    p = Pump(handler, 100)
    results = {}
    lead = lead_then_queue(p, handler, range(5), results)
    assert handler.threads == [lead, p._thread]
    assert sorted(handler.batches[1]) == list(range(5))
    assert results == {"lead": "lead", **{i: i for i in range(5)}}
    p.close()
    assert not p._thread.is_alive()


def test_items_queued_during_a_batch_share_the_next_one(make):
    handler = Gated()
    b = make(handler, max_batch=100)
    results = {}
    lead_then_queue(b, handler, range(10), results)
    assert handler.batches[0] == ["lead"]
    assert sorted(handler.batches[1]) == list(range(10))      # one batch, not ten
    assert len(handler.batches) == 2
    assert all(results[i] == i for i in range(10)) and results["lead"] == "lead"


def test_max_batch_caps_a_batch(make):
    handler = Gated()
    b = make(handler, max_batch=3)
    results = {}
    lead_then_queue(b, handler, range(7), results)
    sizes = [len(x) for x in handler.batches[1:]]
    assert max(sizes) <= 3 and sum(sizes) == 7
    assert all(results[i] == i for i in range(7))


def test_exception_result_is_raised_in_its_submitter_only(make):
    b = make(lambda items: [ValueError("bad") if x < 0 else x for x in items], max_batch=8)
    with pytest.raises(ValueError):
        b.submit(-1, 5)
    assert b.submit(1, 5) == 1


def test_handler_failure_fails_the_whole_batch_and_the_next_still_runs(make):
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("handler broke")
        return items
    b = make(flaky, max_batch=8)
    with pytest.raises(RuntimeError, match="handler broke"):
        b.submit(1, 5)
    assert b.submit(2, 5) == 2


def test_wrong_result_count_is_an_error_not_a_hang(make):
    b = make(lambda items: [], max_batch=8)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        b.submit(1, 5)


def test_follower_times_out_as_unavailable_and_withdraws(make):
    handler = Gated()
    b = make(handler, max_batch=8)
    leader = submit_in_threads(b, ["lead"], {})
    assert handler.entered.wait(5)
    with pytest.raises(Unavailable, match="no result within"):
        b.submit("late", timeout=0.05)
    assert len(b._pending) == 0                    # withdrawn, so it is never applied
    handler.gate.set()
    leader[0].join(5)
    assert handler.batches == [["lead"]]


def test_closed_batcher_refuses_and_close_is_idempotent(make):
    b = make(lambda items: items, max_batch=8)
    b.close()
    b.close()
    with pytest.raises(Unavailable, match="shutting down"):
        b.submit(1, 1)


def test_close_waits_for_the_batch_in_flight(make):
    handler = Gated()
    b = make(handler, max_batch=8)
    results = {}
    t = submit_in_threads(b, ["lead"], results)
    assert handler.entered.wait(5)
    closer = threading.Thread(target=b.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()                       # still waiting on the leader
    handler.gate.set()
    closer.join(5)
    t[0].join(5)
    assert results == {"lead": "lead"} and not closer.is_alive()


def test_under_contention_one_batch_runs_at_a_time_and_every_result_goes_home(make):
    running, overlaps = [0], []
    guard = threading.Lock()

    def handler(items):
        with guard:
            running[0] += 1
            overlaps.append(running[0])
        try:
            return [x * 10 for x in items]
        finally:
            with guard:
                running[0] -= 1
    b = make(handler, max_batch=16)
    wrong = []

    def client(k):
        for i in range(200):
            item = k * 1000 + i
            if b.submit(item, 5) != item * 10:
                wrong.append(item)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert wrong == [] and max(overlaps) == 1
