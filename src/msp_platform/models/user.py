from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned


class UserRole(StrEnum):
    tenant_admin = "tenant_admin"
    tenant_user = "tenant_user"


class User(TenantOwned, Base):
    """A person of a client organization. Email is unique per tenant (stored lower-cased)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[UserRole] = mapped_column(String(20), default=UserRole.tenant_user)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_sign_in_at: Mapped[datetime | None] = mapped_column()
