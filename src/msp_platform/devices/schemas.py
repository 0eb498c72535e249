from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

from msp_platform.models.device import DeviceKind, DeviceStatus

# ISO 8601 with a zone ("2025-03-01T08:30:00Z", "...+01:00"); a timestamp without one is refused.
AwareDateTime = Annotated[datetime, msgspec.Meta(tz=True)]

_HOSTNAME_DOC = "RFC 1123 host name (letters, digits, '-', dot-separated labels); stored lower-cased."
_SERIAL_DOC = "Unique per tenant; stored trimmed and upper-cased."


class DeviceSort(StrEnum):
    """List orders; ``-`` means descending. Devices without the sorted value come last."""

    created = "created"
    created_desc = "-created"
    hostname = "hostname"
    hostname_desc = "-hostname"
    last_seen_at = "last_seen_at"
    last_seen_at_desc = "-last_seen_at"
    serial = "serial"
    asset_tag = "asset_tag"


class DeviceCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """At least one of serial, asset_tag and hostname is required. Blank strings count as absent."""

    kind: DeviceKind
    hostname: Annotated[str | None, msgspec.Meta(description=_HOSTNAME_DOC)] = None
    serial: Annotated[str | None, msgspec.Meta(description=_SERIAL_DOC)] = None
    asset_tag: Annotated[str | None, msgspec.Meta(description=_SERIAL_DOC)] = None
    manufacturer: str | None = None
    model: str | None = None
    os: str | None = None
    os_version: str | None = None
    site_id: uuid.UUID | None = None
    assigned_user_id: uuid.UUID | None = None
    status: DeviceStatus = DeviceStatus.active
    last_seen_at: AwareDateTime | None = None
    notes: str | None = None


class DeviceUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change; ``null`` clears an optional field."""

    kind: DeviceKind | msgspec.UnsetType = msgspec.UNSET
    hostname: str | msgspec.UnsetType | None = msgspec.UNSET
    serial: str | msgspec.UnsetType | None = msgspec.UNSET
    asset_tag: str | msgspec.UnsetType | None = msgspec.UNSET
    manufacturer: str | msgspec.UnsetType | None = msgspec.UNSET
    model: str | msgspec.UnsetType | None = msgspec.UNSET
    os: str | msgspec.UnsetType | None = msgspec.UNSET
    os_version: str | msgspec.UnsetType | None = msgspec.UNSET
    site_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    assigned_user_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    status: DeviceStatus | msgspec.UnsetType = msgspec.UNSET
    last_seen_at: AwareDateTime | msgspec.UnsetType | None = msgspec.UNSET
    notes: str | msgspec.UnsetType | None = msgspec.UNSET


class DeviceOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: DeviceKind
    hostname: str | None
    serial: str | None
    asset_tag: str | None
    manufacturer: str | None
    model: str | None
    os: str | None
    os_version: str | None
    site_id: uuid.UUID | None
    assigned_user_id: uuid.UUID | None
    status: DeviceStatus
    last_seen_at: datetime | None
    notes: str | None
    created_at: datetime
    updated_at: datetime


class DeviceImportRow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One import row as read (CSV cells or JSON values); the service validates and converts each field so a
    row's report names every problem, not just the first."""

    kind: str | None = None
    hostname: str | None = None
    serial: str | None = None
    asset_tag: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    os: str | None = None
    os_version: str | None = None
    site: str | None = None
    assigned_user: str | None = None
    status: str | None = None
    last_seen_at: str | None = None
    notes: str | None = None


IMPORT_COLUMNS: tuple[str, ...] = tuple(DeviceImportRow.__struct_fields__)
IMPORT_REQUIRED_COLUMNS: tuple[str, ...] = ("kind",)
