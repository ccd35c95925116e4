"""The launcher: `python -m pyromarket.start` runs a whole market and prints a summary.

It uses a name server that already answers at the configured address (`pyro5-ns`),
or starts one; then the warehouse and every peer, each its own process; waits for the
election; trades for --duration seconds or until Ctrl-C; and stops every process it
started, also when a child crashes. A trader's crash is left to its survivors (when
none is left or none serves, and autoscaling replaces failed traders, supervisor.py
starts Trader 1 again), and a name server it started is started again. Each run logs to
its own folder.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sqlite3
import sys
import time
from typing import Sequence

from . import config, rpc
from .errors import ConfigError, Unavailable
from .market import Market
from .process import drop_stdout, wait_until
from .runtime import RENEW_NAME_S
from .status import StatusLine, format_rate, format_status
from .store import DatabaseInUse, check_database_file, lock_database
from .supervisor import Relauncher, traders_left

__all__ = ["main", "summarize", "format_summary", "trader_exit_note",
           "MAX_NAMESERVER_RESTARTS"]

MAX_NAMESERVER_RESTARTS = 5     # a name server that keeps exiting ends the run instead
STATUS_POLL_S = 1.0             # the status line asks the warehouse this often (and waits no longer)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pyromarket.start",
        description="Start a pyromarket: name server (if none answers), warehouse and peers; "
                    "trade; print a summary; stop everything.")
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help="market config (YAML); default: %(default)s")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="seconds to trade after the election; default: until Ctrl-C")
    parser.add_argument("--run-dir", default=None,
                        help="folder for this run's logs; default: <logs.dir>/run-<time>")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the warehouse database first, starting from initial_stock")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a live status line on stderr while trading (elapsed time, goods "
                             "shipped and stocked); default: only when stderr is a terminal")
    args = parser.parse_args(argv)
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        parser.error("--duration must be a finite number of seconds > 0 (leave it out to "
                     "trade until Ctrl-C)")
    return args


def _wants_progress(flag: bool | None) -> bool:
    """--progress or --no-progress if given; otherwise whether stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


def _run_dir(cfg: config.MarketConfig, given: str | None) -> str:
    if given:
        return given
    return os.path.join(cfg.logs.dir, time.strftime("run-%Y%m%d-%H%M%S-") + str(os.getpid()))


def _fresh(db_path: str) -> None:
    """Delete the warehouse database, unless a warehouse has it open (DatabaseInUse):
    deleting a live database would lose every commit made after it; or unless the file is
    not a warehouse database (sqlite3.DatabaseError): a db_path that names some other
    file by mistake must not cost that file."""
    if not os.path.exists(db_path):
        return
    fd = lock_database(db_path)
    try:
        check_database_file(db_path)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(db_path + suffix)
    finally:
        os.close(fd)


def summarize(market: Market, before: dict, elapsed_s: float) -> dict:
    """Figures for the trading window: what the warehouse shipped and each trader served."""
    with rpc.translated("warehouse"), market.warehouse() as w:
        after, audit = w.stats(), w.audit()
    traders = market.trader_stats()
    shipped = after["shipped_units"] - before["shipped_units"]
    events = scale_events(traders.values())
    return {"elapsed_s": elapsed_s, "goods_shipped": shipped,
            "gone": gone_traders(market.cfg.traders.count, events, traders),
            "accuracy": market.accuracy(traders),
            "mode": market.cfg.traders.mode,
            "shipped_per_s": shipped / elapsed_s if elapsed_s > 0 else 0.0,
            "goods_stocked": after["stocked_units"] - before["stocked_units"],
            "orders_per_commit": after["orders_per_commit"], "traders": traders,
            "conservation_ok": all(e["ok"] for e in audit.values()),
            "scale_events": events,
            "run_dir": market.run_dir}


def scale_events(trader_stats) -> list[dict]:
    """Every launch the live traders decided, oldest first, each once."""
    seen = {(e["at"], e["trader"], e["by"]): e for t in trader_stats for e in t.get("scale_events", ())}
    return [seen[k] for k in sorted(seen)]


def gone_traders(elected: int, events: list[dict], answering: dict) -> list[int]:
    """Traders the market had (the elected 1..N_t and any it launched) that no longer
    answer: failed, or fenced and retired. Their counters went with them."""
    had = set(range(1, elected + 1)) | {e["trader"] for e in events}
    return sorted(had - set(answering))


