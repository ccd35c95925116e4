"""The market's config: YAML in, validated frozen dataclasses out.

`load(path)` is the only entry point. Every failure is a ConfigError whose message
names the key (``peers[2].port: expected int, got str``), raised before any process
starts. `MarketConfig.validate()` checks values and how they relate.
Relative paths (the database, the log folder) are taken from the working directory.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .orders import (MAX_BATCH_ORDERS, MAX_PRODUCT_LEN, MAX_PRODUCTS, MAX_QUANTITY, MAX_STOCK,
                     shown)

__all__ = [
    "Endpoint", "WarehouseConfig", "PeerConfig", "TraderConfig", "CacheConfig", "HeartbeatConfig",
    "TraderExit", "FaultConfig", "CpuConfig", "BuyerConfig",
    "SellerConfig", "RpcConfig", "ElectionConfig", "LogConfig", "AutoscaleConfig", "Ec2Config",
    "MarketConfig",
    "load", "from_dict", "DEFAULT_PATH",
]

DEFAULT_PATH = "conf/market.yaml"
# A config is a few KB; a bigger file is the wrong file (a log, a database), and PyYAML's
# pure-Python parser reads about a MB a second.
MAX_CONFIG_BYTES = 2**20
ROLES = ("buyer", "seller")
MODES = ("sync", "cached")
SYNC_LEVELS = ("FULL", "NORMAL")
LAUNCHERS = ("local", "ec2")
# Every float in a config is a duration in seconds. None needs more than a day; a longer
# one is a typo, and past about 1e9 s an OS timeout overflows (every call then fails).
MAX_SECONDS = 86_400.0
# Worker threads per process: each holds one connection. Beyond this it is a typo, and a
# flood of connections would run the process out of threads before the pool refused one.
MAX_THREADPOOL = 4_096
# A trader's connections to the warehouse: its batch link and a pool of four for the
# rest (trader.WarehouseLink). Each holds one of the warehouse's rpc.threadpool_size workers.
WAREHOUSE_CONNECTIONS_PER_TRADER = 5
# Connections every server keeps beyond those it is sized for: the launcher, a REPL and the like.
SPARE_CONNECTIONS = 4
# Tries at launching a replacement trader; each waits twice as long as the one before.
MAX_LAUNCH_ATTEMPTS = 10
# The least time a launched trader is given to register (a shorter one gives up on
# traders that are only slow to start, and churns).
MIN_LAUNCH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class WarehouseConfig:
    host: str
    port: int
    db_path: str
    synchronous: str            # SQLite durability: FULL (fsync per commit) or NORMAL
    batch_max: int              # most operations committed in one transaction
    initial_stock: Mapping[str, int]


@dataclass(frozen=True)
class PeerConfig:
    id: int
    role: str
    host: str
    port: int


@dataclass(frozen=True)
class TraderConfig:
    count: int                  # N_t
    mode: str                   # sync | cached


@dataclass(frozen=True)
class CacheConfig:
    ttl_s: float                # how long a trader trusts a cache entry before revalidating
    reserve_on_forward: bool    # take a forwarded buy off the cached stock at once


@dataclass(frozen=True)
class HeartbeatConfig:
    interval_s: float           # how often a trader pings every other trader
    timeout_s: float            # deadline of one ping
    misses: int                 # consecutive missed pings that declare a trader dead


@dataclass(frozen=True)
class TraderExit:
    trader: int                 # n of market.trader.<n>
    after_s: float              # seconds after it became a trader


@dataclass(frozen=True)
class FaultConfig:
    exit_traders: tuple[TraderExit, ...]   # forced failures: trader n exits after_s in


@dataclass(frozen=True)
class CpuConfig:
    pin_traders: bool           # pin trader n to core (n-1) mod cores (sched_setaffinity)


@dataclass(frozen=True)
class BuyerConfig:
    pace_s: float               # pause between buys; 0 = as fast as replies come
    max_qty: int                # each buy asks for 1..max_qty


@dataclass(frozen=True)
class SellerConfig:
    goods_per_period: int       # N_g
    period_s: float             # T_g


@dataclass(frozen=True)
class RpcConfig:
    call_timeout_s: float       # deadline of a peer -> trader call
    warehouse_timeout_s: float  # deadline of a trader -> warehouse call
    retry_backoff_s: float      # first pause before a retry; doubles, capped at 1 s
    threadpool_size: int        # Pyro5 worker threads per daemon = connections it accepts


@dataclass(frozen=True)
class ElectionConfig:
    startup_timeout_s: float    # how long a peer waits for every peer to answer
    message_timeout_s: float    # deadline of one election message to a ring neighbour


@dataclass(frozen=True)
class LogConfig:
    dir: str                    # each run writes to its own folder below this one


@dataclass(frozen=True)
class Ec2Config:
    region: str                 # AWS region of the replicas
    image_id: str               # an AMI with python3 (user-data installs the project)
    instance_type: str          # e.g. t3.micro
    package: str                # what user-data pip-installs, e.g. "pyromarket @ git+https://..."
    endpoint_url: str           # "" for AWS itself; a moto server's URL in tests
    subnet_id: str              # "" for the default subnet
    security_group_ids: tuple[str, ...]
    key_name: str               # "" for none


@dataclass(frozen=True)
class AutoscaleConfig:
    enabled: bool               # watch the load and launch trader replicas (the spec's A5)
    window_s: float             # the sliding load window (the spec: 60 s)
    threshold: int              # requests per window per live trader that trigger one more trader
    max_traders: int            # cap on live traders, the elected ones included
    cooldown_s: float           # least time between two scale-outs
    replace_failed: bool        # launch a replacement when a trader is declared dead
    launch_timeout_s: float     # a launched trader must register within this, or it is stopped
    launch_attempts: int        # tries at a replacement, each allowed twice the time before
    launcher: str               # local (a process on this machine) | ec2 (boto3, `.[aws]`)
    replica_host: str           # the address a local replica's daemon listens on
    ec2: Ec2Config | None = None


@dataclass(frozen=True)
class MarketConfig:
    """The whole market config: one frozen field per YAML section (see conf/market.yaml
    for every key). Built and checked by `load`; never changed after."""
    nameserver: Endpoint
    warehouse: WarehouseConfig
    products: tuple[str, ...]
    max_quantity: int
    traders: TraderConfig
    cache: CacheConfig
    heartbeat: HeartbeatConfig
    faults: FaultConfig
    cpu: CpuConfig
    peers: tuple[PeerConfig, ...]
    buyers: BuyerConfig
    sellers: SellerConfig
    rpc: RpcConfig
    election: ElectionConfig
    logs: LogConfig
    autoscale: AutoscaleConfig
    source: str = field(default="<dict>", compare=False)

    @property
    def buyers_count(self) -> int:
        return sum(p.role == "buyer" for p in self.peers)

    @property
    def sellers_count(self) -> int:
        return sum(p.role == "seller" for p in self.peers)

    def peer(self, peer_id: int) -> PeerConfig:
        for p in self.peers:
            if p.id == peer_id:
                return p
        raise ConfigError(f"peers: no peer with id {peer_id}")

    def validate(self) -> "MarketConfig":
        """Check values and how they relate; return self so calls chain."""
        _validate_paths(self)
        _validate_products(self)
        _validate_peers(self)
        _validate_numbers(self)
        return self


def _validate_paths(cfg: MarketConfig) -> None:
    """A database that SQLite would keep in memory or in a temporary file ("" or
    ":memory:") is not durable, and each connection would see its own; an empty log
    folder is a slip (write "." for the working directory)."""
    if cfg.warehouse.db_path.strip() in ("", ":memory:"):
        raise ConfigError(f"warehouse.db_path: must name a file (SQLite keeps "
                          f"{shown(cfg.warehouse.db_path)} in memory or in a temporary file, "
                          f"which would lose every order)")
    if not cfg.logs.dir.strip():
        raise ConfigError('logs.dir: must name a folder ("." for the working directory)')


def _validate_products(cfg: MarketConfig) -> None:
    if not 1 <= len(cfg.products) <= MAX_PRODUCTS:
        raise ConfigError(f"products: from 1 to {MAX_PRODUCTS} products are needed, "
                          f"got {len(cfg.products)}")
    if len(set(cfg.products)) != len(cfg.products):
        raise ConfigError("products: duplicate product names")
    for i, name in enumerate(cfg.products):
        if not (name and len(name) <= MAX_PRODUCT_LEN and name.isprintable()):
            raise ConfigError(f"products[{i}]: a product's name must be printable text of 1 to "
                              f"{MAX_PRODUCT_LEN} characters (it goes into every log line and "
                              f"message about it), got {name[:MAX_PRODUCT_LEN]!r}")
    for name, qty in cfg.warehouse.initial_stock.items():
        if name not in cfg.products:
            raise ConfigError(f"warehouse.initial_stock.{_key(name)}: not in products")
        if not 0 <= qty <= MAX_STOCK:
            raise ConfigError(f"warehouse.initial_stock.{_key(name)}: must be between 0 and "
                              f"{MAX_STOCK}")


def _check_address(key: str, host: str, port: int) -> None:
    if not host.strip():
        raise ConfigError(f"{key}.host: must name a host (an IP such as 127.0.0.1)")
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}.port: must be a TCP port from 1 to 65535, got {shown(port)}")


def _validate_peers(cfg: MarketConfig) -> None:
    _check_address("nameserver", cfg.nameserver.host, cfg.nameserver.port)
    _check_address("warehouse", cfg.warehouse.host, cfg.warehouse.port)
    ids, addrs = set(), {(cfg.nameserver.host, cfg.nameserver.port): "nameserver",
                         (cfg.warehouse.host, cfg.warehouse.port): "warehouse"}
    if len(addrs) < 2:
        raise ConfigError("warehouse.port: same address as the name server")
    for i, p in enumerate(cfg.peers):
        _check_address(f"peers[{i}]", p.host, p.port)
        if p.id < 1:
            raise ConfigError(f"peers[{i}].id: must be a positive int, got {shown(p.id)}")
        if p.role not in ROLES:
            raise ConfigError(f"peers[{i}].role: must be one of {ROLES}, got {shown(p.role)}")
        if p.id in ids:
            raise ConfigError(f"peers[{i}].id: duplicate peer id {shown(p.id)}")
        if (p.host, p.port) in addrs:
            raise ConfigError(f"peers[{i}].port: {p.host}:{p.port} already used by "
                              f"{addrs[(p.host, p.port)]}")
        ids.add(p.id)
        addrs[(p.host, p.port)] = f"peer {p.id}"
    if cfg.traders.count < 1:
        raise ConfigError("traders.count: N_t must be at least 1")
    if cfg.traders.count > len(cfg.peers):
        raise ConfigError(f"traders.count: N_t={cfg.traders.count} exceeds the "
                          f"{len(cfg.peers)} peers")


def _validate_numbers(cfg: MarketConfig) -> None:
    pool, for_peers, for_warehouse = (cfg.rpc.threadpool_size,
                                      len(cfg.peers) + SPARE_CONNECTIONS,
                                      _warehouse_connections(cfg))
    checks = [
        ("traders.mode", cfg.traders.mode in MODES, f"must be one of {MODES}"),
        ("warehouse.synchronous", cfg.warehouse.synchronous in SYNC_LEVELS,
         f"must be one of {SYNC_LEVELS}"),
        ("warehouse.batch_max", 1 <= cfg.warehouse.batch_max <= MAX_BATCH_ORDERS,
         f"must be between 1 and {MAX_BATCH_ORDERS}"),
        ("cache.ttl_s", cfg.cache.ttl_s > 0, "must be > 0"),
        ("heartbeat.interval_s", cfg.heartbeat.interval_s > 0, "must be > 0"),
        ("heartbeat.timeout_s", 0 < cfg.heartbeat.timeout_s <= cfg.heartbeat.interval_s,
         "must be > 0 and at most heartbeat.interval_s, so pings never pile up"),
        ("heartbeat.misses", cfg.heartbeat.misses >= 2,
         "must be at least 2: one lost ping must not declare a trader dead"),
        ("heartbeat.misses", cfg.heartbeat.misses * cfg.heartbeat.interval_s
         + cfg.heartbeat.timeout_s <= MAX_SECONDS,
         f"times heartbeat.interval_s, plus heartbeat.timeout_s, bounds how long a dead "
         f"trader goes unnoticed, and must be at most {MAX_SECONDS:.0f} s (a day)"),
        ("faults.exit_traders", all(1 <= e.trader <= cfg.traders.count and e.after_s > 0
                                    for e in cfg.faults.exit_traders),
         "each needs 1 <= trader <= traders.count and after_s > 0"),
        ("max_quantity", 1 <= cfg.max_quantity <= MAX_QUANTITY,
         f"must be between 1 and {MAX_QUANTITY}"),
        ("buyers.pace_s", cfg.buyers.pace_s >= 0, "must be >= 0"),
        ("buyers.max_qty", 1 <= cfg.buyers.max_qty <= cfg.max_quantity,
         "must be between 1 and max_quantity"),
        ("sellers.goods_per_period", cfg.sellers.goods_per_period >= 1, "must be >= 1"),
        ("sellers.period_s", cfg.sellers.period_s > 0, "must be > 0"),
        ("rpc.call_timeout_s", cfg.rpc.call_timeout_s > 0, "must be > 0"),
        ("rpc.warehouse_timeout_s", 0 < cfg.rpc.warehouse_timeout_s < cfg.rpc.call_timeout_s,
         "must be > 0 and below rpc.call_timeout_s, so a trader answers before its peer gives up"),
        ("rpc.retry_backoff_s", cfg.rpc.retry_backoff_s > 0, "must be > 0"),
        ("rpc.threadpool_size", pool <= MAX_THREADPOOL,
         f"must be at most {MAX_THREADPOOL}: each connection holds a thread"),
        ("rpc.threadpool_size", pool >= for_peers,
         f"must be at least {for_peers} (the {len(cfg.peers)} peers + {SPARE_CONNECTIONS}), "
         f"got {pool}: every connected proxy holds a worker"),
        ("rpc.threadpool_size", pool >= for_warehouse,
         f"must be at least {for_warehouse} for the warehouse, got {pool}: "
         f"{WAREHOUSE_CONNECTIONS_PER_TRADER} connections per live trader "
         f"({_live_traders(cfg)}, see autoscale.max_traders) + {SPARE_CONNECTIONS}"),
        ("election.startup_timeout_s", cfg.election.startup_timeout_s > 0, "must be > 0"),
        ("election.message_timeout_s", cfg.election.message_timeout_s > 0, "must be > 0"),
        *_autoscale_checks(cfg),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {why}")


def _live_traders(cfg: MarketConfig) -> int:
    """The most traders that can be live at once."""
    return cfg.autoscale.max_traders if cfg.autoscale.enabled else cfg.traders.count


def _warehouse_connections(cfg: MarketConfig) -> int:
    """The connections the warehouse must accept: every live trader's, and the spares."""
    return WAREHOUSE_CONNECTIONS_PER_TRADER * _live_traders(cfg) + SPARE_CONNECTIONS


