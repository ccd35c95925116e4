"""The ring election as a state machine: a simulated network, no sockets, no sleeps."""

import itertools

import pytest

from pyromarket.election import RingElection, check_message, trader_index


class Net:
    """Delivers Sends between machines in FIFO order; dead ids refuse delivery."""

    def __init__(self, ids, n, dead=(), timeout_s=5.0):
        self.nodes = {i: RingElection(i, ids, n, timeout_s) for i in ids if i not in dead}
        self.queue = []
        self.delivered = 0

    def start(self, *ids, now=0.0):
        for i in ids:
            self._enqueue(i, self.nodes[i].start(now))

    def _enqueue(self, sender, sends):
        self.queue.extend((sender, s) for s in sends)

    def run(self, limit=10_000, now=0.0):
        while self.queue:
            sender, send = self.queue.pop(0)
            self.delivered += 1
            assert self.delivered < limit, "messages never stop"
            if send.to in self.nodes:
                self._enqueue(send.to, self.nodes[send.to].on_message(send.message, now))
            else:
                self._enqueue(sender, self.nodes[sender].on_unreachable(send.to, send.message))

    def results(self):
        return {i: node.traders for i, node in self.nodes.items()}


@pytest.mark.parametrize("n_peers", [1, 2, 5, 8])
def test_every_trader_count_gives_exactly_n_traders_all_agree(n_peers):
    ids = list(range(1, n_peers + 1))
    for n in range(1, n_peers + 1):
        net = Net(ids, n)
        net.start(1)
        net.run()
        results = set(net.results().values())
        assert results == {tuple(ids[-n:])}, (n_peers, n, net.results())


def test_concurrent_initiators_agree_and_terminate():
    ids = [3, 7, 1, 9, 4]
    net = Net(ids, 2)
    net.start(*ids)
    net.run()
    assert set(net.results().values()) == {(7, 9)}


def test_dead_peers_are_skipped_and_never_elected():
    ids = [1, 2, 3, 4, 5, 6]
    net = Net(ids, 2, dead={6, 3})
    net.start(1)
    net.run()
    assert set(net.results().values()) == {(4, 5)}


def test_a_lone_survivor_elects_itself():
    net = Net([1, 2, 3], 2, dead={1, 3})
    net.start(2)
    net.run()
    assert net.results() == {2: (2,)}


def test_late_joiner_learns_the_decision_without_re_electing():
    ids = [1, 2, 3, 4]
    net = Net(ids, 2)
    late = net.nodes.pop(4)
    net.start(1)
    net.run()
    assert set(net.results().values()) == {(2, 3)}          # 4 was absent
    net.nodes[4] = late
    net.start(4)
    net.run()
    assert net.results()[4] == (2, 3)                       # appointed for life
    assert all(t == (2, 3) for t in net.results().values())


def test_swallowed_election_is_recovered_by_tick():
    ids = [1, 2, 3]
    net = Net(ids, 1, timeout_s=5.0)
    net.start(3)
    net.queue.clear()                   # 3's message vanished; 3 thinks round 0 is under way
    net.start(2)                        # reaches 3, which has seen (0, 3) > (0, 2): swallowed
    net.run()
    assert all(t is None for t in net.results().values())
    for i, node in net.nodes.items():
        net._enqueue(i, node.tick(now=6.0))
    net.run(now=6.0)
    assert set(net.results().values()) == {(3,)}


def test_tick_before_deadline_does_nothing():
    node = RingElection(1, [1, 2], 1, timeout_s=5.0)
    node.start(now=0.0)
    assert node.tick(now=4.0) == []
    assert node.tick(now=5.0) != []


def test_decided_peer_ignores_start_and_tick():
    node = RingElection(2, [1, 2], 1)
    node.on_message({"type": "coordinator", "initiator": 1, "traders": [2], "direct": False})
    assert node.decided and node.start() == [] and node.tick(now=99.0) == []


def test_failed_direct_reply_is_not_forwarded():
    node = RingElection(3, [1, 2, 3], 1)
    node.on_message({"type": "coordinator", "initiator": 2, "traders": [3], "direct": True})
    sends = node.on_message({"type": "election", "round": 0, "initiator": 1, "alive": [1]})
    assert [s.to for s in sends] == [1] and sends[0].message["direct"] is True
    assert node.on_unreachable(1, sends[0].message) == []


def test_every_start_order_agrees():
    ids = [1, 2, 3, 4]
    for order in itertools.permutations(ids, 2):
        net = Net(ids, 3)
        net.start(*order)
        net.run()
        assert set(net.results().values()) == {(2, 3, 4)}


def test_trader_index_numbers_from_one_by_id():
    assert [trader_index((9, 4, 7), p) for p in (4, 7, 9)] == [1, 2, 3]


def test_unknown_message_type_is_refused():
    with pytest.raises(ValueError):
        RingElection(1, [1], 1).on_message({"type": "hello"})


@pytest.mark.parametrize("bad", [
    "election", {"type": "hello"}, {"type": ["election"]}, {"type": {}},
    {"type": "election", "round": 0, "initiator": 1},
    {"type": "election", "round": "0", "initiator": 1, "alive": [1]},
    {"type": "election", "round": 0, "initiator": True, "alive": [1]},
    {"type": "election", "round": 0, "initiator": 1, "alive": ["x"]},
    {"type": "coordinator", "initiator": 1, "traders": [2], "direct": "yes"},
    {"type": "coordinator", "initiator": 1, "traders": [2], "direct": False, "extra": 1},
])
def test_malformed_messages_are_refused(bad):
    with pytest.raises(ValueError):
        check_message(bad)


def test_well_formed_messages_pass():
    node = RingElection(1, [1, 2], 1)
    [send] = node.start()
    assert check_message(send.message) is send.message
