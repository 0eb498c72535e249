"""Declarative base, column types and the tenant-owned mixin every tenant table uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, ForeignKey, ForeignKeyConstraint, MetaData, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator

from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on every backend: stored in UTC, returned aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), uuid.UUID: Uuid()}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantOwned(Timestamped):
    """A row that belongs to exactly one tenant.

    The primary key is ``(tenant_id, id)`` so every key and index starts with the tenant (the schema can be
    distributed by tenant), and references between tenant tables are composite foreign keys on
    ``(tenant_id, <ref>_id)``: a row can only point at rows of its own tenant, enforced by the database.
    Rows are filtered and stamped automatically by the session (see ``db.session``); on PostgreSQL
    row-level security is the second wall.
    """

    __tenant_owned__: ClassVar[bool] = True

    @declared_attr
    @classmethod
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True, sort_order=-2)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id, sort_order=-1)


def tenant_fk(columns: str | list[str], table: str, *, name: str | None = None) -> ForeignKeyConstraint:
    """Composite FK ``(tenant_id, col) -> table(tenant_id, id)``: cross-tenant references cannot exist."""
    cols = [columns] if isinstance(columns, str) else columns
    if len(cols) != 1:
        raise ValueError("tenant_fk takes the one local id column")
    return ForeignKeyConstraint(
        ["tenant_id", cols[0]], [f"{table}.tenant_id", f"{table}.id"], ondelete="RESTRICT", name=name
    )


def is_tenant_owned(cls: type[Any]) -> bool:
    return bool(getattr(cls, "__tenant_owned__", False))
