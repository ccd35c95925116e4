"""When to add a trader: a sliding window of request counts and the scale-out rule. Pure.

Every trader counts the buy and sell requests it took in the last `window_s` seconds
(`LoadWindow`; the spec's window is a minute, tests use seconds). The coordinator, the
live trader with the lowest index, learns the other traders' counts from its heartbeat
pings and asks `ScalePolicy` whether to launch one more trader. It says yes when

  * the mean load per live trader is above `threshold` requests per window,
  * live plus still-launching traders are fewer than `max_traders` (the cap), and
  * the last launch was at least `cooldown_s` ago (no flapping).

A launch stays *pending* until its trader answers heartbeats (or `launch_timeout_s`),
so one burst never launches two replicas. Replacing a failed trader (`replacement`)
ignores the cool-down: it restores the count, it does not grow it. Time is passed in.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["LoadWindow", "ScalePolicy", "Decision"]


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


class ScalePolicy:
    """When to launch a trader, as pure rules: the mean load per live trader passes
    the threshold, the cap (launches still starting count) is not reached and the cool-down
    has passed. A launch that never shows up is given up after `launch_timeout_s` (or the
    cool-down, if longer)."""

    def __init__(self, threshold: int, max_traders: int, cooldown_s: float,
                 launch_timeout_s: float = 30.0):
        self.threshold, self.max_traders, self.cooldown_s = threshold, max_traders, cooldown_s
        self.launch_timeout_s = launch_timeout_s
        self._last_launch = -math.inf
        self._pending: dict[int, float] = {}      # trader n -> when its launch was decided

    @property
    def pending(self) -> list[int]:
        """Traders whose launch was decided but which are not serving yet."""
        return sorted(self._pending)

    def decide(self, now: float, loads: Mapping[int, int], taken: Iterable[int]) -> Decision | None:
        """Scale out now? `loads`: {n: requests in the window} of every live trader,
        this one included; `taken`: every n ever used (a new trader gets a fresh n)."""
        self.settle(now, loads)
        if not loads or now - self._last_launch < self.cooldown_s:
            return None
        live = len(loads) + len(self._pending)
        mean = sum(loads.values()) / len(loads)
        if live >= self.max_traders or mean <= self.threshold:
            return None
        index = max([*taken, *loads, *self._pending, 0]) + 1
        self._launching(index, now)
        return Decision(index, "scale_out", mean, len(loads))

    def replacement(self, now: float, dead: int, loads: Mapping[int, int]) -> Decision | None:
        """Replace failed trader `dead` under its own n, unless already under way."""
        self.settle(now, loads)
        if dead in self._pending:
            return None
        self._pending[dead] = now
        mean = sum(loads.values()) / len(loads) if loads else 0.0
        return Decision(dead, "replace", mean, len(loads))

    def _launching(self, index: int, now: float) -> None:
        self._last_launch = now
        self._pending[index] = now

    def settle(self, now: float, loads: Mapping[int, int]) -> None:
        """A pending launch ends when its trader is live, or when it is given up on."""
        for n, at in list(self._pending.items()):
            if n in loads or now - at > max(self.cooldown_s, self.launch_timeout_s):
                del self._pending[n]
