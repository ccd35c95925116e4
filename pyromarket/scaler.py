"""The coordinator's side of autoscaling: turn ScalePolicy decisions into launches.

failover.Failover owns the heartbeat loop and knows every live trader's load (from the
pings). It calls `Scaler.observe` every cycle: a launch ends once its trader is live, and
one that does not show up in time is given up on, its process (or instance) stopped, and,
for a replacement with tries left, launched again. While its trader is the coordinator
Failover also calls `Scaler.tick` every cycle, and `Scaler.replace` after it took over
from a dead trader. A Scaler records each decision as a scale event (a timestamped log
line, and an entry in the trader's `stats()["scale_events"]`) and hands the Launcher's
calls to a thread of its own, in order, so a slow launch (an EC2 call) never holds up the
heartbeats and a stop never overtakes the launch after it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Mapping

from . import config
from .autoscale import Decision, GiveUp, ScalePolicy
from .eventlog import EventLog, stamp
from .launcher import Launcher
from .trader import Trader

__all__ = ["Scaler"]


class Scaler:
    """The coordinator's autoscaler: asks the ScalePolicy on every heartbeat tick and
    runs the launches it decides (and the stops of those it gives up on) on a thread of
    its own, logging each decision and its result."""

    def __init__(self, trader: Trader, cfg: config.AutoscaleConfig, launcher: Launcher,
                 log: EventLog):
        self.trader, self.cfg, self.launcher, self.log = trader, cfg, launcher, log
        self.policy = ScalePolicy(cfg.threshold, cfg.max_traders, cfg.cooldown_s,
                                  cfg.launch_timeout_s, cfg.launch_attempts)
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def observe(self, now: float, loads: Mapping[int, int]) -> None:
        """Every heartbeat cycle, coordinator or not: a launch this trader decided ends
        once its trader is live, or is given up on (and perhaps tried again) once its time
        is up. (A replacement with a lower n than ours becomes the coordinator; if we
        stopped looking then, its launch would stay under way, and when it died in turn
        we would not replace it again.)"""
        for g in self.policy.settle(now, loads):
            self._give_up(g)

    def tick(self, now: float, loads: Mapping[int, int], taken: Iterable[int]) -> None:
        """`loads`: {n: requests in the window} of every live trader, this one included."""
        decision = self.policy.decide(now, loads, taken)
        if decision is not None:
            self._launch(decision)

    def replace(self, now: float, dead: int, loads: Mapping[int, int]) -> None:
        """Trader `dead` was declared dead: launch a replacement under its n, if the
        config asks for replacements and the policy agrees."""
        if self.cfg.replace_failed:
            decision = self.policy.replacement(now, dead, loads)
            if decision is not None:
                self._launch(decision)

    def _give_up(self, g: GiveUp) -> None:
        me, n = self.trader.index, g.index
        then = (f"; trying again ({g.retry.attempt} of {self.cfg.launch_attempts})" if g.retry
                else "" if g.kind == "scale_out"
                else f"; no tries left of {self.cfg.launch_attempts}, so it is not replaced")
        self.log(f"Trader {me} gives up on launch {g.attempt} of Trader {n}: it did not register "
                 f"within {g.waited_s:g} s, and is stopped{then}")
        self._submit(lambda: self._stop(n))
        if g.retry is not None:
            self._launch(g.retry)

    def _launch(self, d: Decision) -> None:
        me, at = self.trader.index, time.time()
        why = (f"its load of {d.mean_load:.0f} requests per {self.cfg.window_s:g} s per trader "
               f"passed {self.cfg.threshold}" if d.kind == "scale_out"
               else f"Trader {d.index} was declared dead" if d.attempt == 1
               else f"launch {d.attempt - 1} of it did not register in time")
        event = {"at": at, "time": stamp(at), "kind": d.kind, "trader": d.index, "by": me,
                 "mean_load": round(d.mean_load, 1), "live": d.live, "attempt": d.attempt,
                 "handle": None}
        self.trader.scale_events.append(event)
        verb = "launches a new" if d.kind == "scale_out" else "launches a replacement"
        self.log(f"Trader {me} {verb} Trader {d.index}: {why} ({d.live} live, cap "
                 f"{self.cfg.max_traders})")

        def launch() -> None:
            try:
                event["handle"] = self.launcher.launch(d.index)
                self.log(f"Trader {me} started Trader {d.index} ({event['handle']})")
            except Exception as exc:             # a launcher error must not end the heartbeats
                event["handle"] = f"failed: {exc}"
                self.log(f"Trader {me} could not start Trader {d.index}: {exc}")
        self._submit(launch)

    def _stop(self, n: int) -> None:
        try:
            self.launcher.stop(n)
        except Exception as exc:                 # e.g. EC2 refused; the log says so
            self.log(f"Trader {self.trader.index} could not stop its launch of Trader {n}: {exc}")

    def _submit(self, job: Callable[[], None]) -> None:
        """Run `job` on the launcher thread, after every job submitted before it."""
        self._jobs.put(job)
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="launcher", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            self._jobs.get()()