def _autoscale_checks(cfg: MarketConfig) -> list[tuple[str, bool, str]]:
    a = cfg.autoscale
    return [
        ("autoscale.window_s", a.window_s > 0, "must be > 0"),
        ("autoscale.threshold", a.threshold >= 1, "must be >= 1"),
        ("autoscale.max_traders", 1 <= a.max_traders <= 64 and
         (not a.enabled or cfg.traders.count <= a.max_traders),
         "must be between traders.count and 64"),
        ("autoscale.cooldown_s", a.cooldown_s >= 0, "must be >= 0"),
        ("autoscale.launch_timeout_s", a.launch_timeout_s >= MIN_LAUNCH_TIMEOUT_S,
         f"must be at least {MIN_LAUNCH_TIMEOUT_S:g} s: a trader takes a second or more to "
         f"start, and the others read new names once a second"),
        ("autoscale.launch_attempts", 1 <= a.launch_attempts <= MAX_LAUNCH_ATTEMPTS,
         f"must be between 1 and {MAX_LAUNCH_ATTEMPTS}"),
        ("autoscale.launcher", a.launcher in LAUNCHERS, f"must be one of {LAUNCHERS}"),
        ("autoscale.ec2", a.launcher != "ec2" or a.ec2 is not None,
         "is required when autoscale.launcher is ec2"),
    ]


