"""Conveniences for a Python REPL next to a running market.

    >>> from pyromarket.repl import trader, warehouse
    >>> t = trader(1)                  # market.trader.1, found through the name server
    >>> t.buy("salt", 2)

Importing this module registers the market's exceptions with Pyro5, so a refused
call raises a readable `pyromarket.errors.InvalidRequest` instead of Pyro5's
`SerializeError`. A plain `Pyro5.api.Proxy("PYRONAME:market.trader.1")` works too,
once this module (or pyromarket.rpc.register_errors()) has been imported.
"""

from __future__ import annotations

from . import config, rpc

__all__ = ["trader", "warehouse", "traders"]

rpc.register_errors()


def _ns_addr(config_path: str) -> str:
    ns = config.load(config_path).nameserver
    return f"{ns.host}:{ns.port}"


def warehouse(config_path: str = config.DEFAULT_PATH, timeout_s: float = 10.0):
    """A proxy to market.warehouse with a deadline on every call."""
    return rpc.proxy(f"PYRONAME:{rpc.WAREHOUSE_NAME}@{_ns_addr(config_path)}", timeout_s)


def trader(n: int = 1, config_path: str = config.DEFAULT_PATH, timeout_s: float = 10.0):
    """A proxy to market.trader.<n> with a deadline on every call."""
    return rpc.proxy(f"PYRONAME:{rpc.trader_name(n)}@{_ns_addr(config_path)}", timeout_s)


def traders(config_path: str = config.DEFAULT_PATH) -> dict[int, str]:
    """{n: uri} of the traders registered now."""
    cfg = config.load(config_path)
    with rpc.nameserver(cfg.nameserver.host, cfg.nameserver.port) as ns:
        return rpc.list_traders(ns)
