from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, Timestamped
from msp_platform.kit.ids import new_id


class TenantStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    offboarded = "offboarded"


class Tenant(Timestamped, Base):
    """A client organization. The root of tenancy, so not itself tenant-owned: the platform (MSP admins and
    the auth layer) reads it; tenant callers only ever reach their own row through the tenants service."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[TenantStatus] = mapped_column(String(20), default=TenantStatus.active)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="RESTRICT"), index=True
    )
    ticket_prefix: Mapped[str] = mapped_column(String(12))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
