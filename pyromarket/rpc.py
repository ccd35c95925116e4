"""The one Pyro5 boundary: process config, proxies, servers, names and error translation.

Everything else in the package talks to Pyro5 only through this module, so the rules
that bite live in one place:
  * every proxy gets a deadline (`_pyroTimeout`); Pyro5's default of 0 waits forever;
  * Pyro5 never retries (MAX_RETRIES=0): callers retry themselves with the same request_id;
  * a proxy belongs to one thread: `ProxyPool` lends a few to many threads, each borrower
    claiming the one it holds, and `ThreadLocalProxy` gives each thread its own;
  * a server's worker pool caps its connections, so a process that serves many threads
    holds a bounded number of connections to another server (`ProxyPool`);
  * the name server is always addressed by host and port, never by broadcast, and with a
    deadline (Pyro5's `locate_ns` and PYRONAME proxies connect with COMMTIMEOUT, 0 here);
    a process keeps the last address it resolved (`Resolver`) and binds its own name
    again if a restarted name server lost it (`Registration`);
  * Pyro5's communication errors become `Unavailable` here and nowhere else;
  * another thread may end a call at once, even one still connecting (`Interruptible`),
    by shutting its socket down; the proxy's own state is never touched;
  * a remote object exposes only its methods marked `remote`, which never leak foreign
    exceptions, and the market's own exceptions are registered for rebuilding in every
    process (`configure`);
  * the market's processes speak JSON (`SERIALIZER`); servers still accept serpent, so a
    REPL user with Pyro5's defaults is answered in serpent;
  * no message may exceed `MAX_MESSAGE_BYTES`, in either direction: a server refuses a
    larger one from its header, before reading it (Pyro5 allows 1 GiB, and one 300 MB
    call kept a trader busy long enough to be declared dead); listings come in pages;
  * a server decodes only what it can decode in bounded time: json, and serpent up to
    `SERPENT_MAX_BYTES`; it refuses marshal, whose decoder trusts the lengths it reads
    (`guard_serializers`); a compressed message may not inflate past the size limit
    either (`_BoundedMessage`);
  * a client must finish its connect handshake within `HANDSHAKE_TIMEOUT_S` or it is
    dropped (`bound_handshakes`): Pyro5 waits on it forever, holding a worker, and when
    every worker is busy its accept loop itself waits on it and accepts nobody.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import inspect
import logging
import socket
import threading
import time
import weakref
import zlib
from typing import Any, Callable, Iterator

import Pyro5.api
import Pyro5.core
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers
import Pyro5.server
import Pyro5.socketutil
from Pyro5.serializers import SerializerBase, SerpentSerializer

from . import errors
from .errors import InvalidRequest, MarketError, Unavailable
from .process import bind_error_words

__all__ = [
    "configure", "register_errors", "expose", "release", "interrupt", "Interruptible",
    "remote", "proxy", "ProxyPool", "ThreadLocalProxy",
    "Server", "CannotServe", "PortInUse", "nameserver", "lookup", "Resolver", "Registration",
    "translated", "WAREHOUSE_NAME", "TRADER_PREFIX", "trader_name", "list_traders",
    "register_name", "remove_name_if", "CommunicationError", "peer_uri", "location",
    "ask_peers", "tell_peers", "BROADCAST_THREADS",
    "MAX_MESSAGE_BYTES", "SERPENT_MAX_BYTES", "bound_messages", "guard_serializers",
    "HANDSHAKE_TIMEOUT_S", "DENIAL_TIMEOUT_S", "bound_handshakes", "guard_serving",
]

WAREHOUSE_NAME = "market.warehouse"
TRADER_PREFIX = "market.trader."
PEER_OBJECT = "market.peer"
CommunicationError = Pyro5.errors.CommunicationError
# Pyro5's json serializer parses in C: a buy's reply dict decodes in about 7 us against
# serpent's 70 (ast.literal_eval), and a warehouse batch of 4 rows in 14 against 120. The
# market only sends str-keyed dicts, lists, strs, ints, floats, bools and None, which JSON
# keeps as they are. (Timed in-process with timeit on Pyro5's own serializer objects.)
SERIALIZER = "json"
# The largest message any market process sends or accepts. The market's own messages are
# far smaller (a buy is about 200 bytes; a full ledger page at worst about 0.73 MB, see
# warehouse.LEDGER_PAGE_MAX). Pyro5 allows 1 GiB: one 300 MB call kept a trader busy for
# 16 s, and the other trader declared it dead. Measured (CPU time, this machine): the
# costliest 1 MB of json to decode (a list of empty lists) takes 0.34 s in Pyro5, 0.07 s
# of it in json's C parser, which holds the GIL throughout (4 MB: 0.48 s), against a
# heartbeat window of 0.8 s.
MAX_MESSAGE_BYTES = 2**20
# Serpent (a REPL's default) parses with ast.literal_eval: up to 2.5 ms of CPU a KB,
# holding the GIL (a 1 MB list of small lists took 2.6 s). A server takes serpent
# messages of up to 64 KB (at most about 0.15 s); the market's own processes speak json.
SERPENT_MAX_BYTES = 64 * 2**10
# A new connection's first message, the handshake, must arrive in full within this long
# (every market client sends it as soon as it connects). Pyro5 reads it with the server's
# COMMTIMEOUT, 0 here (no limit), so a connection that never sent it (a port scan, `nc`,
# a client that hung mid-connect) held one of the worker threads for good.
HANDSHAKE_TIMEOUT_S = 2.0
# When every worker is busy, Pyro5 refuses a new connection from its accept loop, after
# reading its handshake so the refusal can say why. Measured on a trader: 64 silent
# connections, and the accept loop waited on the 65th; no new connection was accepted
# until they closed. That wait blocks everyone, so it is the shorter one.
DENIAL_TIMEOUT_S = 0.25
expose = Pyro5.server.expose
log = logging.getLogger("pyromarket.rpc")


def trader_name(n: int) -> str:
    """The name-server name of trader n: `market.trader.<n>`."""
    return f"{TRADER_PREFIX}{n}"


def location(uri: str) -> str:
    """The host:port part of a PYRO: URI (which process serves it)."""
    return str(uri).split("@", 1)[1]


def peer_uri(host: str, port: int) -> str:
    """Peers find each other from the config file, not the name server."""
    return f"PYRO:{PEER_OBJECT}@{host}:{port}"


def configure(threadpool_size: int = 80) -> None:
    """Set this process's Pyro5 config and register the market's exceptions."""
    cfg = Pyro5.config
    cfg.SERVERTYPE = "thread"
    cfg.THREADPOOL_SIZE = threadpool_size
    cfg.THREADPOOL_SIZE_MIN = min(8, threadpool_size)
    cfg.POLLTIMEOUT = 0.1           # how soon a request loop notices it should stop
    cfg.COMMTIMEOUT = 0.0           # server side: keep idle connections; clients set their own
    cfg.MAX_RETRIES = 0             # never re-run a call that may have had side effects
    cfg.SOCK_NODELAY = True
    cfg.SERIALIZER = SERIALIZER
    cfg.DETAILED_TRACEBACK = False
    bound_messages()
    register_errors()


def bound_messages() -> None:
    """No message over MAX_MESSAGE_BYTES, sent or received, and none that inflates past
    it (the name server's launcher calls this too)."""
    Pyro5.config.MAX_MESSAGE_SIZE = MAX_MESSAGE_BYTES
    Pyro5.protocol.ReceivingMessage = _BoundedMessage   # recv_stub builds every message


class _BoundedMessage(Pyro5.protocol.ReceivingMessage):
    """Pyro5's received message, whose compressed payload may inflate to MAX_MESSAGE_BYTES
    at most. Pyro5 inflates it with no bound: zlib reaches about 1000 to 1, so a message
    within the limit could become 1 GB to decode. The market never compresses; a client
    that does is served within the limit."""

    def add_payload(self, payload) -> None:
        compressed = self.flags & Pyro5.protocol.FLAGS_COMPRESSED
        self.flags &= ~Pyro5.protocol.FLAGS_COMPRESSED
        super().add_payload(payload)
        if compressed:
            inflater = zlib.decompressobj()
            data = inflater.decompress(self.data, MAX_MESSAGE_BYTES)
            if inflater.unconsumed_tail or not inflater.eof:
                raise Pyro5.errors.ProtocolError(
                    f"a compressed message must inflate to at most {MAX_MESSAGE_BYTES} bytes")
            self.data, self.data_size = data, len(data)


class _CappedSerpent(SerpentSerializer):
    """Serpent, refusing a message too long to parse in bounded time (SERPENT_MAX_BYTES)."""

    def loads(self, data):
        return super().loads(self._capped(data))

    def loadsCall(self, data):
        return super().loadsCall(self._capped(data))

    @staticmethod
    def _capped(data):
        if len(data) > SERPENT_MAX_BYTES:
            raise Pyro5.errors.SerializeError(
                f"a serpent message may be at most {SERPENT_MAX_BYTES} bytes here, got "
                f"{len(data)}; send it in json (Pyro5.config.SERIALIZER = 'json'), up to "
                f"{MAX_MESSAGE_BYTES} bytes")
        return data


class _Refused:
    """A serializer a market server will not decode: marshal (and msgpack, if installed).
    Marshal's decoder trusts the lengths it reads: a 6-byte message that claims a tuple
    of 2**31 - 1 items took 77 s of CPU and 16 GB before it failed. Replies are still
    encoded, so the refusal reaches such a client as an error it can read."""
    name = "?"                      # set per serializer by guard_serializers

    def loads(self, data):
        raise Pyro5.errors.SerializeError(self._refusal())

    def loadsCall(self, data):
        raise Pyro5.errors.SerializeError(self._refusal())

    def _refusal(self) -> str:
        return f"this market does not accept the {self.name} serializer; use json or serpent"


def guard_serializers() -> None:
    """In a process that serves: decode json, serpent only up to SERPENT_MAX_BYTES, and
    nothing else. Pyro5 picks a message's decoder by the id its sender put in it."""
    for name, ser in list(Pyro5.serializers.serializers.items()):
        if name == "json" or isinstance(ser, (_CappedSerpent, _Refused)):
            continue
        guarded = (_CappedSerpent() if name == "serpent" else
                   type(f"Refused{name}", (_Refused, type(ser)), {"name": name})())
        Pyro5.serializers.serializers[name] = guarded
        Pyro5.serializers.serializers_by_id[guarded.serializer_id] = guarded


def guard_serving() -> None:
    """Everything a serving process adds to `configure`: bounded decoders and handshakes.
    rpc.Server calls it; so does the launcher's name server, which is Pyro5's own."""
    guard_serializers()
    bound_handshakes()


_pyro_handshake = Pyro5.server.Daemon._handshake


def bound_handshakes() -> None:
    """In a process that serves: drop a connection whose handshake is not in within
    HANDSHAKE_TIMEOUT_S (DENIAL_TIMEOUT_S when it is only read to be refused). Patches
    Pyro5's Daemon, so Pyro5's own name server daemon gets it too."""
    Pyro5.server.Daemon._handshake = _bounded_handshake


def _bounded_handshake(daemon, conn, denied_reason=None) -> bool:
    deadline = _Deadline(conn.sock, DENIAL_TIMEOUT_S if denied_reason else HANDSHAKE_TIMEOUT_S)
    try:
        ok = _pyro_handshake(daemon, conn, denied_reason)
    finally:
        in_time = deadline.cancel()
    return ok and in_time


class _Deadline:
    """Shuts a socket down, which ends a read blocked on it in another thread, unless
    cancelled within `seconds`. A total bound: a client that sends one byte now and then
    is dropped as surely as a silent one."""

    def __init__(self, sock: socket.socket, seconds: float):
        self._sock = sock
        self._lock = threading.Lock()
        self._state = "running"
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> bool:
        """Stop the timer; False if the deadline had already passed."""
        self._timer.cancel()
        with self._lock:
            if self._state == "running":
                self._state = "cancelled"
            return self._state == "cancelled"

    def _expire(self) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "expired"
        _shut(self._sock)


def register_errors() -> None:
    """Teach every serializer the market's exceptions, both ways.

    Sending: a MarketError travels as its built-in twin (errors.builtin_twin) whose
    message starts with the market's name for it, and whose attributes carry that name
    and the bare message. Pyro5 rebuilds built-in exceptions in any client, so a bare
    Pyro5 REPL that never imported pyromarket reads `ValueError: InvalidRequest: quantity
    must be between 1 and 100, got -2` (before, Pyro5's `SerializeError: unsupported
    serialized class`, with the message lost). Receiving: a process that called this gets
    the market's own class back, with the bare message."""
    SerializerBase.register_class_to_dict(MarketError, _error_to_dict)
    for twin in errors.BUILTIN_TWINS:
        SerializerBase.register_dict_to_class(f"builtins.{twin.__name__}",
                                              functools.partial(_error_from_dict, twin))


def _error_to_dict(exc: MarketError) -> dict:
    name, message = errors.wire_name(exc), str(exc)
    attributes = {**vars(exc), "market_error": name, "message": message}
    return {"__class__": f"builtins.{errors.builtin_twin(type(exc)).__name__}",
            "__exception__": True, "args": (f"{name}: {message}",),
            "attributes": attributes}


def _error_from_dict(twin: type, _classname: str, data: dict) -> BaseException:
    attributes = data.get("attributes")
    cls = errors.by_name(attributes.get("market_error")) if isinstance(attributes, dict) else None
    if cls is None:                         # a plain ValueError or RuntimeError
        return SerializerBase.make_exception(twin, data)
    return cls(str(attributes.get("message", "")))


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn Pyro5's transport failures into `Unavailable`, naming what was called."""
    try:
        yield
    except Pyro5.errors.NamingError as exc:
        raise Unavailable(f"{what}: not registered ({exc})") from exc
    except Pyro5.errors.CommunicationError as exc:
        raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def remote(fn: Callable) -> Callable:
    """Expose a method, and guard it: bad arity or a foreign exception becomes a
    MarketError. The market's remote objects expose exactly their `remote` methods (never
    a whole class, whose public helpers such as `close` would be callable by anyone)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except MarketError:
            raise
        except TypeError as exc:
            try:                    # only now pay for a signature check: bad arity?
                sig.bind(self, *args, **kwargs)
            except TypeError:
                raise InvalidRequest(f"{fn.__name__}{sig}: {exc}") from None
            log.exception("internal error in %s", fn.__name__)
            raise MarketError(f"internal error in {fn.__name__}: TypeError: {exc}") from None
        except Exception as exc:    # noqa: BLE001 - never leak internals across the wire
            log.exception("internal error in %s", fn.__name__)
            raise MarketError(f"internal error in {fn.__name__}: {type(exc).__name__}: {exc}") from None
    return Pyro5.server.expose(guarded)


def release(p: Pyro5.api.Proxy | None) -> None:
    """Close a proxy's connection, whatever state it is in; None is fine."""
    if p is not None:
        with contextlib.suppress(Exception):
            p._pyroClaimOwnership()
            p._pyroRelease()


def interrupt(p: Pyro5.api.Proxy | None) -> None:
    """End a call in progress on `p` from another thread: its socket is shut down, so the
    call fails at once (ConnectionClosedError, Unavailable through `translated`) instead
    of waiting out its deadline. Only the socket is touched, never the proxy's own state,
    so the proxy still belongs to the thread that calls through it, which should drop it.
    A proxy with no connection, or one already closed, is left alone; so is a call still
    connecting (Pyro5 sets the connection only once the handshake is answered): use
    `Interruptible` to reach that one too."""
    _shut(getattr(getattr(p, "_pyroConnection", None), "sock", None))


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Interruptible:
    """A call through `proxy`, made on this thread inside the `with` block, that another
    thread may end at once (`end`), whatever stage it is at: a connected proxy's socket
    is shut down (`interrupt`), and so is the socket of a connection the call is still
    making, whose handshake a hung server never answers. Either way the call fails at once
    as a lost connection instead of waiting out its deadline. `end` touches only sockets,
    never the proxy's state, and does nothing once the block has exited, so it cannot hit
    a later call through the same proxy."""

    def __init__(self, proxy: Pyro5.api.Proxy):
        self.proxy = proxy
        self.ended = False
        self._open = False
        self._sockets: list[socket.socket] = []     # connections made inside the block
        self._lock = threading.Lock()
        self._outer: Interruptible | None = None    # the block this one is nested in

    def __enter__(self) -> Interruptible:
        Pyro5.socketutil.create_socket = _create_socket     # idempotent: see _create_socket
        with self._lock:
            self._open = True
        self._outer = getattr(_connecting, "call", None)
        _connecting.call = self
        return self

    def __exit__(self, *exc_info) -> None:
        _connecting.call, self._outer = self._outer, None
        with self._lock:
            self._open = False
            self._sockets.clear()

    def end(self) -> None:
        """From any thread: make the call fail at once (a no-op outside the block). The
        sockets are shut under the lock, so the block cannot exit, and a later call
        begin, in between."""
        with self._lock:
            if not self._open:
                return
            self.ended = True
            interrupt(self.proxy)
            for sock in self._sockets:
                _shut(sock)

    def _connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            ended = self.ended
        if ended:                   # ended while connecting: the handshake fails at once
            _shut(sock)


_connecting = threading.local()     # .call: the Interruptible block this thread is in
_pyro_create_socket = Pyro5.socketutil.create_socket


def _create_socket(*args: Any, **kwargs: Any) -> socket.socket:
    """Pyro5's create_socket, which a proxy calls to connect (before its handshake), and
    which also hands the new socket to the Interruptible block the thread is in, if any."""
    sock = _pyro_create_socket(*args, **kwargs)
    call = getattr(_connecting, "call", None)
    if call is not None:
        call._connected(sock)
    return sock


def proxy(uri: str, timeout_s: float) -> Pyro5.api.Proxy:
    """A proxy with a deadline on every call and no automatic retries."""
    p = Pyro5.api.Proxy(uri)
    p._pyroTimeout = timeout_s
    p._pyroMaxRetries = 0
    return p


class ProxyPool:
    """At most `size` proxies to one URI, each lent to one thread at a time (the borrower
    claims it: Pyro5's ownership rule). However many threads call through it, a process
    holds at most `size` connections to that server, whose worker pool caps the
    connections it accepts. A thread that finds every proxy lent waits for one, at most
    `timeout_s`; a proxy whose call failed in transport is closed, not lent again."""

    def __init__(self, uri: str | Callable[[], str], timeout_s: float, size: int):
        """`uri`: the server's, or a callable that gives it when a proxy is made (a
        `Resolver`, so a new connection follows a name)."""
        if size < 1:
            raise ValueError("a ProxyPool needs size >= 1")
        self.uri, self.timeout_s, self.size = uri, timeout_s, size
        self._idle: list[Pyro5.api.Proxy] = []
        self._lent = 0
        self._closed = False
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[Pyro5.api.Proxy]:
        """A proxy owned by this thread until the block ends."""
        p, broken = self._take(), False
        try:
            yield p
        except (Unavailable, CommunicationError):
            broken = True
            raise
        finally:
            self._give_back(p, broken)

    def connections(self) -> int:
        """Proxies made and not yet closed (lent or idle)."""
        with self._cond:
            return self._lent + len(self._idle)

    def close(self) -> None:
        """Close the idle proxies now, and each lent one when it comes back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for p in idle:
            release(p)

    def _take(self) -> Pyro5.api.Proxy:
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while not self._closed and not self._idle and self._lent >= self.size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(f"{self.uri}: all {self.size} connections busy for "
                                      f"{self.timeout_s:.1f} s")
                self._cond.wait(left)
            if self._closed:
                raise Unavailable(f"{self.uri}: connections closed (shutting down)")
            self._lent += 1
            p = self._idle.pop() if self._idle else None
        if p is None:
            try:
                p = proxy(self.uri() if callable(self.uri) else self.uri, self.timeout_s)
            except BaseException:
                self._give_back(None, broken=True)
                raise
        p._pyroClaimOwnership()
        return p

    def _give_back(self, p: Pyro5.api.Proxy, broken: bool) -> None:
        with self._cond:
            self._lent -= 1
            keep = not broken and not self._closed
            if keep:
                self._idle.append(p)
            self._cond.notify()
        if not keep:
            release(p)


class ThreadLocalProxy:
    """One proxy per calling thread, all to the same URI (Pyro5's ownership rule). A
    thread's proxy closes when the thread ends, as Pyro5's worker threads do when idle
    ones are plentiful; the connections it holds are at most one per live thread that
    called. (The bench's chain uses it: its middle calls from every thread at once.)"""

    def __init__(self, uri: str, timeout_s: float):
        self.uri, self.timeout_s = uri, timeout_s
        self._local = threading.local()
        # by id: proxies to one URI compare equal, so a set would keep only one of them
        self._all: weakref.WeakValueDictionary[int, Pyro5.api.Proxy] = \
            weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def get(self) -> Pyro5.api.Proxy:
        p = getattr(self._local, "proxy", None)
        if p is None:
            p = self._local.proxy = proxy(self.uri, self.timeout_s)
            with self._lock:
                self._all[id(p)] = p
        return p

    def close(self) -> None:
        with self._lock:
            proxies = list(self._all.values())
            self._all.clear()
        for p in proxies:
            release(p)


def nameserver(host: str, port: int, timeout_s: float = 2.0) -> Pyro5.api.Proxy:
    """A bound proxy to the name server at host:port (never broadcast, never a reverse
    lookup). The deadline covers the connection too: Pyro5's `locate_ns` binds with the
    process's COMMTIMEOUT, which is 0 here (the servers' setting), so a name server that
    accepts but never answers (stopped, or hung) held the caller forever."""
    ns = proxy(f"PYRO:{Pyro5.core.NAMESERVER_NAME}@{host}:{port}", timeout_s)
    try:
        with translated(f"name server {host}:{port}"):
            ns._pyroBind()
    except Unavailable:
        release(ns)
        raise
    return ns


def lookup(host: str, port: int, name: str, timeout_s: float = 2.0) -> str:
    """The PYRO: URI registered as `name`, asked of the name server at host:port within
    `timeout_s` (a PYRONAME proxy resolves through `locate_ns`, with no deadline)."""
    with nameserver(host, port, timeout_s) as ns, translated(f"look up {name}"):
        return str(ns.lookup(name))


class Resolver:
    """`name`'s URI from the name server, or the last one it gave if it cannot answer now.

    Objects keep their addresses while the name server restarts (the warehouse's is fixed
    by the config), so a process that found an object once keeps reaching it while the
    name server is down, or restarted and not yet told the name again. Thread-safe."""

    def __init__(self, host: str, port: int, name: str, timeout_s: float = 2.0):
        self.host, self.port, self.name, self.timeout_s = host, port, name, timeout_s
        self.last: str | None = None

    def __call__(self) -> str:
        try:
            self.last = lookup(self.host, self.port, self.name, self.timeout_s)
        except Unavailable:
            if self.last is None:
                raise
        return self.last

    def __str__(self) -> str:
        return f"{self.name} (name server {self.host}:{self.port})"


class Registration:
    """Keeps `name` bound to `uri`. The name server holds its names in memory, so one that
    restarts knows none; `renew()` binds the name again if it is missing, but never over
    another object's binding (a successor's). Each call makes its own short connection,
    so a registration holds none of the name server's worker threads in between."""

    def __init__(self, host: str, port: int, name: str, uri: str, timeout_s: float = 2.0):
        self.host, self.port, self.name, self.uri = host, port, name, str(uri)
        self.timeout_s = timeout_s
        self.down = False             # the last renew() could not reach the name server

    def renew(self, before_bind: Callable[[], bool] | None = None) -> bool:
        """True if the name had to be bound again. `before_bind()`, if given, is asked
        first when the name is missing, and False leaves it unbound. Raises Unavailable
        if the name server cannot be reached now."""
        self.down = True
        with nameserver(self.host, self.port, self.timeout_s) as ns, \
                translated(f"renew {self.name}"):
            bound = ns.list(prefix=self.name).get(self.name)
            self.down = False
            if bound is not None or (before_bind is not None and not before_bind()):
                return False
            try:
                ns.register(self.name, self.uri, safe=True)
            except Pyro5.errors.NamingError:
                return False                # bound by someone else meanwhile: theirs
        return True

    def withdraw(self) -> None:
        """Remove the name if it still points here; quietly does nothing if it cannot."""
        with contextlib.suppress(Unavailable), \
                nameserver(self.host, self.port, self.timeout_s) as ns:
            remove_name_if(ns, self.name, self.uri)


# How many peers a broadcast tells at once. Each call has its own deadline, so a hung
# peer costs the others nothing, and a broadcast to P peers takes at most about
# ceil(P / BROADCAST_THREADS) deadlines.
BROADCAST_THREADS = 16


def ask_peers(uris: dict[int, str], timeout_s: float,
              call: Callable[[Pyro5.api.Proxy], object], label: str = "peer") -> dict[int, object]:
    """Run `call(proxy)` against every peer in `uris` (peer id -> URI) at once, each on a
    thread of its own with its own proxy and deadline `timeout_s`. Returns, in the order
    of `uris`, each peer's answer: what its call returned, or the MarketError it raised
    (`Unavailable` for a peer that did not answer), named "<label> <id>"."""
    def ask(peer: int) -> object:
        try:
            with translated(f"{label} {peer}"), proxy(uris[peer], timeout_s) as p:
                return call(p)
        except MarketError as exc:
            return exc

    if not uris:
        return {}
    with concurrent.futures.ThreadPoolExecutor(min(BROADCAST_THREADS, len(uris)),
                                               thread_name_prefix="ask-peers") as pool:
        return dict(zip(uris, pool.map(ask, uris)))


def tell_peers(uris: dict[int, str], timeout_s: float,
               call: Callable[[Pyro5.api.Proxy], object]) -> dict[int, MarketError | None]:
    """ask_peers for news: each peer's outcome, None or the MarketError its call raised."""
    answers = ask_peers(uris, timeout_s, call)
    return {peer: a if isinstance(a, MarketError) else None for peer, a in answers.items()}


def list_traders(ns: Pyro5.api.Proxy) -> dict[int, str]:
    """{n: uri} of every `market.trader.<n>` registered now."""
    with translated("name server list"):
        names = ns.list(prefix=TRADER_PREFIX)
    out = {}
    for name, uri in names.items():
        suffix = name[len(TRADER_PREFIX):]
        if suffix.isdigit():
            out[int(suffix)] = str(uri)
    return out


def register_name(ns: Pyro5.api.Proxy, name: str, uri: Any) -> None:
    """Bind `name` to `uri` in the name server, replacing any earlier binding."""
    with translated(f"register {name}"):
        ns.register(name, uri, safe=False)


def remove_name_if(ns: Pyro5.api.Proxy, name: str, uri: str) -> bool:
    """Remove `name` only while it still points at `uri`, never at a successor's object."""
    with translated(f"remove {name}"):
        current = ns.list(prefix=name).get(name)
        if current is None or str(current) != str(uri):
            return False
        ns.remove(name)
        return True


class CannotServe(RuntimeError):
    """A Server cannot listen at its address: a host that is not this machine's, say."""


class PortInUse(CannotServe):
    """The address a Server was to bind is taken."""


class Server:
    """A Pyro5 daemon serving in a background thread; close() stops it and joins."""

    def __init__(self, host: str, port: int):
        """Bind host:port now; raises PortInUse if another process holds it, and
        CannotServe (in words) for any other reason it cannot listen there."""
        guard_serving()
        try:
            with translated(f"bind {host}:{port}"):
                self.daemon = Pyro5.server.Daemon(host=host, port=port)
        except OSError as exc:
            kind = PortInUse if exc.errno == errno.EADDRINUSE else CannotServe
            raise kind(bind_error_words(exc, host, port)) from None
        except OverflowError:
            raise CannotServe(f"cannot listen on {host}:{port} (a port is 0 to 65535)") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pyro-daemon", daemon=True)

    def register(self, obj: Any, object_id: str) -> str:
        """Serve `obj` under `object_id`; return its PYRO: URI."""
        return str(self.daemon.register(obj, objectId=object_id, force=True))

    def connections(self) -> int:
        """Connections open now: each holds one of the worker pool's threads."""
        pool = getattr(self.daemon.transportServer, "pool", None)
        return len(pool.busy) if pool is not None else 0

    def start(self) -> "Server":
        """Start answering calls on the daemon's thread."""
        self._thread.start()
        return self

    def _loop(self) -> None:
        self.daemon.requestLoop(loopCondition=lambda: not self._stop.is_set())

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with contextlib.suppress(Exception):
            self.daemon.close()
