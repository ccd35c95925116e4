"""What a buy or sell request is, and how one is checked before anything is applied.

Pure: no Pyro5, no I/O. The trader and the warehouse both call `check()` at their
remote boundary, so malformed input is refused before it reaches a queue or a store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import InvalidRequest, UnknownProduct

__all__ = ["Order", "check", "check_row", "check_product", "new_request_id", "KINDS", "MAX_ID_LEN"]

KINDS = ("buy", "sell")
MAX_ID_LEN = 128


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


def check_product(product: Any, products: Iterable[str]) -> str:
    if not isinstance(product, str):
        raise InvalidRequest(f"product must be a str, got {type(product).__name__}")
    if product not in products:
        raise UnknownProduct(f"unknown product {product!r}; the market trades {sorted(products)}")
    return product


def _check_qty(qty: Any, max_qty: int) -> int:
    if not isinstance(qty, int) or isinstance(qty, bool):
        raise InvalidRequest(f"quantity must be an int, got {type(qty).__name__} {qty!r}")
    if not 1 <= qty <= max_qty:
        raise InvalidRequest(f"quantity must be between 1 and {max_qty}, got {qty}")
    return qty


def _check_request_id(request_id: Any) -> str:
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequest(f"request_id must be a non-empty str, got {request_id!r}")
    if len(request_id) > MAX_ID_LEN:
        raise InvalidRequest(f"request_id longer than {MAX_ID_LEN} characters")
    return request_id


def check(kind: Any, product: Any, qty: Any, request_id: Any, *, products: Iterable[str],
          max_qty: int, origin: Any = "", epoch: Any = 0) -> Order:
    """Return a checked Order, or raise InvalidRequest / UnknownProduct naming the problem."""
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(origin, str) or len(origin) > MAX_ID_LEN:
        raise InvalidRequest("origin must be a short str")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise InvalidRequest(f"epoch must be a non-negative int, got {epoch!r}")
    return Order(kind, check_product(product, products), _check_qty(qty, max_qty),
                 _check_request_id(request_id), origin, epoch)


ROW_FIELDS = ("kind", "product", "qty", "request_id", "origin", "epoch")


def check_row(row: Any, *, products: Iterable[str], max_qty: int) -> Order:
    """Check one `Order.to_row()` tuple as it arrives over the wire."""
    if not isinstance(row, (list, tuple)) or len(row) != len(ROW_FIELDS):
        raise InvalidRequest(f"an order row must be a list of {len(ROW_FIELDS)} fields {ROW_FIELDS}")
    kind, product, qty, request_id, origin, epoch = row
    return check(kind, product, qty, request_id, products=products, max_qty=max_qty,
                 origin=origin, epoch=epoch)
