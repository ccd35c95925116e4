"""A trader's takeover decisions when the warehouse says it was fenced itself: a real
Trader and Failover, with a fake warehouse link and no name server or peers (a call to
either fails the test). No sockets, no sleeps."""

from __future__ import annotations

import pytest

from pyromarket import config, rpc
from pyromarket.errors import FencedOut, Unavailable
from pyromarket.failover import Failover
from pyromarket.trader import Trader
from tests.helpers import Log, config_dict

EPOCH = 7


class FakeLink:
    """The warehouse calls a Failover makes; `fenced_epochs` are refused."""

    def __init__(self, fenced_epochs=(), down=False):
        self.fenced_epochs, self.down = set(fenced_epochs), down
        self.fences: list[tuple] = []

    def fence(self, index, by, epoch=0, by_epoch=0):
        if by_epoch in self.fenced_epochs:
            raise FencedOut(f"epoch {by_epoch} was fenced itself")
        self.fences.append((index, by, epoch, by_epoch))
        return epoch

    def fenced(self, epoch):
        if self.down:
            raise Unavailable("warehouse: ConnectionRefusedError")
        return epoch in self.fenced_epochs

    def lookup(self, product):
        raise AssertionError("not used")


@pytest.fixture
def make(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("a refused takeover must not reach the name server or a peer")

    monkeypatch.setattr(rpc, "nameserver", no_network)
    monkeypatch.setattr(rpc, "proxy", no_network)

    def build(link: FakeLink):
        cfg = config.from_dict(config_dict(["buyer", "seller", "buyer"], 2))
        log = Log()
        trader = Trader(1, 1, cfg, link, log, str(tmp_path), epoch=EPOCH)
        return Failover(trader, link, cfg, {2: "PYRO:market.trader@127.0.0.1:9"}, log), log
    return build


def test_a_takeover_the_warehouse_refuses_steps_this_trader_down_and_goes_no_further(make):
    """Two traders cut off from each other: the other fenced this one first, so this
    one's fence is refused; it steps down, and neither unlists nor announces anything."""
    link = FakeLink(fenced_epochs={EPOCH})
    failover, log = make(link)
    failover.take_over(2)
    assert failover.trader.retired.is_set()
    assert link.fences == []
    assert any("steps down" in line and "declared it dead first" in line for line in log)
    assert not any("has taken over" in line for line in log)


def test_a_trader_that_hears_of_its_own_death_asks_the_warehouse(make):
    failover, log = make(FakeLink())
    failover.note_dead(1)                  # a broadcast naming this very trader
    failover._absorb_told_dead()
    assert not failover.trader.retired.is_set()            # not fenced: serves on
    assert failover.monitor.live == [2]                    # and watches as before
    failover.note_dead(1)
    failover.link.fenced_epochs.add(EPOCH)
    failover._absorb_told_dead()
    assert failover.trader.retired.is_set()
    assert "the warehouse says it was fenced (declared dead" in log[-1]


@pytest.mark.parametrize("fenced,down,binds", [(False, False, True), (True, False, False),
                                               (True, True, True)])
def test_a_missing_name_is_bound_again_only_by_a_trader_not_fenced(make, fenced, down, binds):
    """A name is gone after a name server restart, or because a survivor unlisted this
    trader. Only a trader the warehouse has not fenced binds it again; when the
    warehouse cannot tell, it binds (a name server restart is the common case)."""
    failover, _log = make(FakeLink(fenced_epochs={EPOCH} if fenced else (), down=down))
    assert failover._may_bind() is binds
    assert failover.trader.retired.is_set() is not binds
