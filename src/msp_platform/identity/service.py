"""Identity rules: staff accounts, grants and integration clients."""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.passwords import hash_password, password_problems
from msp_platform.auth.scopes import CLIENT_MAX_SCOPES, format_scope, parse_scope
from msp_platform.kit.crypto import sha256_hex
from msp_platform.kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffMember, StaffRole
from msp_platform.models.tenant import Tenant

CLIENT_ID_PREFIX = "cli_"
CLIENT_SECRET_PREFIX = "msp_cs_"  # noqa: S105 - a recognisable prefix, not a secret


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    local, _, domain = value.partition("@")
    if not local or "." not in domain or " " in value or len(value) > 320:
        raise ValidationFailed(
            "Invalid email address.", errors=[FieldError("email", "not a valid email address")]
        )
    return value


def check_password(password: str, field: str = "password") -> None:
    problems = password_problems(password)
    if problems:
        raise ValidationFailed("The password is too weak.", errors=[FieldError(field, p) for p in problems])


async def create_staff(
    session: AsyncSession, *, email: str, name: str, role: str, tier: int | None, password: str | None
) -> StaffMember:
    email = normalize_email(email)
    if role not in {r.value for r in StaffRole}:
        raise ValidationFailed("Unknown role.", errors=[FieldError("role", "must be msp_admin or msp_agent")])
    if tier is not None and not 1 <= tier <= 3:
        raise ValidationFailed("Invalid tier.", errors=[FieldError("tier", "must be 1, 2 or 3")])
    if password is not None:
        check_password(password)
    if await session.scalar(select(StaffMember.id).where(StaffMember.email == email)) is not None:
        raise Conflict(f"A staff member with email {email} already exists.")
    member = StaffMember(
        email=email,
        name=name.strip(),
        role=StaffRole(role),
        tier=tier,
        password_hash=hash_password(password) if password else None,
        active=True,
    )
    session.add(member)
    await session.flush()
    return member


def validate_client_scopes(scopes: str) -> frozenset[str]:
    requested = parse_scope(scopes)
    unknown = requested - CLIENT_MAX_SCOPES
    if unknown:
        raise ValidationFailed(
            "An integration client cannot hold these scopes.",
            errors=[FieldError("scopes", f"not allowed for clients: {format_scope(unknown)}")],
        )
    return requested or CLIENT_MAX_SCOPES


async def create_client(
    session: AsyncSession, *, tenant_id: uuid.UUID, name: str, scopes: str, created_by: str
) -> tuple[OAuthClient, str]:
    """A client_credentials client of one tenant. Returns the row and the secret (shown once, stored hashed)."""
    granted = validate_client_scopes(scopes)
    if not name.strip():
        raise ValidationFailed("A client needs a name.", errors=[FieldError("name", "must not be empty")])
    secret = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    client = OAuthClient(
        client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(12),
        secret_hash=sha256_hex(secret),
        name=name.strip(),
        tenant_id=tenant_id,
        scopes=format_scope(granted),
        created_by=created_by,
    )
    session.add(client)
    await session.flush()
    return client, secret


async def create_client_for_slug(
    session: AsyncSession, *, tenant_slug: str, name: str, scopes: str, created_by: str
) -> tuple[str, str]:
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == tenant_slug.lower()))
    if tenant is None:
        raise NotFound(f"Tenant {tenant_slug!r} not found.")
    client, secret = await create_client(
        session, tenant_id=tenant.id, name=name, scopes=scopes, created_by=created_by
    )
    return client.client_id, secret


async def revoke_client(client: OAuthClient) -> None:
    from msp_platform.kit.time import utcnow

    if client.revoked_at is None:
        client.revoked_at = utcnow()


def staff_update(
    member: StaffMember, *, name: str | None, role: str | None, tier: int | object | None, active: bool | None
) -> dict[str, tuple[object, object]]:
    """Apply the fields sent; returns {field: (before, after)} of what changed."""
    changes: dict[str, tuple[object, object]] = {}
    if name is not None:
        if not name.strip():
            raise ValidationFailed("Invalid name.", errors=[FieldError("name", "must not be empty")])
        changes["name"] = (member.name, name.strip())
        member.name = name.strip()
    if role is not None:
        if role not in {r.value for r in StaffRole}:
            raise ValidationFailed(
                "Unknown role.", errors=[FieldError("role", "must be msp_admin or msp_agent")]
            )
        changes["role"] = (member.role, role)
        member.role = StaffRole(role)
    if tier is not _KEEP:
        if tier is not None and (not isinstance(tier, int) or not 1 <= tier <= 3):
            raise ValidationFailed("Invalid tier.", errors=[FieldError("tier", "must be 1, 2 or 3")])
        changes["tier"] = (member.tier, tier)
        member.tier = tier
    if active is not None:
        changes["active"] = (member.active, active)
        member.active = active
    return {k: v for k, v in changes.items() if v[0] != v[1]}


_KEEP = object()
KEEP = _KEEP
