"""Run Pyro5's own name server where the market config says, with broadcast off.

    python -m nameserver --config conf/market.yaml

This is the same as `pyro5-ns -n <host> -p <port> -x`; it only reads host and port from
the config so they are written in one place, and it bounds messages, decoders and
handshakes as every market server does (rpc.bound_messages, rpc.guard_serving); a bare
`pyro5-ns` keeps Pyro5's defaults. `python -m pyromarket.start` runs this itself when no
name server answers.
"""

from __future__ import annotations

import argparse
import sys

import Pyro5.nameserver

from pyromarket import config, rpc
from pyromarket.process import address_problem, port_in_use


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nameserver", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help="market config (YAML); default: %(default)s")
    parser.add_argument("--run-dir", help="accepted for symmetry with the market's roles; unused")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ns = cfg.nameserver
    why = address_problem(ns.host, ns.port)
    if why:
        print(f"error: nameserver.host: {why}", file=sys.stderr)
        return 1
    if port_in_use(ns.host, ns.port):
        print(f"error: nameserver.port: {ns.host}:{ns.port} is already in use (a name server "
              f"already runs there, or another program holds the port)", file=sys.stderr)
        return 1
    # as every market server: bounded messages, decoders and handshakes
    rpc.bound_messages()
    rpc.guard_serving()
    Pyro5.nameserver.main(["-n", ns.host, "-p", str(ns.port), "-x"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
