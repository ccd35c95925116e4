"""The market's exception tree. No Pyro5 import: rpc.py registers these with Pyro5.

    MarketError                  anything the market refuses or cannot do
    ├── InvalidRequest           bad arguments: wrong type, bad quantity, bad id
    │   └── UnknownProduct       a product the market does not trade
    ├── ConflictingRequest       a request_id reused with different arguments
    ├── Unavailable              a dependency did not answer in time; safe to retry
    │                            with the same request_id
    ├── FencedOut                a write carried an epoch older than the warehouse's
    └── NotATrader               the peer asked is not (or no longer) a trader

    ConfigError (ValueError)     a config file that cannot run; raised at startup

Every remote exception takes its message as its only positional argument, which is
what Pyro5's json and serpent round trips need (rpc.register_errors). On the wire each
travels as its built-in twin (`builtin_twin`), so that a client which never imported
pyromarket, such as a bare Pyro5 REPL, can still read it.
"""

__all__ = [
    "MarketError", "InvalidRequest", "UnknownProduct", "ConflictingRequest",
    "Unavailable", "FencedOut", "NotATrader", "ConfigError", "REMOTE_ERRORS",
    "to_wire", "from_wire", "wire_name", "builtin_twin", "BUILTIN_TWINS", "by_name",
]


class MarketError(Exception):
    """Base of every error the market sends across the wire."""


class InvalidRequest(MarketError):
    """The arguments are malformed: wrong type, non-positive or huge quantity."""


class UnknownProduct(InvalidRequest):
    """The product is not one the market trades."""


class ConflictingRequest(MarketError):
    """A request_id that was already applied came back with different arguments."""


class Unavailable(MarketError):
    """A dependency did not answer in time. Retrying with the same request_id is safe."""


class FencedOut(MarketError):
    """A trader wrote with an epoch the warehouse has since superseded."""


class NotATrader(MarketError):
    """The peer that was asked does not hold a trader role."""


class ConfigError(ValueError):
    """A config file that cannot run. The message names the offending key."""


REMOTE_ERRORS = (
    MarketError, InvalidRequest, UnknownProduct, ConflictingRequest,
    Unavailable, FencedOut, NotATrader,
)


def builtin_twin(cls: type[MarketError]) -> type[Exception]:
    """The built-in exception a client that does not know the market's errors gets in
    place of `cls`: ValueError for bad arguments (the caller's fault), else RuntimeError."""
    return ValueError if issubclass(cls, (InvalidRequest, ConflictingRequest)) else RuntimeError


# every built-in class that carries a market error (rpc hooks each to rebuild ours)
BUILTIN_TWINS = tuple(dict.fromkeys(builtin_twin(cls) for cls in REMOTE_ERRORS))


def by_name(name: object) -> type[MarketError] | None:
    """The remote error class called `name` (e.g. "InvalidRequest"), or None."""
    return next((cls for cls in REMOTE_ERRORS if cls.__name__ == name), None)


def wire_name(exc: BaseException) -> str:
    """The name both wires give `exc`: its class's, if that is a remote error class, else
    "MarketError" (a subclass or a foreign error, which the other side could not rebuild)."""
    return type(exc).__name__ if type(exc) in REMOTE_ERRORS else "MarketError"


def to_wire(exc: BaseException) -> dict:
    """An error as plain data, for a per-item failure inside a batch reply."""
    return {"error": wire_name(exc), "message": str(exc)}


def from_wire(data: dict) -> MarketError:
    """The inverse of to_wire; an unknown name degrades to MarketError."""
    return (by_name(data.get("error")) or MarketError)(data.get("message", ""))
