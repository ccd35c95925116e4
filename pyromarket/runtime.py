"""What every role process does at start and stop: arguments, signals, the name server.

Shared by warehouse.py and peer.py so each role's main() stays a short story.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Callable, Sequence

from . import config, rpc
from .errors import Unavailable
from .eventlog import EventLog

__all__ = ["role_args", "load_config", "serve", "stop_on_signals", "connect_ns", "renew",
           "open_log", "backoff_delays", "trader_core", "RENEW_NAME_S"]

RENEW_NAME_S = 1.0      # how often a warehouse or trader checks that its name is still bound


def role_args(prog: str, description: str, argv: Sequence[str] | None,
              with_peer_id: bool = False) -> argparse.Namespace:
    """The options every role's `main` takes: --config and --run-dir (and --id)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help="market config (YAML); default: %(default)s")
    parser.add_argument("--run-dir", default=None,
                        help="folder for this run's event logs; default: the config's logs.dir")
    if with_peer_id:
        parser.add_argument("--id", type=int, required=True, help="this peer's id in the config")
    return parser.parse_args(argv)


def load_config(path: str) -> config.MarketConfig:
    """The config, or a one-line error naming the key and exit code 2."""
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(host: str, port: int) -> rpc.Server:
    """This role's Pyro5 server on host:port, or a one-line error and exit code 1 if the
    address is taken (a second copy of this role, say) or cannot be served here."""
    try:
        return rpc.Server(host, port)
    except rpc.CannotServe as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the role finishes what it is doing and exits.

    The handler takes no lock: it writes a byte to a pipe, and a thread of its own sets
    the event. A handler that set the event itself deadlocked when a second signal came
    while the first one's `set()` held the event's lock (a trader hung for good after
    two quick SIGTERMs; a double Ctrl-C reaches every child too)."""
    stop = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handler(signum, _frame):
        try:
            os.write(write_end, b"!")
        except BlockingIOError:       # the pipe is full: a stop is already on its way
            pass

    def relay():
        os.read(read_end, 1)
        stop.set()
    threading.Thread(target=relay, name="signals", daemon=True).start()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def peer_config(cfg: config.MarketConfig, peer_id: int) -> config.PeerConfig:
    """The config's peer `peer_id` (--id), or a one-line error and exit code 2."""
    try:
        return cfg.peer(peer_id)
    except config.ConfigError:
        ids = ", ".join(str(p.id) for p in cfg.peers)
        print(f"error: --id {peer_id}: {cfg.source} has no peer with that id (its peers: "
              f"{ids})", file=sys.stderr)
        raise SystemExit(2) from None


def open_log(run_dir: str | None, cfg: config.MarketConfig, name: str) -> EventLog:
    """This role's event log in the run's folder, or a one-line error and exit code 1 if
    the folder cannot be made or the file opened (EventLog makes the folder)."""
    folder = run_dir or cfg.logs.dir
    try:
        return EventLog(os.path.join(folder, f"{name}.txt"))
    except OSError as exc:
        key = "--run-dir" if run_dir else "logs.dir"
        print(f"error: {key}: cannot create the folder {folder} or a log in it "
              f"({exc.strerror})", file=sys.stderr)
        raise SystemExit(1) from None


def trader_core(index: int) -> int:
    """The CPU core trader n runs on when pinned: (n-1) mod cores, so traders get a core
    each where there are enough, and a survivor never shares a dead trader's core."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[(index - 1) % len(cores)]


def backoff_delays(first_s: float, cap_s: float = 1.0):
    """first, 2*first, 4*first ... capped: how long to pause before each retry."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, cap_s)


def renew(name: rpc.Registration, log: EventLog, who: str,
          before_bind: Callable[[], bool] | None = None) -> None:
    """Bind a role's name again if the name server lost it (a restarted one knows no
    names), unless `before_bind()` says no. Logs a renewal, and once when the name server
    stops (or starts again) answering; the role serves on meanwhile, at its unchanged
    address."""
    was_down = name.down
    try:
        if name.renew(before_bind):
            log(f"{who} registered {name.name} again: the name server had lost it")
        elif was_down:
            log(f"{who} reaches the name server again; {name.name} is still bound")
    except Unavailable as exc:
        if not was_down:
            log(f"{who} cannot reach the name server to renew {name.name} ({exc}); it "
                f"serves on and retries every {RENEW_NAME_S} s")


def connect_ns(cfg: config.MarketConfig, timeout_s: float = 15.0,
               stop: threading.Event | None = None):
    """The name server proxy, retrying with backoff until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    for delay in backoff_delays(0.05, 0.5):
        try:
            return rpc.nameserver(cfg.nameserver.host, cfg.nameserver.port)
        except Unavailable:
            if time.monotonic() + delay > deadline or (stop and stop.is_set()):
                raise
            time.sleep(delay)
