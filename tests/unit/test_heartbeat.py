"""The heartbeat monitor, ticked by hand: no sockets, no sleeps."""

from pyromarket.heartbeat import HeartbeatMonitor, ServingWatch


def test_pings_every_live_trader_once_per_interval():
    m = HeartbeatMonitor([2, 3], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    assert m.due(0.0) == [2, 3]
    assert m.due(0.1) == []
    assert m.due(0.2) == [2, 3]


def test_misses_in_a_row_declare_death_exactly_once():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    assert [m.record(2, False, 1.0) for _ in range(3)] == [False, False, True]
    assert m.record(2, False, 1.0) is False and m.dead == {2} and m.live == []
    assert m.due(10.0) == []                               # the dead are not pinged


def test_a_success_resets_the_count():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    for ok in (False, False, True, False, False):
        assert m.record(2, ok, 1.0) is False
    assert m.dead == set()


def test_detection_bound_and_pause_detection():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    assert abs(m.detection_bound_s - 0.8) < 1e-9
    assert m.paused(0.5) is False
    assert m.paused(5.0) is True                          # stopped for 4.5 s
    assert m.paused(5.1) is False


def test_a_new_trader_is_watched():
    m = HeartbeatMonitor([], interval_s=0.2, timeout_s=0.2, misses=2, now=0.0)
    m.add(4)
    assert m.due(0.0) == [4]


def test_a_trader_still_starting_gets_a_grace_period():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=2, now=0.0, grace_s=5.0)
    assert m.starting(2, 0.2)
    assert [m.record(2, False, t) for t in (0.2, 0.4, 0.6)] == [False, False, False]
    assert m.dead == set()
    assert not m.starting(2, 5.2)
    assert [m.record(2, False, t) for t in (5.2, 5.4)] == [False, True]     # grace is over


def test_after_its_first_answer_a_trader_gets_no_grace():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=2, now=0.0, grace_s=5.0)
    m.record(2, True, 0.2)
    assert not m.starting(2, 0.4)
    assert [m.record(2, False, t) for t in (0.4, 0.6)] == [False, True]


def test_a_trader_marked_dead_by_someone_else_is_no_longer_pinged():
    m = HeartbeatMonitor([2, 3], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    m.mark_dead(3)
    assert m.due(0.0) == [2] and m.dead == {3}
    assert m.record(3, False, 0.1) is False          # never "newly dead" a second time


def test_no_trader_serving_is_declared_after_misses_in_a_row_once():
    w = ServingWatch(misses=3, now=0.0)
    assert [w.record(False, t) for t in (1, 2, 3, 4, 5)] == [False, False, True, False, False]


def test_an_answer_or_a_probe_that_could_not_tell_starts_the_count_again():
    # None: the name server did not answer, or listed no trader (one just restarted is
    # empty): no evidence that the traders are down
    w = ServingWatch(misses=2, now=0.0)
    assert [w.record(s, t) for t, s in enumerate([False, True, False, None, False, False])] \
        == [False, False, False, False, False, True]


def test_a_launched_trader_gets_its_grace_before_misses_count():
    w = ServingWatch(misses=2, now=0.0, grace_s=5.0)
    assert not any(w.record(False, t) for t in (1, 2, 3, 4))       # the market starting
    assert [w.record(False, t) for t in (5, 6)] == [False, True]
    w.restart(now=6.0, grace_s=10.0)                               # Trader 1 launched again
    assert not any(w.record(False, t) for t in range(7, 16))
    assert [w.record(False, t) for t in (16, 17)] == [False, True]
