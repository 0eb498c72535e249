from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from msp_platform.models.site import SiteKind


class SiteCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: str
    name: str
    kind: SiteKind = SiteKind.other
    parent_id: uuid.UUID | None = None
    address: str | None = None
    timezone: str | None = None


class SiteUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    kind: SiteKind | msgspec.UnsetType = msgspec.UNSET
    parent_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    address: str | msgspec.UnsetType | None = msgspec.UNSET
    timezone: str | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class SiteOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    code: str
    name: str
    kind: SiteKind
    parent_id: uuid.UUID | None
    address: str | None
    timezone: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
