from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk
from msp_platform.db.types import StrEnumType


class DeviceKind(StrEnum):
    workstation = "workstation"
    laptop = "laptop"
    mobile = "mobile"
    printer = "printer"
    server = "server"
    network = "network"
    clinical_device = "clinical_device"


class DeviceStatus(StrEnum):
    active = "active"
    in_stock = "in_stock"
    in_repair = "in_repair"
    lost = "lost"
    retired = "retired"


class Device(TenantOwned, Base):
    """An inventory item. Serial and asset tag are unique per tenant (stored upper-cased, trimmed)."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "serial"),
        UniqueConstraint("tenant_id", "asset_tag"),
        Index("ix_devices_tenant_hostname", "tenant_id", "hostname"),
        Index("ix_devices_tenant_site", "tenant_id", "site_id"),
        Index("ix_devices_tenant_assigned_user", "tenant_id", "assigned_user_id"),
        tenant_fk("site_id", "sites"),
        tenant_fk("assigned_user_id", "users"),
    )

    kind: Mapped[DeviceKind] = mapped_column(StrEnumType(DeviceKind, 20))
    hostname: Mapped[str | None] = mapped_column(String(253))
    serial: Mapped[str | None] = mapped_column(String(100))
    asset_tag: Mapped[str | None] = mapped_column(String(100))
    manufacturer: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    os: Mapped[str | None] = mapped_column(String(100))
    os_version: Mapped[str | None] = mapped_column(String(100))
    site_id: Mapped[uuid.UUID | None] = mapped_column()
    assigned_user_id: Mapped[uuid.UUID | None] = mapped_column()
    status: Mapped[DeviceStatus] = mapped_column(StrEnumType(DeviceStatus, 20), default=DeviceStatus.active)
    last_seen_at: Mapped[datetime | None] = mapped_column()
    notes: Mapped[str | None] = mapped_column(Text)
