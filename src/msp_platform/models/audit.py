from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, UniqueConstraint, false
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
    # Staff-only (e.g. about an internal work note): MSP staff read it, tenant-level readers never do.
    internal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditEvent(_AuditColumns, TenantOwned, Base):
    """Append-only, hash-chained per tenant: each event's hash is an HMAC (keyed from MSP_SECRET_KEY) over its
    content and the previous hash, so editing or deleting a stored event breaks the chain, and re-hashing the
    rest of the chain needs the key (``msp audit verify``)."""

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
    """The head of each chain (a tenant id, or ``platform``); locked while a transaction appends. ``mac`` is an
    HMAC over (chain, seq, head_hash): moving the head back to hide removed events needs the key."""

    __tablename__ = "audit_chains"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    events: Mapped[int] = mapped_column(Integer, default=0)
    mac: Mapped[str | None] = mapped_column(String(64))
