from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, Timestamped
from msp_platform.db.types import StrEnumType
from msp_platform.kit.ids import new_id


class StaffRole(StrEnum):
    msp_admin = "msp_admin"
    msp_agent = "msp_agent"


class StaffMember(Timestamped, Base):
    """MSP staff: not bound to a tenant; they act on tenants through grants (``staff_grants``)."""

    __tablename__ = "staff_members"
    __audit_exclude__ = frozenset({"last_sign_in_at"})
    __table_args__ = (CheckConstraint("tier IS NULL OR tier BETWEEN 1 AND 3", name="tier_range"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(StrEnumType(StaffRole, 20))
    tier: Mapped[int | None] = mapped_column(Integer)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_sign_in_at: Mapped[datetime | None] = mapped_column()


class StaffGrant(Timestamped, Base):
    """Which tenants a staff member may act on. A grant on a parent tenant covers its children when
    ``include_children`` (a health system and its hospitals)."""

    __tablename__ = "staff_grants"
    __table_args__ = (UniqueConstraint("staff_id", "tenant_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_members.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    include_children: Mapped[bool] = mapped_column(Boolean, default=True)
