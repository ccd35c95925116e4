"""Config loading: every bad file fails at load time with a message naming the key."""

import copy
import dataclasses
import typing
from pathlib import Path

import pytest

from pyromarket import config
from pyromarket.errors import ConfigError
from tests.helpers import config_dict, write_config

ROLES = ["buyer", "buyer", "seller", "seller"]


def test_default_config_file_loads_and_is_valid():
    cfg = config.load("conf/market.yaml")
    assert cfg.traders.count <= len(cfg.peers)
    assert cfg.buyers_count + cfg.sellers_count == len(cfg.peers)
    assert set(cfg.warehouse.initial_stock) <= set(cfg.products)


def test_valid_dict_builds_frozen_dataclasses():
    cfg = config.from_dict(config_dict(ROLES))
    assert cfg.peer(3).role == "seller"
    assert cfg.rpc.call_timeout_s == 5.0
    with pytest.raises(AttributeError):
        cfg.traders.count = 3           # frozen
    with pytest.raises(TypeError):
        cfg.warehouse.initial_stock["salt"] = 1   # read-only mapping


def test_int_is_accepted_where_a_float_is_expected():
    cfg = config.from_dict(config_dict(ROLES, sellers={"goods_per_period": 2, "period_s": 1}))
    assert cfg.sellers.period_s == 1.0 and isinstance(cfg.sellers.period_s, float)


def _fails(data, match):
    with pytest.raises(ConfigError, match=match):
        config.from_dict(data)


def test_unknown_key_is_named():
    data = config_dict(ROLES)
    data["traders"]["mdoe"] = "sync"
    _fails(data, r"traders\.mdoe: unknown key")


def test_unknown_top_level_key_is_named():
    data = config_dict(ROLES)
    data["extra"] = 1
    _fails(data, r"^extra: unknown key")


def test_missing_key_is_named():
    data = config_dict(ROLES)
    del data["sellers"]["period_s"]
    _fails(data, r"sellers\.period_s: missing key")


def test_wrong_type_is_named():
    data = config_dict(ROLES)
    data["peers"][2]["port"] = "9000"
    _fails(data, r"peers\[2\]\.port: expected int, got str")


def test_bool_is_not_an_int():
    data = config_dict(ROLES)
    data["traders"]["count"] = True
    _fails(data, r"traders\.count: expected int, got bool")


@pytest.mark.parametrize("n", [0, -1, 5])
def test_impossible_trader_count_is_refused(n):
    _fails(config_dict(ROLES, n_traders=n), r"traders\.count")


def test_as_many_traders_as_peers_is_allowed():
    cfg = config.from_dict(config_dict(ROLES, n_traders=4))
    assert cfg.traders.count == len(cfg.peers)


def test_duplicate_peer_ids_are_refused():
    data = config_dict(ROLES)
    data["peers"][1]["id"] = 1
    _fails(data, r"peers\[1\]\.id: duplicate peer id 1")


def test_duplicate_ports_are_refused():
    data = config_dict(ROLES)
    data["peers"][3]["port"] = data["peers"][0]["port"]
    _fails(data, r"peers\[3\]\.port: .* already used by peer 1")


def test_peer_port_colliding_with_warehouse_is_refused():
    data = config_dict(ROLES)
    data["peers"][0]["port"] = data["warehouse"]["port"]
    _fails(data, r"peers\[0\]\.port: .* already used by warehouse")


@pytest.mark.parametrize("port", [0, -1, 65536, 10**12])
@pytest.mark.parametrize("where,key", [("nameserver", r"nameserver\.port"),
                                       ("warehouse", r"warehouse\.port"),
                                       ("peer", r"peers\[2\]\.port")])
def test_a_port_outside_1_to_65535_is_named(where, key, port):
    data = config_dict(ROLES)
    (data["peers"][2] if where == "peer" else data[where])["port"] = port
    _fails(data, rf"{key}: must be a TCP port from 1 to 65535, got {port}")


def test_an_empty_host_or_a_non_positive_peer_id_is_named():
    data = config_dict(ROLES)
    data["warehouse"]["host"] = " "
    _fails(data, r"warehouse\.host: must name a host")
    data = config_dict(ROLES)
    data["peers"][1]["id"] = 0
    _fails(data, r"peers\[1\]\.id: must be a positive int, got 0")


