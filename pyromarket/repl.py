"""Conveniences for a Python REPL next to a running market.

    >>> from pyromarket.repl import trader, warehouse
    >>> t = trader(1)                  # market.trader.1, found through the name server
    >>> t.buy("salt", 2)

Importing this module registers the market's exceptions with Pyro5, so a refused
call raises `pyromarket.errors.InvalidRequest` itself. A plain
`Pyro5.api.Proxy("PYRONAME:market.trader.1")` works too; without this import its
errors arrive as their built-in twins (`ValueError: InvalidRequest: ...`, see
rpc.register_errors).
"""

from __future__ import annotations

from . import config, rpc
from .errors import Unavailable

__all__ = ["trader", "warehouse", "traders"]

rpc.register_errors()


def _proxy(name: str, config_path: str, timeout_s: float):
    """A proxy to the object registered as `name` now; otherwise Unavailable saying what
    is missing (no name server: is the market running?). It holds the object's address,
    not the name: a PYRONAME proxy would look the name up again when it connects, through
    Pyro5's locate_ns, which has no deadline. After a failover, ask for a new proxy."""
    ns_cfg = config.load(config_path).nameserver
    where = f"{ns_cfg.host}:{ns_cfg.port}"
    try:
        with rpc.nameserver(ns_cfg.host, ns_cfg.port) as ns, rpc.translated("name server list"):
            registered = ns.list(prefix="market.")
    except Unavailable:
        raise Unavailable(f"no name server answers at {where} (from {config_path}); is the "
                          f"market running? Start it with python -m pyromarket.start") from None
    if name not in registered:
        raise Unavailable(f"{name} is not registered at {where}; registered now: "
                          f"{sorted(registered) or 'nothing'}")
    return rpc.proxy(str(registered[name]), timeout_s)


def warehouse(config_path: str = config.DEFAULT_PATH, timeout_s: float = 10.0):
    """A proxy to market.warehouse with a deadline on every call."""
    return _proxy(rpc.WAREHOUSE_NAME, config_path, timeout_s)


def trader(n: int = 1, config_path: str = config.DEFAULT_PATH, timeout_s: float = 10.0):
    """A proxy to market.trader.<n> with a deadline on every call."""
    return _proxy(rpc.trader_name(n), config_path, timeout_s)


def traders(config_path: str = config.DEFAULT_PATH) -> dict[int, str]:
    """{n: uri} of the traders registered now."""
    cfg = config.load(config_path)
    with rpc.nameserver(cfg.nameserver.host, cfg.nameserver.port) as ns:
        return rpc.list_traders(ns)
