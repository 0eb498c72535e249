from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from msp_platform.models.tenant import TenantStatus


class HoursWindow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Opening hours on one weekday (0 = Monday) in the tenant's time zone; an end at or before the start
    continues into the next day ("22:00"-"06:00"); "24:00" ends at midnight."""

    weekday: int
    start: str
    end: str


class Holiday(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    date: str  # YYYY-MM-DD, a local date in the tenant's time zone
    name: str = ""


class BusinessCalendar(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Business hours for SLA clocks. No ``hours`` means open 24x7 (holidays still close whole days)."""

    hours: list[HoursWindow] = msgspec.field(default_factory=list)
    holidays: list[Holiday] = msgspec.field(default_factory=list)


class TenantCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    slug: str
    name: str
    ticket_prefix: str
    timezone: str
    business_calendar: BusinessCalendar = msgspec.field(default_factory=BusinessCalendar)
    parent_id: uuid.UUID | None = None


class TenantUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    slug: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    ticket_prefix: str | msgspec.UnsetType = msgspec.UNSET
    timezone: str | msgspec.UnsetType = msgspec.UNSET
    business_calendar: BusinessCalendar | msgspec.UnsetType = msgspec.UNSET
    parent_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


class StatusChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why the tenant is suspended or offboarded (kept on the tenant and in its audit log)."""

    reason: str


class TenantOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    slug: str
    name: str
    status: TenantStatus
    status_reason: str | None
    parent_id: uuid.UUID | None
    ticket_prefix: str
    timezone: str
    business_calendar: BusinessCalendar
    suspended_at: datetime | None
    offboarded_at: datetime | None
    manifest_version: int | None
    created_at: datetime
    updated_at: datetime