def test_bad_role_and_mode_are_refused():
    data = config_dict(ROLES)
    data["peers"][0]["role"] = "trader"
    _fails(data, r"peers\[0\]\.role")
    _fails(config_dict(ROLES, traders={"mode": "eventual"}), r"traders\.mode")


def test_stock_for_unknown_product_is_refused():
    data = config_dict(ROLES)
    data["warehouse"]["initial_stock"]["gold"] = 1
    _fails(data, r"warehouse\.initial_stock\.gold: not in products")


@pytest.mark.parametrize("name", ["", "x" * 65, "sea\nsalt", "\ud800"])
def test_a_product_name_must_be_short_printable_text(name):
    data = config_dict(ROLES)
    data["products"].append(name)
    _fails(data, rf"products\[{len(data['products']) - 1}\]: a product's name must be printable")


def test_a_product_name_may_have_spaces_and_letters_beyond_ascii():
    data = config_dict(ROLES)
    data["products"] += ["wild boar", "Räucherfisch" + "x" * 52]
    assert config.from_dict(data).products[-2:] == ("wild boar", "Räucherfisch" + "x" * 52)


@pytest.mark.parametrize("count", [0, 1001])
def test_the_number_of_products_is_bounded(count):
    data = config_dict(ROLES, warehouse={"initial_stock": {}})
    data["products"] = [f"p{i}" for i in range(count)]
    _fails(data, rf"products: from 1 to 1000 products are needed, got {count}")


@pytest.mark.parametrize("batch_max", [0, 501])
def test_batch_max_is_bounded_so_a_batch_fits_one_message(batch_max):
    _fails(config_dict(ROLES, warehouse={"batch_max": batch_max}),
           r"warehouse\.batch_max: must be between 1 and 500")


@pytest.mark.parametrize("key,value,why", [
    ("launch_timeout_s", 0.0, r"must be at least 5 s"),
    ("launch_timeout_s", 4.9, r"must be at least 5 s"),
    ("launch_attempts", 0, r"must be between 1 and 10"),
    ("launch_attempts", 11, r"must be between 1 and 10"),
    ("launch_attempts", 2.5, r"expected int, got float")])
def test_replacement_tries_are_bounded(key, value, why):
    _fails(config_dict(ROLES, autoscale={key: value}), rf"autoscale\.{key}: {why}")


def test_timeouts_must_relate():
    data = config_dict(ROLES, rpc={"warehouse_timeout_s": 6.0})
    _fails(data, r"rpc\.warehouse_timeout_s: .*below rpc\.call_timeout_s")


@pytest.mark.parametrize("section,value,key", [
    ("max_quantity", 2**31, r"max_quantity: must be between 1 and 2147483647"),
    ("initial_stock", 2**62 + 1, r"warehouse\.initial_stock\.salt: must be between 0 and"),
    ("initial_stock", -1, r"warehouse\.initial_stock\.salt: must be between 0 and")])
def test_quantities_and_stock_stay_within_what_the_ledger_stores(section, value, key):
    data = config_dict(ROLES)
    if section == "max_quantity":
        data["max_quantity"] = value
    else:
        data["warehouse"]["initial_stock"]["salt"] = value
    _fails(data, key)


@pytest.mark.parametrize("section,key,value", [
    ("cache", "ttl_s", float("inf")), ("buyers", "pace_s", float("nan")),
    ("rpc", "call_timeout_s", 1e300), ("election", "startup_timeout_s", 86_401),
    ("sellers", "period_s", float("-inf"))])
def test_a_duration_must_be_a_finite_number_of_seconds_up_to_a_day(section, key, value):
    """A call timeout of 1e300 s once started a market whose every call failed
    ("timestamp out of range for platform time_t"); an infinite one never ends a wait."""
    _fails(config_dict(ROLES, **{section: {key: value}}),
           rf"{section}\.{key}: must be a finite number of seconds, at most 86400")


