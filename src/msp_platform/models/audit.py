from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned
from msp_platform.db.types import JSONType
from msp_platform.kit.ids import new_id


class _AuditColumns:
    seq: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(80))
    object_type: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str] = mapped_column(String(80))
    changes: Mapped[dict[str, Any]] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditEvent(_AuditColumns, TenantOwned, Base):
    """Append-only, hash-chained per tenant: each event's hash covers its content and the previous hash, so
    editing or deleting a stored event breaks the chain (``msp audit verify``)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq"),
        Index("ix_audit_events_tenant_object", "tenant_id", "object_type", "object_id"),
    )


class PlatformAuditEvent(_AuditColumns, Base):
    """The same chain for changes that belong to no tenant (staff accounts, grants)."""

    __tablename__ = "platform_audit_events"
    __table_args__ = (UniqueConstraint("seq"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class AuditChain(Base):
    """The head of each chain (a tenant id, or ``platform``); locked while a transaction appends."""

    __tablename__ = "audit_chains"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    events: Mapped[int] = mapped_column(Integer, default=0)
