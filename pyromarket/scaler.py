"""The coordinator's side of autoscaling: turn ScalePolicy decisions into launches.

failover.Failover owns the heartbeat loop and knows every live trader's load (from the
pings). It calls `Scaler.observe` every cycle (a launch ends once its trader is live);
while its trader is the coordinator it also calls `Scaler.tick` every cycle, and
`Scaler.replace` after it took over from a dead trader. A Scaler records each decision
as a scale event (a timestamped log line, and an entry in the trader's
`stats()["scale_events"]`) and starts the new trader through its Launcher on a thread
of its own, so a slow launch (an EC2 call) never holds up the heartbeats.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, Mapping

from . import config
from .autoscale import Decision, ScalePolicy
from .eventlog import EventLog, stamp
from .launcher import Launcher
from .trader import Trader

__all__ = ["Scaler"]


class Scaler:
    """The coordinator's autoscaler: asks the ScalePolicy on every heartbeat tick and
    runs each launch it decides on a thread of its own, logging the decision and the result."""

    def __init__(self, trader: Trader, cfg: config.AutoscaleConfig, launcher: Launcher,
                 log: EventLog):
        self.trader, self.cfg, self.launcher, self.log = trader, cfg, launcher, log
        self.policy = ScalePolicy(cfg.threshold, cfg.max_traders, cfg.cooldown_s)

    def observe(self, now: float, loads: Mapping[int, int]) -> None:
        """Every heartbeat cycle, coordinator or not: a launch this trader decided ends
        once its trader is live. (A replacement with a lower n than ours becomes the
        coordinator; if we stopped looking then, its launch would stay under way, and
        when it died in turn we would not replace it again.)"""
        self.policy.settle(now, loads)

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

    def _launch(self, d: Decision) -> None:
        me, at = self.trader.index, time.time()
        why = (f"its load of {d.mean_load:.0f} requests per {self.cfg.window_s:g} s per trader "
               f"passed {self.cfg.threshold}" if d.kind == "scale_out"
               else f"Trader {d.index} was declared dead")
        event = {"at": at, "time": stamp(at), "kind": d.kind, "trader": d.index, "by": me,
                 "mean_load": round(d.mean_load, 1), "live": d.live, "handle": None}
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
        threading.Thread(target=launch, name=f"launch-{d.index}", daemon=True).start()
