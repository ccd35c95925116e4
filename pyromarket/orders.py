"""What a buy or sell request is, and how one is checked before anything is applied.

Pure: no Pyro5, no I/O. The trader and the warehouse both call `check()` at their
remote boundary, so malformed input is refused before it reaches a queue or a store.
"""

from __future__ import annotations

import reprlib
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import InvalidRequest, UnknownProduct

__all__ = ["Order", "check", "check_row", "check_product", "check_label", "check_page",
           "check_slot", "MAX_LISTED_TRADERS",
           "new_request_id", "shown", "KINDS", "MAX_ID_LEN", "MAX_PRODUCT_LEN",
           "MAX_PRODUCTS", "MAX_BATCH_ORDERS", "MAX_EPOCH", "MAX_QUANTITY", "MAX_STOCK"]

KINDS = ("buy", "sell")
MAX_ID_LEN = 128          # a request_id, an origin or a client name
MAX_PRODUCT_LEN = 64      # a product's name, set in the config
MAX_PRODUCTS = 1_000      # products one market trades, so an inventory fits one message
MAX_BATCH_ORDERS = 500    # the most orders one warehouse call carries; caps warehouse.batch_max
MAX_EPOCH = 2**31 - 1     # epochs count trader joins; the ledger stores them as SQLite ints
# SQLite stores 64-bit ints: past 2**63 - 1 an UPDATE fails, and with it the whole batch.
MAX_QUANTITY = 2**31 - 1  # the most `max_quantity` may allow in one order
MAX_STOCK = 2**62         # the most the warehouse holds of a product; a sell past it is refused
SHOWN_CHARS = 60          # how much of a refused value an error message repeats
MAX_LISTED_TRADERS = 4_096   # the most live traders one broadcast may list (one per peer)


@dataclass(frozen=True)
class Order:
    """One buy or sell. `request_id` makes it idempotent end to end."""
    kind: str
    product: str
    qty: int
    request_id: str
    origin: str = ""      # who forwarded it ("trader 1", "repl"), for logs and the ledger
    epoch: int = 0        # the forwarding trader's leadership epoch (fencing)

    def to_row(self) -> tuple:
        """The compact form `Warehouse.apply` takes: a row encodes and parses faster
        than the equivalent dict, and apply() is the trader's hot path."""
        return (self.kind, self.product, self.qty, self.request_id, self.origin, self.epoch)

    def same_request(self, kind: str, product: str, qty: int) -> bool:
        return (self.kind, self.product, self.qty) == (kind, product, qty)


def new_request_id(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def shown(value: Any) -> str:
    """`repr(value)` for an error message, cut to SHOWN_CHARS: a refused 100 kB product
    name or a 4,000-digit quantity should not come back as a 100 kB message. A container
    is shown a few items and levels deep (`_SHOWN`): YAML aliases can make a config value
    that repr would spell out in exponential time (nine levels of nine took 90 s)."""
    if isinstance(value, int):
        return _int_shown(value)
    text = repr(value) if isinstance(value, (str, bytes, float)) else _SHOWN.repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS - 1]}… ({len(text)} characters)"


def _int_shown(value: int) -> str:
    """Its digits, or their count past about 54 (repr of a 5,000-digit int raises)."""
    if value.bit_length() > 3 * SHOWN_CHARS:
        sign = "a negative" if value < 0 else "an"
        return f"{sign} int of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


class _BoundedRepr(reprlib.Repr):
    """reprlib's repr (a few items per container, a few levels deep), with shown's ints."""

    def __init__(self):
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = SHOWN_CHARS

    def repr_int(self, x: int, level: int) -> str:
        return _int_shown(x)


_SHOWN = _BoundedRepr()


def check_page(cursor: str, since: Any, limit: Any) -> None:
    """Raise InvalidRequest unless a page request is sound: its cursor `since` (named
    `cursor` in the message) is a non-negative int and `limit` a positive one (a page
    of none would read as the end)."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    if not (whole(since) and since >= 0 and whole(limit) and limit >= 1):
        raise InvalidRequest(f"{cursor} must be a non-negative int and limit a positive int, "
                             f"got {shown(since)} and {shown(limit)}")


def check_slot(value: Any, what: str = "a trader's number") -> int:
    """A trader's n (of market.trader.<n>) or an epoch: an int from 1 to MAX_EPOCH."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_EPOCH:
        raise InvalidRequest(f"{what} must be an int from 1 to {MAX_EPOCH}, got {shown(value)}")
    return value


def check_product(product: Any, products: Iterable[str]) -> str:
    if not isinstance(product, str):
        raise InvalidRequest(f"product must be a str, got {type(product).__name__}")
    if product not in products:
        raise UnknownProduct(f"unknown product {shown(product)}; "
                             f"the market trades {sorted(products)}")
    return product


def _check_qty(qty: Any, max_qty: int) -> int:
    if not isinstance(qty, int) or isinstance(qty, bool):
        raise InvalidRequest(f"quantity must be an int, got {type(qty).__name__} {shown(qty)}")
    if not 1 <= qty <= max_qty:
        raise InvalidRequest(f"quantity must be between 1 and {max_qty}, got {shown(qty)}")
    return qty


def check_label(value: Any, what: str, *, empty_ok: bool = False,
                max_len: int = MAX_ID_LEN) -> str:
    """A short printable str: a request_id, an origin or a client name. Printable keeps
    out newlines (a forged line in an event log) and lone surrogates, which no UTF-8
    log, ledger or JSON message can hold."""
    if not isinstance(value, str) or not (value or empty_ok):
        kind = "str" if empty_ok else "non-empty str"
        raise InvalidRequest(f"{what} must be a {kind}, got {shown(value)}")
    if len(value) > max_len:
        raise InvalidRequest(f"{what} longer than {max_len} characters")
    if not value.isprintable():
        raise InvalidRequest(f"{what} must be printable text (no control characters or lone "
                             f"surrogates), got {shown(value)}")
    return value


def check(kind: Any, product: Any, qty: Any, request_id: Any, *, products: Iterable[str],
          max_qty: int, origin: Any = "", epoch: Any = 0) -> Order:
    """Return a checked Order, or raise InvalidRequest / UnknownProduct naming the problem."""
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {KINDS}, got {shown(kind)}")
    check_label(origin, "origin", empty_ok=True)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCH:
        raise InvalidRequest(f"epoch must be an int from 0 to {MAX_EPOCH}, got {shown(epoch)}")
    return Order(kind, check_product(product, products), _check_qty(qty, max_qty),
                 check_label(request_id, "request_id"), origin, epoch)


ROW_FIELDS = ("kind", "product", "qty", "request_id", "origin", "epoch")


def check_row(row: Any, *, products: Iterable[str], max_qty: int) -> Order:
    """Check one `Order.to_row()` tuple as it arrives over the wire."""
    if not isinstance(row, (list, tuple)) or len(row) != len(ROW_FIELDS):
        raise InvalidRequest(f"an order row must be a list of {len(ROW_FIELDS)} fields {ROW_FIELDS}")
    kind, product, qty, request_id, origin, epoch = row
    return check(kind, product, qty, request_id, products=products, max_qty=max_qty,
                 origin=origin, epoch=epoch)