def test_every_float_in_a_config_is_a_duration_in_seconds():
    """The bound above speaks of seconds: a float key that is not one would need its own."""
    def floats(cls):
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if hint is float:
                yield f.name
            elif dataclasses.is_dataclass(hint):
                yield from floats(hint)
            elif typing.get_origin(hint) is tuple and dataclasses.is_dataclass(
                    typing.get_args(hint)[0]):
                yield from floats(typing.get_args(hint)[0])
    names = list(floats(config.MarketConfig))
    assert len(names) >= 10 and all(n.endswith("_s") for n in names), names


def test_a_float_that_yaml_reads_as_text_says_how_to_write_it(tmp_path):
    path = _default_with(tmp_path, "call_timeout_s: 5.0", "call_timeout_s: 5e0")
    with pytest.raises(ConfigError, match=r"rpc\.call_timeout_s: expected float, got str "
                                          r"'5e0' \(YAML reads this as text: write the "
                                          r"number with a dot, such as 1\.0e\+3\)"):
        config.load(path)
    assert config.load(_default_with(tmp_path, "call_timeout_s: 5.0",
                                     "call_timeout_s: 5.0e+0")).rpc.call_timeout_s == 5.0


@pytest.mark.parametrize("db_path", ["", ":memory:", "  "])
def test_a_database_sqlite_would_keep_in_memory_is_refused(db_path):
    """SQLite opens "" as a private temporary database per connection: the warehouse
    answered every call with "no such table" and would have kept nothing."""
    _fails(config_dict(ROLES, warehouse={"db_path": db_path}),
           r"warehouse\.db_path: must name a file .* which would lose every order")


def test_an_empty_log_folder_is_refused():
    _fails(config_dict(ROLES, logs={"dir": ""}), r'logs\.dir: must name a folder \("\." for')


def test_threadpool_and_detection_time_are_bounded():
    _fails(config_dict(ROLES, rpc={"threadpool_size": 4097}),
           r"rpc\.threadpool_size: must be at most 4096")
    _fails(config_dict(ROLES, heartbeat={"interval_s": 3600.0, "misses": 24, "timeout_s": 1.0}),
           r"heartbeat\.misses: times heartbeat\.interval_s, plus heartbeat\.timeout_s, "
           r"bounds how long a dead trader goes unnoticed")
    config.from_dict(config_dict(ROLES, heartbeat={"interval_s": 3600.0, "misses": 23,
                                                   "timeout_s": 1.0}))


def test_threadpool_must_fit_every_peer():
    n = len(ROLES)
    _fails(config_dict(ROLES, rpc={"threadpool_size": n + 3}),
           rf"rpc\.threadpool_size: must be at least {n + 4} \(the {n} peers \+ 4\), got {n + 3}")


def test_threadpool_must_fit_the_warehouse_connections_of_every_trader_that_can_live():
    # 5 connections per trader + 4; with autoscaling, up to max_traders of them
    config.from_dict(config_dict(ROLES, 2, rpc={"threadpool_size": 14}))
    _fails(config_dict(ROLES, 2, rpc={"threadpool_size": 13}),
           r"rpc\.threadpool_size: must be at least 14 for the warehouse")
    scaling = {"enabled": True, "max_traders": 8}
    _fails(config_dict(ROLES, 2, rpc={"threadpool_size": 40}, autoscale=scaling),
           r"rpc\.threadpool_size: must be at least 44 .*\(8, see autoscale\.max_traders\)")


