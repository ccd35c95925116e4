"""A whole market of real processes: election, trading, conservation, the launcher."""

from __future__ import annotations

import contextlib
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pyromarket import rpc, status
from pyromarket.process import Service, wait_until
from tests.integration.conftest import assert_all_gone

ROLES = ["buyer", "buyer", "seller", "buyer", "seller"]


def ledger_rows(db_path: str) -> list[dict]:
    """Read the ledger straight from the SQLite file, independent of the warehouse code."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY seq")]


def stock_and_seed(db_path: str) -> tuple[dict, dict]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return (dict(db.execute("SELECT product, stock FROM inventory")),
                dict(db.execute("SELECT product, stock FROM seed")))


@pytest.mark.parametrize("n_traders", [1, 2, 5])
def test_election_registers_exactly_n_traders_and_every_peer_agrees(start_market, n_traders):
    market = start_market(ROLES, n_traders)
    assert sorted(market.traders()) == list(range(1, n_traders + 1))
    statuses = market.statuses()
    assert len(statuses) == len(ROLES)
    agreed = {tuple(s["traders"]) for s in statuses.values()}
    assert len(agreed) == 1
    [traders] = agreed
    assert len(traders) == n_traders
    assert {pid for pid, s in statuses.items() if s["role"] == "trader"} == set(traders)
    for n, uri in market.traders().items():          # name n is hosted by the n-th lowest id
        with rpc.proxy(uri, 5) as t:
            assert t.ping()["peer"] == sorted(traders)[n - 1]


def test_trading_run_conserves_every_product(start_market):
    market = start_market(ROLES, 2, buyers={"pace_s": 0.0, "max_qty": 3},
                          sellers={"goods_per_period": 3, "period_s": 0.2})
    with market.warehouse() as w:
        wait_until(lambda: w.stats()["shipped"] >= 30 and w.stats()["stocked"] >= 10, 30,
                   "30 shipments and 10 deposits")
    market.stop_clients()
    rows = ledger_rows(market.cfg.warehouse.db_path)
    stock, seed = stock_and_seed(market.cfg.warehouse.db_path)
    for product in market.cfg.products:
        mine = [r for r in rows if r["product"] == product]
        stocked = sum(r["qty"] for r in mine if r["outcome"] == "stocked")
        shipped = sum(r["qty"] for r in mine if r["outcome"] == "shipped")
        assert seed[product] + stocked == stock[product] + shipped, product
        assert all(r["stock_after"] >= 0 for r in mine)
    assert len({r["request_id"] for r in rows}) == len(rows)
    statuses = market.statuses()
    for pid, s in statuses.items():
        if s["role"] != "trader":
            pytest.fail(f"peer {pid} still answers after stop_clients")


def test_both_traders_serve_and_logs_follow_the_spec_format(start_market, tmp_path):
    market = start_market(ROLES, 2, buyers={"pace_s": 0.0, "max_qty": 2})
    stats = {}

    def both_busy():
        for n, uri in market.traders().items():
            with rpc.proxy(uri, 5) as t:
                stats[n] = t.stats()
        return all(s["buys"] >= 5 for s in stats.values())
    wait_until(both_busy, 30, "both traders to serve at least 5 buys")
    run = tmp_path / "run"
    for name in ("warehouse.txt", "trader-1.txt", "trader-2.txt", "peer-1.txt"):
        assert (run / name).exists(), name
    # a log is written every 0.1 s by a thread of its own (eventlog.FLUSH_S); its first
    # line may be the peer's election, so wait for one of the trader's own
    stamp = r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d\.\d\d "
    lines = lambda: (run / "trader-1.txt").read_text().splitlines()
    wait_until(lambda: any(re.match(stamp + "Trader 1 informed ", line) for line in lines()),
               5, "trader 1's log of a reply to a buyer")
    assert all(re.match(stamp, line) for line in lines()), lines()
    wait_until(lambda: "Warehouse shipped" in (run / "warehouse.txt").read_text(), 5,
               "the warehouse's log of a shipment")


def _run_launcher(config_path, *extra, timeout=90):
    return subprocess.run([sys.executable, "-m", "pyromarket.start", "--config", config_path,
                           *extra], capture_output=True, text=True, timeout=timeout)


def _ports_free(cfg) -> bool:
    addrs = [(p.host, p.port) for p in cfg.peers] + [(cfg.warehouse.host, cfg.warehouse.port)]
    for addr in addrs:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError:
                return False
    return True


def test_launcher_runs_summarizes_and_leaves_nothing(make_config, tmp_path):
    """With --progress (stderr is a pipe here, so it is off by default) the launcher
    draws a status line on stderr while it trades; the summary on stdout is unchanged."""
    cfg, path = make_config(ROLES, 2)
    done = _run_launcher(path, "--duration", "2", "--progress", "--run-dir", str(tmp_path / "cli"))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "elected traders: [1, 2]" in done.stdout
    assert "goods shipped:" in done.stdout and "conservation per product: ok" in done.stdout
    assert "trader 1 (peer" in done.stdout and "trader 2 (peer" in done.stdout
    assert "trading" not in done.stdout.split("trading for 2.0 s", 1)[1]   # no status on stdout
    drawn = [line for line in done.stderr.splitlines() if line.startswith("trading ")]
    shipped = [int(re.search(r"\] (\d+) shipped \(", line).group(1)) for line in drawn]
    assert len(drawn) >= 5 and shipped == sorted(shipped) and shipped[-1] > 0, done.stderr
    assert drawn[-1].startswith("trading 2/2 s [" + "#" * status.BAR_WIDTH + "]"), drawn[-1]
    summary = int(re.search(r"goods shipped: (\d+)", done.stdout).group(1))
    assert shipped[-1] <= summary
    wait_until(lambda: _ports_free(cfg), 10, "every market port to be released")


def test_launcher_uses_an_already_running_pyro5_ns_and_leaves_it(make_config, tmp_path):
    cfg, path = make_config(ROLES, 2)
    ns = Service("pyro5-ns", ["pyro5-ns", "-n", "127.0.0.1", "-p", str(cfg.nameserver.port), "-x"],
                 ready=lambda: _ns_answers(cfg))
    ns.start(20)
    try:
        done = _run_launcher(path, "--duration", "1", "--run-dir", str(tmp_path / "cli"))
        assert done.returncode == 0, done.stderr + done.stdout
        assert "shipped (" not in done.stderr       # no status line when stderr is not a tty
        assert ns.running, "the launcher must not stop a name server it did not start"
        with rpc.nameserver(cfg.nameserver.host, cfg.nameserver.port) as nsp:
            assert nsp.list(prefix="market.") == {}   # its own names are cleaned up
    finally:
        pid = ns.pid
        ns.stop()
        assert_all_gone([pid])


def _ns_answers(cfg) -> bool:
    try:
        with rpc.nameserver(cfg.nameserver.host, cfg.nameserver.port) as ns:
            ns.ping()
        return True
    except Exception:
        return False


def test_a_second_launch_on_a_running_market_is_refused_and_harms_nothing(start_market, tmp_path):
    """The same config again, with and without --fresh: before, the second launch wiped
    the live market's names (its peers lost their traders), and --fresh deleted the
    database under the running warehouse."""
    market = start_market(["buyer", "seller"], 2)           # quiet: both peers are traders
    with market.trader(1) as t:
        t.buy("salt", 1, "before-1")
    names = market.traders()
    for extra in ([], ["--fresh"]):
        done = _run_launcher(market.config_path, "--duration", "1", *extra,
                             "--run-dir", str(tmp_path / f"second{len(extra)}"))
        assert done.returncode == 1
        assert ("a market already runs" in done.stderr if not extra
                else "in use by another warehouse" in done.stderr), done.stderr
    assert market.traders() == names
    with market.trader(1) as t:                             # the market still trades
        assert t.buy("salt", 1, "after-1")["outcome"] == "shipped"
    assert [r["request_id"] for r in ledger_rows(market.cfg.warehouse.db_path)] \
        == ["before-1", "after-1"]


def test_a_port_taken_by_another_program_is_named_before_anything_starts(make_config, tmp_path):
    cfg, path = make_config(ROLES, 2)
    with socket.socket() as squatter:
        squatter.bind((cfg.peers[2].host, cfg.peers[2].port))
        squatter.listen()
        done = _run_launcher(path, "--duration", "1", "--run-dir", str(tmp_path / "cli"))
    assert done.returncode == 1
    assert f"peers[2].port ({cfg.peers[2].host}:{cfg.peers[2].port})" in done.stderr
    assert not Path(cfg.warehouse.db_path).exists()          # no warehouse was started


@pytest.mark.parametrize("module,extra,endpoint", [
    ("nameserver", [], lambda cfg: cfg.nameserver),
    ("pyromarket.warehouse", [], lambda cfg: cfg.warehouse),
    ("pyromarket.peer", ["--id", "1"], lambda cfg: cfg.peers[0])])
def test_a_role_whose_port_is_taken_says_so_in_one_line(make_config, tmp_path, module, extra,
                                                        endpoint):
    cfg, path = make_config(ROLES, 2)
    where = endpoint(cfg)
    with socket.socket() as squatter:
        squatter.bind((where.host, where.port))
        squatter.listen()
        done = subprocess.run([sys.executable, "-m", module, "--config", path, "--run-dir",
                               str(tmp_path / "run"), *extra],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{where.host}:{where.port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr


NOT_HERE = "192.0.2.1"      # TEST-NET-1 (RFC 5737): never an address of this machine
NO_SUCH_HOST = "nosuchhost.invalid"     # .invalid never resolves (RFC 6761)


def _with_host(path, section, host) -> None:
    data = yaml.safe_load(Path(path).read_text())
    (data["peers"][1] if section == "peers" else data[section])["host"] = host
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("section,host,named", [
    ("warehouse", NOT_HERE, f"warehouse.host: {NOT_HERE} is not an address of this machine"),
    ("peers", NO_SUCH_HOST, f"peers[1].host: '{NO_SUCH_HOST}' is not an address and no such "
                            f"host is known"),
    ("nameserver", NO_SUCH_HOST, f"nameserver.host: '{NO_SUCH_HOST}' is not an address"),
    ("nameserver", NOT_HERE, "and none can be started there: nameserver.host: "
                             f"{NOT_HERE} is not an address of this machine")])
def test_an_address_this_machine_cannot_serve_is_named_before_anything_starts(
        make_config, tmp_path, section, host, named):
    """Before, the launcher started the name server, the warehouse or a peer there, and
    reported its crash with Pyro5's traceback of getaddrinfo or bind."""
    cfg, path = make_config(ROLES, 2)
    _with_host(path, section, host)
    done = _run_launcher(path, "--duration", "1", "--run-dir", str(tmp_path / "cli"))
    assert done.returncode == 1
    assert named in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not Path(cfg.warehouse.db_path).exists()          # no warehouse was started
    assert _ports_free(cfg)


