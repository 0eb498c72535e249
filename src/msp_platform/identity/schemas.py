from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from msp_platform.models.invitation import InvitationStatus
from msp_platform.models.user import UserRole


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


# --- users ----------------------------------------------------------------------------------------------


class UserCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A person of the tenant. No password here: an invitation lets them set it."""

    email: str
    name: str
    role: UserRole = UserRole.tenant_user
    title: str | None = None
    department: str | None = None
    site_id: uuid.UUID | None = None
    phone: str | None = None
    vip: bool = False
    clinical: bool = False
    employee_id: str | None = None


class UserUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change. Deactivation has its own endpoints (it revokes the user's tokens)."""

    email: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    role: UserRole | msgspec.UnsetType = msgspec.UNSET
    title: str | msgspec.UnsetType | None = msgspec.UNSET
    department: str | msgspec.UnsetType | None = msgspec.UNSET
    site_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    phone: str | msgspec.UnsetType | None = msgspec.UNSET
    vip: bool | msgspec.UnsetType = msgspec.UNSET
    clinical: bool | msgspec.UnsetType = msgspec.UNSET
    employee_id: str | msgspec.UnsetType | None = msgspec.UNSET


class UserOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    name: str
    role: UserRole
    title: str | None
    department: str | None
    site_id: uuid.UUID | None
    phone: str | None
    vip: bool
    clinical: bool
    employee_id: str | None
    active: bool
    deactivated_at: datetime | None
    # False until the user accepted an invitation (set a password).
    has_password: bool
    last_sign_in_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserImportRow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One row of a user import (CSV columns or JSON keys). Omitted values keep what is stored (or the
    default for a new user); an empty optional text field (title, department, site, phone, employee_id)
    clears it."""

    email: str
    name: str
    role: str | msgspec.UnsetType = msgspec.UNSET
    title: str | msgspec.UnsetType | None = msgspec.UNSET
    department: str | msgspec.UnsetType | None = msgspec.UNSET
    site: str | msgspec.UnsetType | None = msgspec.UNSET
    phone: str | msgspec.UnsetType | None = msgspec.UNSET
    vip: bool | msgspec.UnsetType = msgspec.UNSET
    clinical: bool | msgspec.UnsetType = msgspec.UNSET
    employee_id: str | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


# --- invitations ----------------------------------------------------------------------------------------

INVITATION_DEFAULT_HOURS = 72
INVITATION_MAX_HOURS = 30 * 24


class InvitationCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    expires_in_hours: Annotated[int, msgspec.Meta(ge=1, le=INVITATION_MAX_HOURS)] = INVITATION_DEFAULT_HOURS


class InvitationCreated(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    # Shown once; only its hash is stored. Hand it to the user (e.g. in a link to the console).
    token: str
    expires_at: datetime
    # The link for the invitee (MSP_INVITATION_ACCEPT_URL or {MSP_ISSUER}/accept-invitation, with the token).
    accept_url: str
    # "queued": an email with the link goes to the user after this request commits; "not_configured": no
    # SMTP server (MSP_SMTP_HOST), hand the link over yourself.
    email: Literal["queued", "not_configured"]


class InvitationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    status: InvitationStatus
    created_at: datetime
    created_by: str | None
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    # When the email with the link went to the mail server (null: not emailed, e.g. no SMTP configured).
    emailed_at: datetime | None


class InvitationAccept(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str
    password: str


class InvitationAccepted(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    email: str
    # Sign in with POST /api/v1/auth/sign-in {"email", "password", "tenant": <this slug>}.
    tenant: str
