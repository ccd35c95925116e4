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
what Pyro5's json and serpent round trips need (rpc.register_errors).
"""

__all__ = [
    "MarketError", "InvalidRequest", "UnknownProduct", "ConflictingRequest",
    "Unavailable", "FencedOut", "NotATrader", "ConfigError", "REMOTE_ERRORS",
    "to_wire", "from_wire",
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


def to_wire(exc: BaseException) -> dict:
    """An error as plain data, for a per-item failure inside a batch reply."""
    name = type(exc).__name__ if isinstance(exc, REMOTE_ERRORS) else "MarketError"
    return {"error": name, "message": str(exc)}


def from_wire(data: dict) -> MarketError:
    """The inverse of to_wire; an unknown name degrades to MarketError."""
    by_name = {cls.__name__: cls for cls in REMOTE_ERRORS}
    return by_name.get(data.get("error"), MarketError)(data.get("message", ""))
