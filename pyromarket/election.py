"""Electing N_t traders: a ring election, as a state machine with no sockets or clocks.

One message goes round the ring (ids in ascending order, wrapping) and collects the
id of every live peer it passes; a peer that does not answer is skipped. When it
returns to its initiator, the initiator appoints the N_t highest live ids and sends a
`coordinator` message round the ring, so every peer learns the same, complete answer.
Why a ring: one circulation yields the full set of live peers, so N_t winners fall out
of a single round for any N_t, where bully would need N_t rounds.

Concurrent initiators are resolved as in Chang-Roberts: a peer forwards an election
only if its (round, initiator) is at least the highest it has seen, so exactly one
circulation completes. If a decision does not arrive by the deadline (its initiator
died mid-way), `tick(now)` starts a new round, which outranks the lost one.
Traders are appointed for life: a peer that has decided answers any later election
(a late joiner) directly with the decision instead of re-electing.

The caller feeds events in (`start`, `on_message`, `on_unreachable`, `tick`) and
performs the `Send`s that come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Send", "RingElection", "trader_index", "check_message"]


@dataclass(frozen=True)
class Send:
    """An instruction for the caller: deliver `message` to peer `to`."""
    to: int
    message: dict


_SHAPES = {
    "election": {"type": str, "round": int, "initiator": int, "alive": list},
    "coordinator": {"type": str, "initiator": int, "traders": list, "direct": bool},
}


def check_message(msg: object) -> dict:
    """Return `msg` if it is a well-formed election message, else raise ValueError.
    Messages arrive from the network, so the state machine never sees a bad one."""
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str) \
            or msg["type"] not in _SHAPES:
        raise ValueError("not an election message")
    shape = _SHAPES[msg["type"]]
    if set(msg) != set(shape):
        raise ValueError(f"{msg['type']} message needs exactly the keys {sorted(shape)}")
    for key, kind in shape.items():
        if not isinstance(msg[key], kind) or (kind is int and isinstance(msg[key], bool)):
            raise ValueError(f"{msg['type']} message: {key} must be {kind.__name__}")
    ids = msg.get("alive", msg.get("traders"))
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{msg['type']} message: peer ids must be ints")
    return msg


def trader_index(traders: Sequence[int], peer_id: int) -> int:
    """The n in `market.trader.<n>`: 1 for the lowest trader id, up to N_t."""
    return sorted(traders).index(peer_id) + 1


class RingElection:
    """One peer's view of the ring election. Feed it events; it returns the
    `Send`s to perform and, once decided, holds `traders`: the N_t elected peer ids."""

    def __init__(self, my_id: int, peer_ids: Sequence[int], n_traders: int,
                 timeout_s: float = 5.0):
        if my_id not in peer_ids:
            raise ValueError(f"peer {my_id} is not in the ring {list(peer_ids)}")
        self.me = my_id
        self.ring = sorted(peer_ids)
        self.n_traders = n_traders
        self.timeout_s = timeout_s
        self.traders: tuple[int, ...] | None = None
        self.dead: set[int] = set()
        self._seen = (-1, -1)            # highest (round, initiator) forwarded
        self._deadline: float | None = None

    @property
    def decided(self) -> bool:
        """Whether this peer knows the elected traders."""
        return self.traders is not None

    def start(self, now: float = 0.0) -> list[Send]:
        """Begin an election (or a new round of one). A decided peer does nothing."""
        if self.decided:
            return []
        key = (self._seen[0] + 1 if self._deadline is not None else 0, self.me)
        self._seen = max(self._seen, key)
        self._deadline = now + self.timeout_s
        msg = {"type": "election", "round": key[0], "initiator": self.me, "alive": [self.me]}
        return self._forward(msg)

    def tick(self, now: float) -> list[Send]:
        """Restart if the round we are waiting on has passed its deadline."""
        if self.decided or self._deadline is None or now < self._deadline:
            return []
        return self.start(now)

    def on_message(self, msg: dict, now: float = 0.0) -> list[Send]:
        """Handle an election or coordinator message from another peer
        (already checked by `check_message`)."""
        if msg["type"] == "election":
            return self._on_election(msg, now)
        if msg["type"] == "coordinator":
            return self._on_coordinator(msg)
        raise ValueError(f"unknown election message type {msg.get('type')!r}")

    def on_unreachable(self, peer_id: int, msg: dict) -> list[Send]:
        """A send to `peer_id` failed: mark it dead and pass the message on past it."""
        self.dead.add(peer_id)
        if msg.get("direct"):
            return []                                   # the late joiner is gone; nothing to pass on
        return self._forward(msg)

    # --- internals --------------------------------------------------------------------

    def _on_election(self, msg: dict, now: float) -> list[Send]:
        if self.decided:
            reply = {"type": "coordinator", "initiator": self.me, "traders": list(self.traders),
                     "direct": True}
            return [Send(msg["initiator"], reply)]
        key = (msg["round"], msg["initiator"])
        if key < self._seen:
            return []                                   # a lower election: swallowed
        self._seen = key
        if self._deadline is None:
            self._deadline = now + self.timeout_s       # so a lost round still restarts
        if msg["initiator"] == self.me:
            return self._decide_and_announce(msg["alive"])
        return self._forward({**msg, "alive": msg["alive"] + [self.me]})

    def _decide_and_announce(self, alive: list[int]) -> list[Send]:
        self.traders = tuple(sorted(alive)[-self.n_traders:])
        msg = {"type": "coordinator", "initiator": self.me, "traders": list(self.traders),
               "direct": False}
        return self._forward(msg)

    def _on_coordinator(self, msg: dict) -> list[Send]:
        if not self.decided:
            self.traders = tuple(sorted(msg["traders"]))
        if msg.get("direct") or msg["initiator"] == self.me:
            return []
        return self._forward(msg)

    def _successor(self) -> int | None:
        i = self.ring.index(self.me)
        for step in range(1, len(self.ring)):
            candidate = self.ring[(i + step) % len(self.ring)]
            if candidate not in self.dead:
                return candidate
        return None

    def _forward(self, msg: dict) -> list[Send]:
        nxt = self._successor()
        if nxt is not None:
            return [Send(nxt, msg)]
        # Everyone else is dead: the message has, in effect, come full circle.
        if msg["type"] == "election" and not self.decided:
            return self._decide_and_announce(msg["alive"])
        return []
