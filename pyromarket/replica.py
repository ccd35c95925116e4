"""A launched trader: a process that only serves `market.trader.<n>` (autoscaling, A5).

The autoscaler's Launcher starts it, here or on an EC2 instance. It is not a peer: it
takes no part in the election. It serves a Trader on its own daemon (any free port),
joins the warehouse for a fresh epoch, registers its name, watches the other traders
like any trader does (failover.Failover), and tells every peer it is up. If it steps
down (it was fenced: declared dead, say after a pause, or replaced), it exits.

Started by a local launcher, it watches the market launcher's process (the
PYROMARKET_OWNER_PID the market gives its children) and exits if that is gone, so a
killed market leaves no replica behind.

    python -m pyromarket.replica --config conf/market.yaml --index 2
"""

from __future__ import annotations

import argparse
import os
import threading
from typing import Sequence

from . import config, rpc, runtime
from .post import TradingPost
from .process import alive

__all__ = ["main", "OWNER_ENV"]

OWNER_ENV = "PYROMARKET_OWNER_PID"
RETIRED_POLL_S = 0.5        # how soon a replica that stepped down notices and exits


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pyromarket.replica",
                                     description="Serve one more trader for a running market.")
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help="market config (YAML); default: %(default)s")
    parser.add_argument("--run-dir", default=None,
                        help="folder for the event log; default: the config's logs.dir")
    parser.add_argument("--index", type=int, required=True, help="n of market.trader.<n>")
    parser.add_argument("--host", default=None,
                        help="address to listen on; default: the config's autoscale.replica_host")
    parser.add_argument("--port", type=int, default=0, help="port; default: any free one")
    parser.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    args = parser.parse_args(argv)
    if args.index < 1:
        parser.error("--index must be >= 1")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be from 0 (any free port) to 65535")
    cores = sorted(os.sched_getaffinity(0))
    if args.core is not None and args.core not in cores:
        parser.error(f"--core must be one this process may run on: {cores}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a launched trader --index until SIGTERM or SIGINT, or until it steps down
    because it was fenced (exit 0 either way)."""
    args = _parse(argv)
    cfg = runtime.load_config(args.config)
    stop = runtime.stop_on_signals()
    _watch_owner(stop)
    rpc.configure(cfg.rpc.threadpool_size)
    server = runtime.serve(args.host or cfg.autoscale.replica_host, args.port).start()
    post = TradingPost(args.index, None, cfg, server, args.run_dir, args.config, stop)
    try:
        uri = post.open(core=args.core)
        post.publish()
        post.log(f"Trader {args.index} was launched and serves at {uri} (epoch "
                 f"{post.trader.epoch})")
        post.announce()
        retired = _serve(post, stop)
    finally:
        post.log(f"Trader {args.index} stops")
        post.close(keep_launched=retired)
        server.close()
    return 0


def _serve(post: TradingPost, stop: threading.Event) -> bool:
    """Serve until `stop`, or until the trader steps down (it was fenced): a replica has
    no other role, so it exits then, and frees its warehouse connections for the trader
    that replaces it. Returns whether it stepped down."""
    while not stop.wait(RETIRED_POLL_S):
        if post.trader.retired.is_set():
            post.log(f"Trader {post.index} exits: it stepped down, and a launched trader "
                     f"has no other role (the traders it launched keep serving)")
            return True
    return False


def _watch_owner(stop: threading.Event) -> None:
    owner = os.environ.get(OWNER_ENV, "")
    if not owner.isdigit():
        return

    def watch() -> None:
        while not stop.wait(0.5):
            if not alive(int(owner)):
                stop.set()
    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