@pytest.mark.parametrize("module,extra,section", [
    ("nameserver", [], "nameserver"), ("pyromarket.warehouse", [], "warehouse"),
    ("pyromarket.peer", ["--id", "2"], "peers")])
def test_a_role_at_an_address_not_of_this_machine_says_so_in_one_line(
        make_config, tmp_path, module, extra, section):
    _cfg, path = make_config(ROLES, 2)
    _with_host(path, section, NOT_HERE)
    done = subprocess.run([sys.executable, "-m", module, "--config", path, "--run-dir",
                           str(tmp_path / "run"), *extra],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{NOT_HERE} is not an address of this machine" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _run_role(module, path, *extra):
    return subprocess.run([sys.executable, "-m", module, "--config", path, *extra],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("module,extra,code,said", [
    ("pyromarket.peer", ["--id", "99"], 2, "error: --id 99: "),
    ("pyromarket.replica", ["--index", "3", "--port", "70000"], 2,
     "error: --port must be from 0 (any free port) to 65535"),
    ("pyromarket.replica", ["--index", "3", "--core", "4096"], 2,
     "error: --core must be one this process may run on"),
    ("pyromarket.warehouse", ["--run-dir", "{blocked}"], 1, "error: --run-dir: cannot create"),
    ("pyromarket.peer", ["--id", "1", "--run-dir", "{blocked}"], 1,
     "error: --run-dir: cannot create")])
def test_a_role_started_by_hand_with_bad_arguments_says_so_in_one_line(
        make_config, tmp_path, module, extra, code, said):
    """Each of these ended in a traceback (ConfigError, OverflowError from bind, OSError
    from sched_setaffinity, FileNotFoundError from makedirs)."""
    cfg, path = make_config(ROLES, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, so no folder can be made under it")
    done = _run_role(module, path, *[a.replace("{blocked}", str(blocker / "run"))
                                     for a in extra])
    assert done.returncode == code
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert _ports_free(cfg)


@pytest.mark.parametrize("where", ["folder", "lock"])
def test_a_warehouse_that_cannot_make_its_database_says_so_in_one_line(make_config, tmp_path,
                                                                        where):
    """The OS refuses the database's folder (a file stands where it should be) or its lock
    file (a folder stands there), as it would on a full or read-only disk. Both ended in
    a traceback (FileExistsError from makedirs, IsADirectoryError from the lock)."""
    cfg, path = make_config(ROLES, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, so no folder can be made under it")
    db = blocker / "db" / "w.sqlite3" if where == "folder" else tmp_path / "w.sqlite3"
    if where == "lock":
        (tmp_path / "w.sqlite3.lock").mkdir()
    data = yaml.safe_load(Path(path).read_text())
    data["warehouse"]["db_path"] = str(db)
    Path(path).write_text(yaml.safe_dump(data))
    done = _run_role("pyromarket.warehouse", path)
    assert done.returncode == 1
    assert f"error: {db}: " in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not db.exists()
    assert _ports_free(cfg)


def test_fresh_that_the_os_refuses_says_so_in_one_line_and_deletes_nothing(make_config,
                                                                             tmp_path):
    """`--fresh` could not take the database's lock (a folder stands where the lock file
    goes): it ended in a traceback (IsADirectoryError)."""
    cfg, path = make_config(ROLES, 2)
    db = Path(cfg.warehouse.db_path)
    db.write_bytes(b"")                      # an empty file is an empty SQLite database
    Path(f"{db}.lock").mkdir()
    done = _run_launcher(path, "--duration", "1", "--fresh", "--run-dir", str(tmp_path / "cli"))
    assert done.returncode == 1
    assert f"error: --fresh: {db}.lock: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and db.exists()
    assert _ports_free(cfg)


@pytest.mark.parametrize("extra", [[], ["--fresh"]])
@pytest.mark.parametrize("content,said", [
    (None, "file is not a database"),
    ("CREATE TABLE notes (text)", "not a warehouse database: it holds tables ['notes']")])
def test_a_database_that_is_not_a_warehouses_is_named_and_kept(make_config, tmp_path, extra,
                                                                content, said):
    """A db_path that names some other file by mistake: before, the launcher started
    everything and the warehouse died with SQLite's words (or added its tables to an
    SQLite file), and --fresh deleted the file. Now nothing starts and nothing changes."""
    cfg, path = make_config(ROLES, 2)
    db = Path(cfg.warehouse.db_path)
    if content is None:
        db.write_bytes(b"not a database " * 100)
    else:
        conn = sqlite3.connect(db)
        conn.execute(content)
        conn.commit()
        conn.close()
    before = db.read_bytes()
    done = _run_launcher(path, "--duration", "1", *extra, "--run-dir", str(tmp_path / "cli"))
    assert done.returncode == 1
    assert f"{cfg.warehouse.db_path}: {said}" in done.stderr, done.stderr
    assert ("nothing was deleted" in done.stderr) == bool(extra)
    assert "Traceback" not in done.stderr
    assert db.read_bytes() == before
    assert _ports_free(cfg)


@pytest.mark.parametrize("section,key,named", [("warehouse", "db_path", "warehouse.db_path"),
                                               ("logs", "dir", "logs.dir")])
def test_a_path_that_cannot_be_a_folder_is_named(make_config, tmp_path, section, key, named):
    _cfg, path = make_config(ROLES, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, so nothing can be made under it")
    data = yaml.safe_load(Path(path).read_text())
    data[section][key] = str(blocker / "sub" / ("w.sqlite3" if key == "db_path" else "logs"))
    Path(path).write_text(yaml.safe_dump(data))
    done = _run_launcher(path, "--duration", "1")
    assert done.returncode == 1
    assert named in done.stderr and "Not a directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_launcher_refuses_a_bad_config_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path("conf/market.yaml").read_text().replace("count: 2", "count: 99"))
    done = _run_launcher(str(bad), "--duration", "1")
    assert done.returncode == 2
    assert "traders.count" in done.stderr


def test_launcher_help_explains_itself():
    done = _run_launcher("conf/market.yaml", "--help")
    assert done.returncode == 0 and "--duration" in done.stdout and "--fresh" in done.stdout
