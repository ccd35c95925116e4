"""When to add a trader: a sliding window of request counts and the scale-out rule. Pure.

Every trader counts the buy and sell requests it took in the last `window_s` seconds
(`LoadWindow`; the spec's window is a minute, tests use seconds). The coordinator, the
live trader with the lowest index, learns the other traders' counts from its heartbeat
pings and asks `ScalePolicy` whether to launch one more trader. It says yes when

  * the mean load per live trader is above `threshold` requests per window,
  * live plus still-launching traders are fewer than `max_traders` (the cap), and
  * the last launch was at least `cooldown_s` ago (no flapping).

A launch stays *pending* until its trader answers heartbeats, so one burst never
launches two replicas. Replacing a failed trader (`replacement`) ignores the cool-down:
it restores the count, it does not grow it. A launch whose trader does not show up within
`launch_timeout_s` is given up on (`settle` says so, and the caller stops what it started);
a replacement is then tried again, each attempt allowed twice as long as the one before,
until `attempts` launches in all. A scale-out is not retried: the load rule decides
afresh. Time is passed in.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["LoadWindow", "ScalePolicy", "Decision", "GiveUp"]


class LoadWindow:
    """Requests seen in the last `window_s` seconds, kept in `buckets` time slots.
    Thread-safe: a trader's Pyro5 worker threads record, its heartbeat thread reads."""

    def __init__(self, window_s: float, buckets: int = 60):
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be > 0 and buckets >= 1")
        self.window_s, self._buckets = window_s, buckets
        self._slot_s = window_s / buckets
        self._counts: deque[list[int]] = deque()    # [slot number, count], oldest first
        self._lock = threading.Lock()

    def record(self, now: float, n: int = 1) -> None:
        """Count `n` requests seen at time `now` (seconds, the caller's clock)."""
        slot = math.floor(now / self._slot_s)
        with self._lock:
            if self._counts and self._counts[-1][0] == slot:
                self._counts[-1][1] += n
            else:
                self._counts.append([slot, n])
            self._expire(slot)

    def count(self, now: float) -> int:
        with self._lock:
            self._expire(math.floor(now / self._slot_s))
            return sum(c for _, c in self._counts)

    def _expire(self, slot: int) -> None:
        while self._counts and self._counts[0][0] <= slot - self._buckets:
            self._counts.popleft()


@dataclass(frozen=True)
class Decision:
    """A decision to launch a trader, and the figures it was made on."""
    index: int              # the new trader's n (market.trader.<n>)
    kind: str               # "scale_out" or "replace"
    mean_load: float        # requests per window per live trader when decided
    live: int               # live traders when decided
    attempt: int = 1        # a replacement's try; above 1, the ones before never showed up


@dataclass(frozen=True)
class GiveUp:
    """A launch whose trader did not show up in time, and what follows from it."""
    index: int              # the trader n it was to serve
    kind: str               # "scale_out" or "replace"
    attempt: int            # which try of that launch it was
    waited_s: float         # how long it was given
    retry: Decision | None  # the next try, if any (a replacement with attempts left)


@dataclass(frozen=True)
class _Launch:
    kind: str
    at: float               # when this try was decided
    attempt: int


class ScalePolicy:
    """When to launch a trader, as pure rules: the mean load per live trader passes
    the threshold, the cap (launches still starting count) is not reached and the cool-down
    has passed; and when to give up on a launch that never shows up, and try again."""

    def __init__(self, threshold: int, max_traders: int, cooldown_s: float,
                 launch_timeout_s: float = 30.0, attempts: int = 3):
        self.threshold, self.max_traders, self.cooldown_s = threshold, max_traders, cooldown_s
        self.launch_timeout_s, self.attempts = launch_timeout_s, attempts
        self._last_launch = -math.inf
        self._pending: dict[int, _Launch] = {}      # trader n -> its launch under way

    @property
    def pending(self) -> list[int]:
        """Traders whose launch was decided but which are not serving yet."""
        return sorted(self._pending)

    def decide(self, now: float, loads: Mapping[int, int], taken: Iterable[int]) -> Decision | None:
        """Scale out now? `loads`: {n: requests in the window} of every live trader,
        this one included; `taken`: every n ever used (a new trader gets a fresh n)."""
        self._drop_live(loads)
        if not loads or now - self._last_launch < self.cooldown_s:
            return None
        live = len(loads) + len(self._pending)
        mean = sum(loads.values()) / len(loads)
        if live >= self.max_traders or mean <= self.threshold:
            return None
        index = max([*taken, *loads, *self._pending, 0]) + 1
        self._last_launch = now
        self._pending[index] = _Launch("scale_out", now, 1)
        return Decision(index, "scale_out", mean, len(loads))

    def replacement(self, now: float, dead: int, loads: Mapping[int, int]) -> Decision | None:
        """Replace failed trader `dead` under its own n, unless already under way."""
        self._drop_live(loads)
        if dead in self._pending:
            return None
        self._pending[dead] = _Launch("replace", now, 1)
        return Decision(dead, "replace", _mean(loads), len(loads))

    def deadline_s(self, attempt: int) -> float:
        """How long try number `attempt` of a launch may take to show up."""
        return self.launch_timeout_s * 2 ** (attempt - 1)

    def settle(self, now: float, loads: Mapping[int, int]) -> list[GiveUp]:
        """End the launches whose trader is live; give up on those past their deadline,
        and return them, each with its retry if it gets one (already counted as pending)."""
        self._drop_live(loads)
        given_up = []
        for n, launch in list(self._pending.items()):
            waited = self.deadline_s(launch.attempt)
            if now - launch.at <= waited:
                continue
            del self._pending[n]
            retry = None
            if launch.kind == "replace" and launch.attempt < self.attempts:
                self._pending[n] = _Launch("replace", now, launch.attempt + 1)
                retry = Decision(n, "replace", _mean(loads), len(loads), launch.attempt + 1)
            given_up.append(GiveUp(n, launch.kind, launch.attempt, waited, retry))
        return given_up

    def _drop_live(self, loads: Mapping[int, int]) -> None:
        for n in [n for n in self._pending if n in loads]:
            del self._pending[n]


def _mean(loads: Mapping[int, int]) -> float:
    return sum(loads.values()) / len(loads) if loads else 0.0
