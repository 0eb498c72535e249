"""Cursor (keyset) pagination with a stable order, used by every list endpoint.

A list is ordered by one or more sort columns and always ends with the primary key, so the order is total
and stable under concurrent inserts. The cursor is an opaque, URL-safe token holding the sort name and
the last row's sort values; a cursor from another sort, another list or a tampered one is a 400.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import QueryParameter
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Select, SmallInteger, String, Uuid, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from msp_platform.kit.errors import BadRequest, FieldError, ValidationFailed

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


Limit = Annotated[
    int | None,
    QueryParameter(ge=1, le=MAX_LIMIT, description=f"Page size (default {DEFAULT_LIMIT}, max {MAX_LIMIT})."),
]
Cursor = Annotated[str | None, QueryParameter(description="`next_cursor` of the previous page.")]


class Page(msgspec.Struct, Generic[T], kw_only=True):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class SortKey:
    column: InstrumentedAttribute[Any] | ColumnElement[Any]
    descending: bool = False


@dataclass(frozen=True)
class Ordering:
    """A named sort: its keys (the last one unique, usually the id)."""

    name: str
    keys: tuple[SortKey, ...]

    def order_by(self) -> list[ColumnElement[Any]]:
        return [k.column.desc() if k.descending else k.column.asc() for k in self.keys]


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(
            "Invalid page size.", errors=[FieldError("limit", f"must be between 1 and {MAX_LIMIT}")]
        )
    return limit


def _encode_value(value: Any) -> list[Any]:
    if value is None:
        return ["n", None]
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, datetime):
        return ["t", value.isoformat()]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    if isinstance(value, int):
        return ["i", value]
    return ["s", str(value)]


_INT_BOUNDS = {SmallInteger: 2**15, BigInteger: 2**63, Integer: 2**31}


def _int_bound(column_type: TypeEngine[Any]) -> int:
    for kind, bound in _INT_BOUNDS.items():  # most specific first: BigInteger is an Integer
        if isinstance(column_type, kind):
            return bound
    return 2**63


def _decode_value(tagged: Any, key: SortKey) -> Any:
    """One cursor value, checked strictly against its sort key's column type.

    A cursor is the caller's input: a value of the wrong type would reach the database as a bind parameter
    of another type (a 500), so anything but the exact encoding ``_encode_value`` produces is refused."""
    if not isinstance(tagged, list) or len(tagged) != 2:
        raise ValueError("cursor value")
    tag, raw = tagged
    column_type: TypeEngine[Any] = key.column.type
    base = column_type.impl_instance if isinstance(column_type, TypeDecorator) else column_type
    if tag == "n" and raw is None and getattr(key.column, "nullable", False):
        return None
    if isinstance(base, DateTime):
        if tag != "t" or not isinstance(raw, str):
            raise ValueError("cursor value: timestamp expected")
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            raise ValueError("cursor value: naive timestamp")
        return value
    if isinstance(base, Uuid):
        if tag != "u" or not isinstance(raw, str):
            raise ValueError("cursor value: uuid expected")
        return uuid.UUID(raw)
    if isinstance(base, Boolean):
        if tag != "b" or not isinstance(raw, bool):
            raise ValueError("cursor value: boolean expected")
        return raw
    if isinstance(base, Integer):
        if tag != "i" or not isinstance(raw, int) or isinstance(raw, bool):
            raise ValueError("cursor value: integer expected")
        bound = _int_bound(base)
        if not -bound <= raw < bound:
            raise ValueError("cursor value: integer out of range")
        return raw
    if isinstance(base, String):
        if tag != "s" or not isinstance(raw, str) or "\x00" in raw:
            raise ValueError("cursor value: text expected")
        enum_cls = getattr(column_type, "enum_cls", None)
        return enum_cls(raw) if enum_cls is not None else raw
    raise ValueError(f"cursor value: unsupported sort key type {type(column_type).__name__}")


def encode_cursor(scope: str, ordering: Ordering, values: Sequence[Any]) -> str:
    payload = msgspec.json.encode([scope, ordering.name, [_encode_value(v) for v in values]])
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode_cursor(cursor: str, scope: str, ordering: Ordering) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw_scope, name, values = msgspec.json.decode(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError, binascii.Error, msgspec.DecodeError) as exc:
        raise BadRequest("The cursor is not valid; start again without one.") from exc
    if (
        raw_scope != scope
        or name != ordering.name
        or not isinstance(values, list)
        or len(values) != len(ordering.keys)
    ):
        raise BadRequest("The cursor belongs to another list or sort order; start again without one.")
    try:
        return [_decode_value(v, k) for v, k in zip(values, ordering.keys, strict=True)]
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest("The cursor is not valid; start again without one.") from exc


def _after(ordering: Ordering, values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in ``ordering`` (works for mixed directions and NULL-free keys)."""
    clauses: list[ColumnElement[bool]] = []
    for i, key in enumerate(ordering.keys):
        equal_prefix = [ordering.keys[j].column == values[j] for j in range(i)]
        step = key.column < values[i] if key.descending else key.column > values[i]
        clauses.append(and_(*equal_prefix, step))
    return or_(*clauses)


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    *,
    ordering: Ordering,
    limit: int | None,
    cursor: str | None,
    scope: str,
) -> tuple[list[Any], str | None]:
    """Run ``stmt`` (selecting one entity) one page at a time. ``scope`` names the list so its cursors
    cannot be replayed against another list."""
    size = check_limit(limit)
    if cursor:
        stmt = stmt.where(_after(ordering, decode_cursor(cursor, scope, ordering)))
    rows = list((await session.scalars(stmt.order_by(*ordering.order_by()).limit(size + 1))).all())
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_cursor = encode_cursor(scope, ordering, [_value_of(last, k) for k in ordering.keys])
    return rows, next_cursor


def _value_of(row: Any, key: SortKey) -> Any:
    name = getattr(key.column, "key", None) or getattr(key.column, "name", None)
    if name is None:
        raise TypeError("sort keys must be mapped attributes")
    return getattr(row, name)
