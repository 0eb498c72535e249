from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk
from msp_platform.db.types import StrEnumType


class UserRole(StrEnum):
    tenant_admin = "tenant_admin"
    tenant_user = "tenant_user"


class User(TenantOwned, Base):
    """A person of a client organization. Email is unique per tenant (stored lower-cased)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"), tenant_fk("site_id", "sites"))
    __audit_exclude__ = frozenset({"password_hash", "last_sign_in_at"})

    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[UserRole] = mapped_column(StrEnumType(UserRole, 20), default=UserRole.tenant_user)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_sign_in_at: Mapped[datetime | None] = mapped_column()
    title: Mapped[str | None] = mapped_column(String(120))
    department: Mapped[str | None] = mapped_column(String(120))
    site_id: Mapped[uuid.UUID | None] = mapped_column()
    phone: Mapped[str | None] = mapped_column(String(40))
    # VIP callers and clinical staff get priority handling (the incident priority matrix reads these).
    vip: Mapped[bool] = mapped_column(Boolean, default=False)
    clinical: Mapped[bool] = mapped_column(Boolean, default=False)
    employee_id: Mapped[str | None] = mapped_column(String(64))
    deactivated_at: Mapped[datetime | None] = mapped_column()
