"""What a buyer or seller peer does: find traders by name and trade until stopped.

Every request gets a fresh request_id and keeps it through every retry, so a request
that reached the warehouse before its trader failed is never applied twice. A request
ends only with a final outcome (shipped, unavailable, stocked, or a refusal); if the
peer is told to stop while a request is unresolved, it keeps trying for a short grace
period and then logs the request as abandoned, never silently. A call in flight to a
trader that a broadcast reports failed or replaced ends at once, and is retried elsewhere
with the same id, rather than waiting out its deadline on a trader that hangs.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from typing import Iterator

from . import config, rpc, runtime
from .errors import MarketError, NotATrader, Unavailable
from .eventlog import EventLog
from .orders import new_request_id

__all__ = ["TraderDirectory", "Trading"]

REFRESH_SHORT_S = 0.5    # re-read the names this often while fewer than N_t traders are known
REFRESH_LONG_S = 5.0     # and this often otherwise, so new traders are found


class TraderDirectory:
    """The traders this peer can reach, looked up by name; one long-lived proxy to each
    trader, none to the name server between lookups. Used from one thread only (the
    peer's trading loop)."""

    def __init__(self, cfg: config.MarketConfig, rng: random.Random,
                 stats: Counter[str] | None = None):
        """`stats`: counts `name_server_misses`, refreshes that failed while traders
        were known (the peer then trades on with those)."""
        self._cfg, self._rng = cfg, rng
        self._stats = stats if stats is not None else Counter()
        self._proxies: dict[int, object] = {}
        self._refreshed_at = float("-inf")
        self._ns_missed = False                      # the last refresh found no name server
        self._suspect_until: dict[int, float] = {}   # trader n -> when to trust it again
        self._quarantine_s = 2 * cfg.rpc.call_timeout_s
        self._down: set[int] = set()                 # told by a survivor; other threads write
        self._up: set[int] = set()                   # told by a launched trader
        self._call: _Call | None = None              # the trading loop's call in flight
        self._down_lock = threading.Lock()           # guards _down, _up and _call

    def note_down(self, n: int) -> None:
        """A survivor says trader n failed (called from a Pyro5 worker thread); a call in
        flight to it ends at once."""
        with self._down_lock:
            self._down.add(n)
            self._drop_call_to(n)

    def note_up(self, n: int) -> None:
        """Trader n (new, or a replacement) now serves: look the names up again. A call in
        flight to slot n (to the trader replaced) ends at once."""
        with self._down_lock:
            self._up.add(n)
            self._drop_call_to(n)

    @contextlib.contextmanager
    def calling(self, n: int, proxy) -> Iterator[_Call]:
        """Mark the block as a call to trader n. News that n failed or was replaced then
        ends the call at once (`rpc.Interruptible`), also one still connecting, so the
        peer retries elsewhere with the same request id instead of waiting out
        `rpc.call_timeout_s` on a trader that hangs. Dropping a call is always safe: a
        retry of an applied order is a replay."""
        call = _Call(n, rpc.Interruptible(proxy))
        with call.guard:
            with self._down_lock:
                self._call = call
            try:
                yield call
            finally:
                with self._down_lock:
                    self._call = None

    def _drop_call_to(self, n: int) -> None:
        """End the call in flight if it goes to trader n (the caller holds the lock)."""
        call = self._call
        if call is not None and call.n == n:
            call.dropped = True
            call.guard.end()

    def pick(self):
        """(n, proxy) of a random live trader; raises Unavailable if none is registered."""
        with self._down_lock:
            down, self._down = self._down, set()
            up, self._up = self._up, set()
        for n in down:
            self.forget(n)
        for n in up:                      # a replacement's URI differs from the dead one's
            self.forget(n, suspect=False)
            self._suspect_until.pop(n, None)
        if up or self._due():
            try:
                self.refresh()
            except Unavailable:
                self._ns_missed = True      # until it answers, ask only every REFRESH_LONG_S
                if not self._proxies:
                    raise
                self._stats["name_server_misses"] += 1   # trade on with the traders known
            else:
                self._ns_missed = False
        if not self._proxies:
            raise Unavailable("no trader is registered yet")
        n = self._rng.choice(sorted(self._proxies))
        return n, self._proxies[n]

    def _due(self) -> bool:
        age = time.monotonic() - self._refreshed_at
        few = len(self._proxies) < self._cfg.traders.count and not self._ns_missed
        return not self._proxies or age > (REFRESH_SHORT_S if few else REFRESH_LONG_S)

    def refresh(self) -> None:
        """Read the traders' names; one short connection to the name server each time, so
        it holds none for idle peers (each would keep one of its worker threads)."""
        self._refreshed_at = time.monotonic()
        with rpc.nameserver(self._cfg.nameserver.host, self._cfg.nameserver.port) as ns:
            found = rpc.list_traders(ns)
        for n in set(self._proxies) - set(found):
            self.forget(n, suspect=False)
        now = time.monotonic()
        trusted = {n: uri for n, uri in found.items() if self._suspect_until.get(n, 0) <= now}
        for n, uri in (trusted or found).items():     # all suspect: try them anyway
            if n not in self._proxies:
                self._proxies[n] = rpc.proxy(uri, self._cfg.rpc.call_timeout_s)

    def forget(self, n: int, suspect: bool = True) -> None:
        """Drop trader n's proxy; if it failed (`suspect`), avoid it for a while."""
        if suspect:
            self._suspect_until[n] = time.monotonic() + self._quarantine_s
        rpc.release(self._proxies.pop(n, None))

    def close(self) -> None:
        for n in list(self._proxies):
            self.forget(n, suspect=False)


class _Call:
    """The trading loop's call in flight to trader n; `dropped` once news about n ended it."""
    __slots__ = ("n", "guard", "dropped")

    def __init__(self, n: int, guard: rpc.Interruptible):
        self.n, self.guard, self.dropped = n, guard, False


class Trading:
    """A buyer's or a seller's loop. `stats` counts outcomes for the peer's status()."""

    def __init__(self, peer: config.PeerConfig, cfg: config.MarketConfig, log: EventLog,
                 stop: threading.Event, rng: random.Random | None = None):
        self.peer, self.cfg, self.log, self.stop = peer, cfg, log, stop
        self.rng = rng or random.Random()
        self.name = f"{peer.role.capitalize()} {peer.id}"
        self.stats: Counter[str] = Counter()
        self.directory = TraderDirectory(cfg, self.rng, self.stats)
        self.pending: str | None = None

    def run(self) -> None:
        try:
            self.run_buyer() if self.peer.role == "buyer" else self.run_seller()
        finally:
            self.directory.close()

    def run_buyer(self) -> None:
        """Buy a random product and quantity, then wait `buyers.pace_s`, until stopped."""
        while not self.stop.is_set():
            product = self.rng.choice(self.cfg.products)
            self.request("buy", product, self.rng.randint(1, self.cfg.buyers.max_qty))
            if self.cfg.buyers.pace_s:
                self.stop.wait(self.cfg.buyers.pace_s)

    def run_seller(self) -> None:
        """Every `sellers.period_s`, accrue `goods_per_period` of one random product and
        deposit them, in orders of at most `max_quantity`, until stopped."""
        period, per = self.cfg.sellers.period_s, self.cfg.sellers.goods_per_period
        next_accrual = time.monotonic() + period
        while not self.stop.wait(max(0.0, next_accrual - time.monotonic())):
            next_accrual += period
            stash, product = per, self.rng.choice(self.cfg.products)
            self.log(f"{self.name} accrued {per} {product}")
            while stash > 0 and not self.stop.is_set():
                qty = min(stash, self.cfg.max_quantity)
                self.request("sell", product, qty)
                stash -= qty

    def request(self, kind: str, product: str, qty: int) -> dict | None:
        """Send one order until it has a final outcome; None if abandoned at shutdown."""
        rid = new_request_id(f"p{self.peer.id}")
        self.pending = rid
        self.stats["requests"] += 1
        give_up_at = None
        for attempt, delay in enumerate(runtime.backoff_delays(self.cfg.rpc.retry_backoff_s), 1):
            outcome = self._attempt(kind, product, qty, rid, attempt)
            if outcome is not None:
                self.pending = None
                return outcome
            if self.stop.is_set():
                # enough for a full call timeout and a retry elsewhere, then give up loudly
                give_up_at = give_up_at or time.monotonic() + 2 * self.cfg.rpc.call_timeout_s + 1
                if time.monotonic() >= give_up_at:
                    break
            self.stats["retries"] += 1
            self.stop.wait(delay) if not self.stop.is_set() else time.sleep(min(delay, 0.2))
        self.stats["abandoned"] += 1
        self.log(f"{self.name} abandoned request {rid} ({kind} {qty} {product}) at shutdown; "
                 f"it may or may not have been applied (see the warehouse ledger)")
        self.pending = None
        return None

    def _attempt(self, kind: str, product: str, qty: int, rid: str, attempt: int) -> dict | None:
        try:
            n, trader = self.directory.pick()
        except Unavailable as exc:
            self.log(f"{self.name} found no trader for request {rid}: {exc}")
            return None
        call = None
        try:
            with self.directory.calling(n, trader) as call, rpc.translated(f"trader {n}"):
                reply = getattr(trader, kind)(product, qty, rid, self.name.lower(), attempt)
        except (Unavailable, NotATrader) as exc:
            self.directory.forget(n)
            self.stats["switches"] += 1
            if call is not None and call.dropped:
                self.stats["dropped_calls"] += 1
                self.log(f"{self.name} dropped its call to trader {n} for request {rid}: "
                         f"trader {n} was reported failed or replaced; retrying with the "
                         f"same request id")
            else:
                self.log(f"{self.name} got no answer from trader {n} for request {rid} "
                         f"({exc}); retrying with the same request id")
            return None
        except MarketError as exc:
            self.stats["refused"] += 1
            self.log(f"{self.name}'s request {rid} was refused by trader {n}: {exc}")
            return {"outcome": "refused", "error": str(exc)}
        self.stats[reply["outcome"]] += 1
        self.log(_describe(self.name, kind, product, qty, n, reply))
        return reply


def _describe(name: str, kind: str, product: str, qty: int, n: int, reply: dict) -> str:
    if reply["outcome"] == "shipped":
        return f"{name} bought {qty} {product} through trader {n}"
    if reply["outcome"] == "stocked":
        return f"{name} deposited {qty} {product} with trader {n}"
    return f"{name} could not buy {qty} {product} through trader {n}: none available"