# --- building dataclasses from plain data, strictly -------------------------------

def _check_type(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):        # only `X | None` is used
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return _check_type(value, inner, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        item = typing.get_args(hint)[0]
        return tuple(_check_type(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        kt, vt = typing.get_args(hint)
        return types.MappingProxyType({_check_type(k, kt, f"{path} key"):
                                       _check_type(v, vt, f"{path}.{_key(k)}")
                                       for k, v in value.items()})
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {type(value).__name__} "
                          f"{shown(value)}{_float_hint(hint, value)}")
    if hint is float and not (math.isfinite(value) and abs(value) <= MAX_SECONDS):
        raise ConfigError(f"{path}: must be a finite number of seconds, at most "
                          f"{MAX_SECONDS:.0f} (a day), got {shown(value)}")
    return value


def _float_hint(hint: Any, value: Any) -> str:
    """For a float YAML read as text (YAML 1.1 wants `1.0e+3`, not `1e3`), how to write it."""
    if hint is not float or not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (YAML reads this as text: write the number with a dot, such as 1.0e+3)"


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "source"}
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            raise ConfigError(f"{prefix}{_key(key)}: unknown key "
                              f"(expected one of {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{prefix}{name}: missing key")
            continue
        kwargs[name] = _check_type(data[name], hints[name], f"{prefix}{name}")
    return cls(**kwargs)


def _key(key: Any) -> str:
    """A mapping key as a message names it: as written if it is short printable text."""
    if isinstance(key, str) and len(key) <= MAX_PRODUCT_LEN and key.isprintable():
        return key
    return shown(key)


def from_dict(data: Any, source: str = "<dict>") -> MarketConfig:
    """Build and validate a MarketConfig from already-parsed YAML."""
    cfg = _build(MarketConfig, data, "")
    return dataclasses.replace(cfg, source=source).validate()


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error: plain YAML loading
    keeps the last one silently, so a second `warehouse:` section would win unnoticed."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, collections.abc.Hashable):
                continue                        # the SafeLoader refuses it, in its words
            if key in seen:
                raise ConfigError(f"{key}: given twice in one mapping "
                                  f"(line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: str | os.PathLike = DEFAULT_PATH) -> MarketConfig:
    """Read, parse and validate a YAML config file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"more than {MAX_CONFIG_BYTES} bytes; a config is a few KB "
                              f"(is this the right file?)")
        data = yaml.load(raw.decode("utf-8"), Loader=_StrictLoader)   # noqa: S506 - safe
    except OSError as exc:
        hint = ("; run from the project folder, or pass --config PATH"
                if str(path) == DEFAULT_PATH else "")
        raise ConfigError(f"{path}: cannot read config ({exc.strerror}){hint}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is YAML") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # PyYAML builds some values with Python's own constructors, which raise these:
        # an int of over 4,300 digits, a date such as 2026-13-45, nesting thousands deep
        reason = str(exc).split(";")[0][:120]
        raise ConfigError(f"{path}: YAML that no config can hold ({reason})") from None
    try:
        return from_dict(data, source=os.path.abspath(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