def format_summary(s: dict) -> str:
    """The end-of-run summary, one fact a line, from the launcher's collected figures."""
    lines = [f"traded for {s['elapsed_s']:.1f} s",
             f"goods shipped: {s['goods_shipped']} ({format_rate(s['shipped_per_s'])}/s); "
             f"goods stocked: {s['goods_stocked']}",
             f"warehouse orders per commit: {s['orders_per_commit']}"]
    for n, t in s["traders"].items():
        host = "a replica" if t["peer"] is None else f"peer {t['peer']}"
        lines.append(f"trader {n} ({host}, {t['mode']}): {_count(t['requests'], 'request')} "
                     f"({_count(t['buys'], 'buy')}, {_count(t['sells'], 'sell')}; "
                     f"{t['shipped']} shipped, {t['unavailable']} unavailable, "
                     f"{t['local_denials']} denied from cache, {t['refused']} refused with an error)")
    for n in s.get("gone", ()):
        lines.append(f"trader {n}: gone before the end (failed, or fenced and retired); the "
                     f"over- and under-sells below leave out what it served")
    a = s["accuracy"]
    lines.append(f"over-sells: {a['oversells']} ({a['oversell_pct']:.2f}% of {a['buy_requests']} "
                 f"buy requests); actual under-sells: {a['undersells']} "
                 f"({a['undersell_pct']:.2f}%, from the ledger)")
    unrecorded = sum(t.get("unrecorded_denials", 0) for t in s["traders"].values())
    if unrecorded:
        lines.append(f"  (the disk refused {unrecorded} local denials' records, so under-sells "
                     f"may be undercounted by up to that many)")
    for e in s.get("scale_events", ()):
        what = "scaled out to" if e["kind"] == "scale_out" else "replaced"
        attempt = e.get("attempt", 1)
        retry = f"try {attempt}, the one before never registered; " if attempt > 1 else ""
        lines.append(f"autoscale: {e['time']} trader {e['by']} {what} trader {e['trader']} "
                     f"({retry}load {e['mean_load']} per trader, {e['live']} live; {e['handle']})")
    lines.append("conservation per product: " + ("ok" if s["conservation_ok"] else "VIOLATED"))
    lines.append(f"logs: {s['run_dir']}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """`1 buyer`, `2 buyers`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def trader_exit_note(name: str, left: int | None, relaunching: bool = False) -> str:
    """What the launcher says when trader process `name` exits; `left` counts the trader
    processes still running (None: it cannot know, as with replicas on EC2), and
    `relaunching` says whether the launcher starts a trader again when none is left."""
    if left == 0 and relaunching:
        return f"trader process {name} exited, and no trader is left"
    if left == 0:
        return (f"trader process {name} exited, and no trader is left: buyers and sellers "
                f"keep retrying their requests, but nothing trades for the rest of this run "
                f"(only a live trader launches replacements, unless autoscaling replaces "
                f"failed traders)")
    return f"trader process {name} exited; its survivors take over"


def _trade(market: Market, duration: float | None, progress: _Progress) -> float:
    """Wait out the trading window, drawing `progress`; return its length. Raises if a
    child other than a trader or the name server exited (a trader may fail: its survivors
    take over, or `Relauncher` starts one; the name server is started again, at most
    MAX_NAMESERVER_RESTARTS times)."""
    started, reported, revived, elapsed = time.monotonic(), set(), 0, 0.0
    relauncher = Relauncher.for_market(market) if Relauncher.wanted(market.cfg) else None
    try:
        while duration is None or elapsed < duration:
            time.sleep(0.2)
            for name in (set(market.crashed()) - set(market.crashed(include_traders=False))
                         - reported):
                reported.add(name)
                progress.say(trader_exit_note(name, traders_left(market), relauncher is not None))
            if relauncher is not None and (said := relauncher.check()):
                progress.say(said)
            if ("nameserver" in market.crashed(include_traders=False)
                    and revived < MAX_NAMESERVER_RESTARTS and market.revive_nameserver()):
                revived += 1
                progress.say(f"the name server exited; started it again ({revived} of at most "
                             f"{MAX_NAMESERVER_RESTARTS}); the market's names are bound again "
                             f"within {RENEW_NAME_S:.0f} s, and trading goes on meanwhile")
            if market.crashed(include_traders=False):
                raise RuntimeError(f"market processes exited unexpectedly: "
                                   f"{market.crashed(include_traders=False)} "
                                   f"(their output is in {market.run_dir})")
            elapsed = time.monotonic() - started
            progress.tick(elapsed)             # the last one is drawn at the full duration
    finally:
        if relauncher is not None:
            relauncher.close()
    return elapsed


class _Progress:
    """The status line while the market trades (status.py): redrawn at every tick of
    `_trade`, with the warehouse's counters asked at most once every STATUS_POLL_S
    through one proxy kept for the purpose. Disabled, it asks nothing and only prints
    what `say` is given."""

    def __init__(self, market: Market, before: dict, duration: float | None, enabled: bool):
        self._market, self._before, self._duration = market, before, duration
        self.line = StatusLine(sys.stderr, enabled, shutil.get_terminal_size().columns)
        self._proxy, self._counts, self._next_poll = None, None, 0.0

    def tick(self, elapsed_s: float) -> None:
        if not self.line.enabled:
            return
        if time.monotonic() >= self._next_poll:
            self._counts = self._poll(elapsed_s)
            self._next_poll = time.monotonic() + STATUS_POLL_S
        self.line.show(format_status(elapsed_s, self._duration, self._counts))

    def say(self, text: str) -> None:
        """An event line on stdout, below an erased status line."""
        self.line.clear()
        print(text, flush=True)

    def close(self) -> None:
        self.line.clear()
        rpc.release(self._proxy)
        self._proxy = None

    def _poll(self, elapsed_s: float) -> tuple[int, int, float] | None:
        """(shipped, stocked, shipped per second) since trading began; None while the
        warehouse does not answer within STATUS_POLL_S (the proxy is then made again at
        the next poll)."""
        try:
            with rpc.translated("warehouse"):
                self._proxy = self._proxy or self._market.warehouse(STATUS_POLL_S)
                now = self._proxy.stats()
        except Unavailable:
            rpc.release(self._proxy)
            self._proxy = None
            return None
        shipped = now["shipped_units"] - self._before["shipped_units"]
        return (shipped, now["stocked_units"] - self._before["stocked_units"],
                shipped / elapsed_s if elapsed_s > 0 else 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a market and return the exit status: 0 done, 1 it failed, 2 a bad config,
    130 a second Ctrl-C."""
    args = _parse(argv)
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fresh:
        try:
            _fresh(cfg.warehouse.db_path)
        except DatabaseInUse as exc:
            print(f"error: --fresh: {exc}", file=sys.stderr)
            return 1
        except sqlite3.DatabaseError as exc:
            print(f"error: --fresh: {cfg.warehouse.db_path}: {exc}; nothing was deleted",
                  file=sys.stderr)
            return 1
        except OSError as exc:          # the lock file or a deletion refused by the OS
            print(f"error: --fresh: {exc.filename or cfg.warehouse.db_path}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM stops like Ctrl-C
    market = Market(cfg, args.config, _run_dir(cfg, args.run_dir))
    code, started = 0, False
    try:
        print(f"starting the market from {args.config} ({_count(cfg.buyers_count, 'buyer')}, "
              f"{_count(cfg.sellers_count, 'seller')}, N_t={cfg.traders.count}, "
              f"{cfg.traders.mode} mode); "
              f"logs in {market.run_dir}", flush=True)
        market.start()
        started = True
        _run(market, args.duration, _wants_progress(args.progress))
    except (RuntimeError, TimeoutError, Unavailable) as exc:
        crashed = _crashed_soon(market)
        if crashed and "exited unexpectedly" not in str(exc):
            exc = RuntimeError(f"market processes exited unexpectedly: {crashed} "
                               f"(their output is in {market.run_dir}); then: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\ninterrupted again; stopping without a summary" if started
              else "\ninterrupted during start-up; stopping", flush=True)
        code = 130
    except BrokenPipeError:             # stdout (or stderr) went away, as with `| head`
        drop_stdout()
        with contextlib.suppress(OSError):
            print("error: the launcher's output was closed; stopping the market",
                  file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # the stop is bounded: let it finish
        market.stop()
    return code


def _crashed_soon(market: Market, within_s: float = 1.0) -> list[str]:
    """Children that exited. A dead child's connections reset a moment before the
    process can be reaped, so look for up to `within_s`."""
    with contextlib.suppress(TimeoutError):
        wait_until(market.crashed, within_s, "a crashed child")
    return market.crashed()


def _run(market: Market, duration: float | None, show_progress: bool) -> None:
    """Trade for `duration` (or until Ctrl-C), then stop the clients and summarize."""
    with rpc.translated("warehouse"), market.warehouse() as w:
        before = w.stats()
    traders = sorted(market.traders())
    progress = _Progress(market, before, duration, show_progress)
    started = time.monotonic()
    try:                        # from the announcement on, Ctrl-C ends with a summary
        print(f"elected traders: {traders} (peers {sorted(market.trader_peers)}); trading"
              + (f" for {duration} s" if duration else " until Ctrl-C"), flush=True)
        _trade(market, duration, progress)
    except KeyboardInterrupt:
        progress.say("\ninterrupted; stopping")
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    market.stop_clients()
    print(format_summary(summarize(market, before, elapsed)), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
