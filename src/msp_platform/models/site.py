from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk
from msp_platform.db.types import StrEnumType


class SiteKind(StrEnum):
    hospital = "hospital"
    clinic = "clinic"
    department = "department"
    office = "office"
    datacenter = "datacenter"
    other = "other"


class Site(TenantOwned, Base):
    """A hospital, clinic, department... of a tenant. ``code`` is the short unique handle imports use."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("tenant_id", "code"), tenant_fk("parent_id", "sites"))

    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[SiteKind] = mapped_column(StrEnumType(SiteKind, 20), default=SiteKind.other)
    parent_id: Mapped[uuid.UUID | None] = mapped_column()
    address: Mapped[str | None] = mapped_column(Text)
    # Overrides the tenant's time zone for this site (a hospital in another state).
    timezone: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