def test_malformed_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("peers: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        config.load(path)


def test_a_binary_file_is_a_config_error(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x00\x01\xff\xfe")
    with pytest.raises(ConfigError, match=r"bin\.yaml: not UTF-8 text"):
        config.load(path)


def test_a_key_given_twice_is_named_with_its_line(tmp_path):
    text = Path("conf/market.yaml").read_text(encoding="utf-8")
    path = tmp_path / "twice.yaml"
    path.write_text(text + "\nwarehouse:\n  host: 10.0.0.9\n", encoding="utf-8")
    line = text.count("\n") + 2
    with pytest.raises(ConfigError, match=rf"twice\.yaml: warehouse: given twice in one "
                                          rf"mapping \(line {line}\)"):
        config.load(path)
    path.write_text(text.replace("  port: 9090\n", "  port: 9090\n  port: 9091\n", 1))
    with pytest.raises(ConfigError, match="port: given twice"):
        config.load(path)


def _default_with(tmp_path, old: str, new: str) -> Path:
    text = Path("conf/market.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "odd.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("value, match", [
    # Python 3.10 says "the limit (4300) for", 3.11 on "the limit (4300 digits) for"
    ("9" * 5000, r"odd\.yaml: YAML that no config can hold \(Exceeds the limit \(4300( digits)?\)"),
    ("2026-13-45", r"odd\.yaml: YAML that no config can hold \(month must be in 1\.\.12\)"),
    ("[" * 20_000 + "]" * 20_000, r"odd\.yaml: YAML that no config can hold \(maximum recursion"),
], ids=["an int of 5000 digits", "month 13", "lists 20000 deep"])
def test_yaml_that_python_cannot_build_is_a_config_error(tmp_path, value, match):
    """PyYAML builds ints, dates and nested lists with Python's own constructors, which
    raise ValueError or RecursionError, not a YAML error: the launcher printed a traceback."""
    with pytest.raises(ConfigError, match=match):
        config.load(_default_with(tmp_path, "port: 9090", f"port: {value}"))


def test_a_value_of_nested_aliases_is_shown_in_a_few_items(tmp_path):
    """YAML aliases share one list; repr spells every copy out: nine levels of nine
    items took 90 s. (Six levels here, which the old repr spelled in 3.7 MB.)"""
    levels = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 6)]
    path = _default_with(tmp_path, "port: 9090", f"port: [{', '.join(levels)}]")
    with pytest.raises(ConfigError, match=r"nameserver\.port: expected int, got list") as err:
        config.load(path)
    assert len(str(err.value)) < 300


def test_a_long_value_or_key_is_not_echoed_whole(tmp_path):
    with pytest.raises(ConfigError, match=r"nameserver\.port: expected int, got str 'xxx") as err:
        config.load(_default_with(tmp_path, "port: 9090", "port: " + "x" * 100_000))
    assert len(str(err.value)) < 300 and "(100002 characters)" in str(err.value)
    data = config_dict(ROLES)
    data["warehouse"]["initial_stock"]["s" * 100_000] = 1
    with pytest.raises(ConfigError,
                       match=r"warehouse\.initial_stock\.'sss.*: not in products") as err:
        config.from_dict(data)
    assert len(str(err.value)) < 300


def test_a_file_far_larger_than_any_config_is_refused_unread(tmp_path):
    """Say --config pointed at a log: PyYAML's parser reads about a MB a second."""
    path = tmp_path / "big.yaml"
    path.write_bytes(Path("conf/market.yaml").read_bytes() + b"#" * config.MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError,
                       match=r"big\.yaml: more than 1048576 bytes; a config is a few KB"):
        config.load(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "nope.yaml")


def test_missing_default_config_says_where_to_run_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # no conf/market.yaml here
    with pytest.raises(ConfigError, match="run from the project folder, or pass --config"):
        config.load()


def test_non_mapping_file_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        config.load(path)


def test_file_round_trip(tmp_path):
    data = config_dict(ROLES)
    cfg = config.load(write_config(tmp_path / "m.yaml", copy.deepcopy(data)))
    assert [p.id for p in cfg.peers] == [1, 2, 3, 4]
    assert cfg.source.endswith("m.yaml")


def test_heartbeat_knobs_must_relate():
    _fails(config_dict(ROLES, heartbeat={"timeout_s": 0.5}), r"heartbeat\.timeout_s: .*interval_s")
    _fails(config_dict(ROLES, heartbeat={"misses": 1}), r"heartbeat\.misses: must be at least 2")


def test_forced_exit_must_name_a_real_trader():
    _fails(config_dict(ROLES, faults={"exit_traders": [{"trader": 3, "after_s": 1.0}]}),
           r"faults\.exit_traders")
    cfg = config.from_dict(config_dict(ROLES, faults={"exit_traders": [{"trader": 2, "after_s": 5}]}))
    assert cfg.faults.exit_traders[0].after_s == 5.0


def test_every_shipped_config_loads():
    from pathlib import Path
    paths = sorted(Path("conf").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        cfg = config.load(path)
        assert cfg.traders.count <= len(cfg.peers), path
