"""Real child processes with a lifecycle: start() returns once ready, stop() ends the group.

Modelled on mirakuru. Each child runs in its own session (process group), so stop()
reaches everything it spawned: SIGTERM first, SIGKILL after a grace period. Children
also get PR_SET_PDEATHSIG, so a launcher killed with -9 takes its market with it, and
an atexit hook stops whatever is still running. No Pyro5 here: readiness is any
callable the caller supplies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Sequence

__all__ = ["Service", "ServiceFailed", "StartTimeout", "wait_until", "python_module", "port_in_use",
           "drop_stdout",
           "address_problem", "bind_error_words",
           "stop_all", "stop_leftovers", "free_ports", "alive", "stop_pids"]

_LIVE: "set[Service]" = set()


class ServiceFailed(RuntimeError):
    """The child exited before it became ready."""


class StartTimeout(TimeoutError):
    """The child did not become ready before its deadline."""


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.05) -> None:
    """Poll `condition` until true; raise TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that were free a moment ago (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bind_error(host: str, port: int) -> OSError | None:
    """The error that binding host:port as Pyro5's daemon does (with SO_REUSEADDR, so a
    port a stopped server left in TIME_WAIT counts as free) raises now, or None."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    """Whether another process holds host:port now (any other bind error is
    `address_problem`'s)."""
    exc = _bind_error(host, port)
    return exc is not None and exc.errno == errno.EADDRINUSE


def address_problem(host: str, port: int) -> str | None:
    """Why no process of this machine could serve at host:port, in words, or None. A port
    held by another process is not such a problem (see port_in_use): it may be freed."""
    exc = _bind_error(host, port)
    if exc is None or exc.errno == errno.EADDRINUSE:
        return None
    return bind_error_words(exc, host, port)


def bind_error_words(exc: OSError, host: str, port: int) -> str:
    """An error from binding host:port, as one line a user can act on."""
    if isinstance(exc, socket.gaierror):
        return f"{host!r} is not an address and no such host is known ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return f"{host}:{port} is already in use, by another market or program"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine, so nothing here can listen on it"
    return f"cannot listen on {host}:{port} ({exc.strerror or exc})"


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class Service:
    """One child process; `ready()` says when it is serving."""

    def __init__(self, name: str, argv: Sequence[str], ready: Callable[[], bool],
                 output_path: str | None = None, env: dict | None = None):
        self.name, self.argv, self.ready = name, list(argv), ready
        self.output_path, self.env = output_path, env
        self.proc: subprocess.Popen | None = None
        self.stopping = False        # set once we stop it: its exit is then no crash

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> "Service":
        """Launch, then wait until ready; raise StartTimeout or ServiceFailed otherwise."""
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> "Service":
        """Launch without waiting (start several, then wait_ready on each)."""
        out = open(self.output_path, "ab") if self.output_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent, env=self.env)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        _LIVE.add(self)
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> "Service":
        """Wait until the service is ready; stop it and raise if it exits or times out."""
        try:
            wait_until(self._ready_or_dead, timeout_s, f"{self.name} to become ready")
        except TimeoutError as exc:
            self.stop()
            raise StartTimeout(f"{exc}{self._tail()}") from None
        if not self.running:
            code = self.proc.returncode
            self.stop()
            raise ServiceFailed(f"{self.name} exited with code {code} before it was ready"
                                f"{self._tail()}")
        return self

    def _ready_or_dead(self) -> bool:
        return not self.running or self.ready()

    def _tail(self, lines: int = 15) -> str:
        if not self.output_path or not os.path.exists(self.output_path):
            return ""
        with open(self.output_path, encoding="utf-8", errors="replace") as fh:
            tail = fh.readlines()[-lines:]
        return "\n--- last output of the child ---\n" + "".join(tail) if tail else ""

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's whole process group (tests use SIGKILL, SIGSTOP)."""
        if self.running:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout_s) if self.proc else None
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the group, then SIGKILL after `grace_s`. Safe to call twice."""
        if self.proc is None:
            return None
        self.stopping = True
        if self.running:
            self.signal(signal.SIGCONT)      # a stopped process cannot handle SIGTERM
            self.signal(signal.SIGTERM)
            if not grace_s or self.wait(grace_s) is None:
                self.signal(signal.SIGKILL)
                self.wait(5.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)   # anything left in its group
        _LIVE.discard(self)
        return self.proc.returncode


def stop_all(services: "list[Service]", grace_s: float = 5.0) -> None:
    """Stop several services at once: SIGTERM to all, one shared grace period, then
    SIGKILL to whatever is left."""
    for service in services:
        service.stopping = True
        if service.running:
            service.signal(signal.SIGCONT)
            service.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for service in services:
        service.wait(max(0.0, deadline - time.monotonic()))
    for service in services:
        service.stop(grace_s=0.0)


def drop_stdout() -> None:
    """Point a closed stdout (`| head` has gone) at /dev/null, so no later write, nor
    Python's flush at exit, fails again (the recipe in the docs of the `signal` module)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def alive(pid: int, expect: bytes | None = None) -> bool:
    """Whether `pid` runs (a zombie does not count); with `expect`, only if its command
    line contains it, so a recycled pid is never mistaken for ours."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return False
        if expect is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return expect in fh.read()
        return True
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def stop_pids(pids: "list[int]", grace_s: float = 5.0) -> None:
    """Stop processes that are not our children (each leads its own group): SIGTERM,
    then SIGKILL whatever still runs after `grace_s`."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
    deadline = time.monotonic() + grace_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@atexit.register
def stop_leftovers() -> None:
    """Stop every Service of this process still running (also run at exit)."""
    stop_all(list(_LIVE), grace_s=2.0)
