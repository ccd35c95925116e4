"""Who among the other traders is alive, judged from heartbeats. Pure: time is passed in.

Every `interval_s` a trader asks each other live trader "are you there?" (a ping with
its own deadline). `misses` consecutive failures declare that trader dead, once; a
success resets its count. So a dead trader is declared after at most
misses x interval_s + timeout_s. A trader that has not answered yet (it may still be
starting) is given `grace_s` before its misses count (`starting`). `paused(now)` notices
that this process itself did not run for longer than that window (SIGSTOP, a long
stall): the others may have declared *it* dead meanwhile, so it must check before it
acts as a trader again.

`ServingWatch` is the launcher's view of the same question from outside: does *any*
trader serve? It counts probes in a row in which none answered.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["HeartbeatMonitor", "ServingWatch"]


class HeartbeatMonitor:
    """Heartbeat bookkeeping for one trader: whom to ping when, and who is dead.
    Pure: every method takes the time, so tests drive it without sleeping."""

    def __init__(self, others: Iterable[int], interval_s: float, timeout_s: float,
                 misses: int, now: float, grace_s: float = 0.0):
        self.interval_s, self.timeout_s, self.misses = interval_s, timeout_s, misses
        self._missed = {o: 0 for o in others}
        self._answered: set[int] = set()
        self._grace_until = now + grace_s
        self.dead: set[int] = set()
        self._next_at = now
        self._last_tick = now

    @property
    def live(self) -> list[int]:
        """The other traders not declared dead, in order."""
        return sorted(o for o in self._missed if o not in self.dead)

    @property
    def detection_bound_s(self) -> float:
        """The longest a death can go undetected: misses x interval + timeout."""
        return self.misses * self.interval_s + self.timeout_s

    def due(self, now: float) -> list[int]:
        """The traders to ping now (empty until the next interval)."""
        if now < self._next_at:
            return []
        self._next_at = max(self._next_at + self.interval_s, now)
        return self.live

    def paused(self, now: float) -> bool:
        """True if this process was not ticking for longer than the detection window."""
        gap, self._last_tick = now - self._last_tick, now
        return gap > self.detection_bound_s

    def starting(self, other: int, now: float) -> bool:
        """True while `other` has never answered and the grace period lasts: a miss from
        it now does not count."""
        return other not in self._answered and now < self._grace_until

    def record(self, other: int, ok: bool, now: float) -> bool:
        """Record one ping outcome; True exactly when it makes `other` newly dead."""
        if other in self.dead or other not in self._missed:
            return False
        if ok:
            self._answered.add(other)
        elif self.starting(other, now):
            return False                       # not up yet: too early to count
        self._missed[other] = 0 if ok else self._missed[other] + 1
        if self._missed[other] >= self.misses:
            self.dead.add(other)
            return True
        return False

    def mark_dead(self, other: int) -> None:
        """Stop watching `other`: someone else already declared it dead."""
        if other in self._missed:
            self.dead.add(other)

    def add(self, other: int) -> None:
        """Start watching a (new) trader."""
        self._missed[other] = 0
        self.dead.discard(other)


class ServingWatch:
    """Whether any trader serves, judged by the launcher from probes of every listed
    trader. Pure: the time is passed in.

    A probe is True (some trader answered), False (traders are listed and none answered:
    hung, paused or stepped down) or None (it could not tell: the name server did not
    answer, or lists no trader, as one just restarted does). Only `misses` False probes
    in a row declare that no trader serves, once; True or None starts the count again.
    After a trader is launched, `restart` gives it `grace_s` to come up."""

    def __init__(self, misses: int, now: float, grace_s: float = 0.0):
        self.misses = misses
        self._missed = 0
        self._grace_until = now + grace_s

    def record(self, serving: bool | None, now: float) -> bool:
        """Record one probe; True exactly when it completes `misses` in a row that no
        trader answered."""
        if serving is not False or now < self._grace_until:
            self._missed = 0
            return False
        self._missed += 1
        return self._missed == self.misses

    def restart(self, now: float, grace_s: float) -> None:
        """A trader was just launched: count nothing for `grace_s`, then from zero."""
        self._missed = 0
        self._grace_until = now + grace_s
