from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, Timestamped
from msp_platform.db.types import JSONType, StrEnumType
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
    status: Mapped[TenantStatus] = mapped_column(StrEnumType(TenantStatus, 20), default=TenantStatus.active)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="RESTRICT"), index=True
    )
    ticket_prefix: Mapped[str] = mapped_column(String(12), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # {"hours": [{"weekday": 0, "start": "08:00", "end": "17:00"}, ...], "holidays": [{"date": ..., "name": ...}]}
    # in the tenant's time zone; empty hours means 24x7.
    business_calendar: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status_reason: Mapped[str | None] = mapped_column(Text)
    suspended_at: Mapped[datetime | None] = mapped_column()
    offboarded_at: Mapped[datetime | None] = mapped_column()
    # Set when the tenant came from a manifest in tenants/ (``msp tenants apply``).
    manifest_version: Mapped[int | None] = mapped_column()
