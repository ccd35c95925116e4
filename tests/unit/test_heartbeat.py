"""The heartbeat monitor, ticked by hand: no sockets, no sleeps."""

from pyromarket.heartbeat import HeartbeatMonitor


def test_pings_every_live_trader_once_per_interval():
    m = HeartbeatMonitor([2, 3], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    assert m.due(0.0) == [2, 3]
    assert m.due(0.1) == []
    assert m.due(0.2) == [2, 3]


def test_misses_in_a_row_declare_death_exactly_once():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    assert [m.record(2, False) for _ in range(3)] == [False, False, True]
    assert m.record(2, False) is False and m.dead == {2} and m.live == []
    assert m.due(10.0) == []                               # the dead are not pinged


def test_a_success_resets_the_count():
    m = HeartbeatMonitor([2], interval_s=0.2, timeout_s=0.2, misses=3, now=0.0)
    for ok in (False, False, True, False, False):
        assert m.record(2, ok) is False
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
