from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class ClientCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str = msgspec.field()
    # Omitted: every scope an integration client may hold.
    scopes: list[str] | None = None


class ClientOut(msgspec.Struct, kw_only=True):
    client_id: str
    name: str
    scopes: list[str]
    tenant_id: uuid.UUID | None
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ClientCreated(ClientOut, kw_only=True):
    # Shown once; only its hash is stored.
    client_secret: str


class StaffCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    name: str
    role: str = "msp_agent"
    tier: int | None = None
    password: str | None = None


class StaffUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    role: str | msgspec.UnsetType = msgspec.UNSET
    tier: int | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class StaffOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str
    name: str
    role: str
    tier: int | None
    active: bool
    created_at: datetime
    last_sign_in_at: datetime | None


class GrantCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: uuid.UUID
    include_children: bool = True


class GrantOut(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    include_children: bool
    created_at: datetime
