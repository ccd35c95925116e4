"""Test helpers shared by unit and integration tests: config dicts (and free ports), an
event log that keeps its lines, and a server that never answers."""

from __future__ import annotations

import contextlib
import copy
import socket
from typing import Iterator

import yaml

from pyromarket.process import free_ports

__all__ = ["BASE", "config_dict", "write_config", "free_ports", "Log", "silent_server"]

BASE = {
    "nameserver": {"host": "127.0.0.1", "port": 0},
    "warehouse": {"host": "127.0.0.1", "port": 0, "db_path": "wh.sqlite3", "synchronous": "FULL",
                  "batch_max": 64, "initial_stock": {"salt": 10, "fish": 10, "boar": 10}},
    "products": ["salt", "fish", "boar"],
    "max_quantity": 100,
    "traders": {"count": 2, "mode": "sync"},
    "cache": {"ttl_s": 0.5, "reserve_on_forward": True},
    "heartbeat": {"interval_s": 0.2, "timeout_s": 0.2, "misses": 3},
    "faults": {"exit_traders": []},
    "cpu": {"pin_traders": False},
    "peers": [],
    "buyers": {"pace_s": 0.0, "max_qty": 3},
    "sellers": {"goods_per_period": 2, "period_s": 0.5},
    "rpc": {"call_timeout_s": 5.0, "warehouse_timeout_s": 3.0, "retry_backoff_s": 0.05,
            "threadpool_size": 40},
    "election": {"startup_timeout_s": 10.0, "message_timeout_s": 1.0},
    "logs": {"dir": "logs"},
    "autoscale": {"enabled": False, "window_s": 60.0, "threshold": 600, "max_traders": 4,
                  "cooldown_s": 30.0, "replace_failed": True, "launch_timeout_s": 30.0,
                  "launch_attempts": 3, "launcher": "local",
                  "replica_host": "127.0.0.1"},
}


def config_dict(roles: list[str], n_traders: int = 2, ports: list[int] | None = None,
                **overrides) -> dict:
    """A valid config dict with one peer per role (ids 1..n); `overrides` replace sections."""
    ports = ports or list(range(20000, 20002 + len(roles)))
    cfg = copy.deepcopy(BASE)
    cfg["nameserver"]["port"], cfg["warehouse"]["port"] = ports[0], ports[1]
    cfg["peers"] = [{"id": i + 1, "role": r, "host": "127.0.0.1", "port": ports[2 + i]}
                    for i, r in enumerate(roles)]
    cfg["traders"]["count"] = n_traders
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


class Log(list):
    """An EventLog stand-in: each logged line is appended."""

    def __call__(self, line: str) -> None:
        self.append(line)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, socket.socket]]:
    """(URI, listening socket) of a "trader" on 127.0.0.1 that accepts connections and
    never answers, as a hung process's kernel does. `accept()` (10-s deadline) returns
    once a client has connected."""
    with socket.create_server(("127.0.0.1", 0)) as lst:
        lst.settimeout(10.0)
        yield f"PYRO:market.trader@127.0.0.1:{lst.getsockname()[1]}", lst
