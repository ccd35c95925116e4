"""Integration fixtures: real markets on 127.0.0.1, free ports, and a no-leftovers check."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pyromarket import config, rpc
from pyromarket.market import Market
from pyromarket.process import alive
from tests.helpers import config_dict, free_ports, write_config


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs (zombies do not count)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                if os.getpgid(int(entry)) == pgid:
                    return True
            except ProcessLookupError:
                pass
    return False


def signals_as_in_a_terminal() -> None:
    """A Popen preexec_fn: SIGINT and SIGHUP at their defaults, as in a terminal. A shell
    without job control starts background jobs with SIGINT ignored, and `nohup` ignores
    SIGHUP; either would otherwise reach the child through pytest, and then Python
    installs no KeyboardInterrupt handler, or a hang-up is not one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def hold_ctrl_c(proc, within_s: float = 60.0) -> None:
    """Ctrl-C held down: SIGINT every 50 ms until `proc` exits (so some land while it
    stops its children); fails if it has not exited within `within_s`."""
    deadline = time.monotonic() + within_s
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"pid {proc.pid} did not exit on Ctrl-C"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)


def assert_all_gone(pids) -> None:
    leftovers = [pid for pid in pids if pid and group_alive(pid)]
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def make_config(tmp_path):
    """make_config(roles, n_traders, **sections) -> (cfg, path), on fresh free ports."""
    def make(roles, n_traders=2, **overrides):
        ports = free_ports(2 + len(roles))
        data = config_dict(roles, n_traders, ports, **overrides)
        data["warehouse"]["db_path"] = str(tmp_path / "warehouse.sqlite3")
        data["logs"]["dir"] = str(tmp_path / "logs")
        path = write_config(tmp_path / "market.yaml", data)
        return config.load(path), path
    return make


@pytest.fixture
def start_market(make_config, tmp_path):
    """start_market(roles, n_traders, **sections) -> a started Market; stopped afterwards,
    and every process it started is checked to be gone."""
    markets = []

    def start(roles, n_traders=2, **overrides):
        cfg, path = make_config(roles, n_traders, **overrides)
        market = Market(cfg, path, str(tmp_path / "run"))
        markets.append(market)
        return market.start(timeout_s=30)

    yield start
    for market in markets:
        pids = [s.pid for s in market.services.values()] + market.replicas()
        market.stop()
        assert_all_gone(pids)


@pytest.fixture(autouse=True)
def _pyro_configured():
    rpc.configure()
