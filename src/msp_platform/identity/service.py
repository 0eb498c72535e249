"""Identity rules: tenant users (lifecycle, invitations, bulk onboarding), staff accounts, grants and
integration clients."""

from __future__ import annotations

import re
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label, set_actor
from msp_platform.auth.passwords import hash_password, password_problems
from msp_platform.auth.principal import Principal, PrincipalKind
from msp_platform.auth.scopes import CLIENT_MAX_SCOPES, format_scope, parse_scope
from msp_platform.authz.service import system_tenant_context
from msp_platform.authz.types import AccessibleTenantId
from msp_platform.config import Settings
from msp_platform.db.session import set_tenant_context
from msp_platform.identity.invitation_email import InvitationEmail, accept_url, queue_invitation_email
from msp_platform.identity.repository import ClientRepository, StaffRepository, UserRepository
from msp_platform.identity.schemas import UserCreate, UserImportRow
from msp_platform.kit.bulk import ImportMode, ImportReport, ReportBuilder, RowStatus, SourceRow, convert_row
from msp_platform.kit.crypto import sha256_hex
from msp_platform.kit.errors import BadRequest, Conflict, FieldError, NotFound, ValidationFailed, problem_type
from msp_platform.kit.ids import new_id
from msp_platform.kit.patch import assign
from msp_platform.kit.time import utcnow
from msp_platform.kit.validation import email_errors, raise_if, text_errors
from msp_platform.models.invitation import Invitation
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User, UserRole
from msp_platform.sites import service as sites_service

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
        password_hash=await anyio.to_thread.run_sync(hash_password, password) if password else None,
        active=True,
    )
    session.add(member)
    await session.flush()
    return member


async def grant_tenant(
    session: AsyncSession, staff_id: uuid.UUID, tenant_id: uuid.UUID, *, include_children: bool
) -> StaffGrant:
    """Let a staff member act on a tenant (and, with ``include_children``, on its descendants)."""
    if await StaffRepository(session).get(staff_id) is None:
        raise NotFound(f"Staff member {staff_id} not found.")
    if await session.get(Tenant, tenant_id) is None:
        raise NotFound(f"Tenant {tenant_id} not found.")
    if await StaffRepository(session).grant(staff_id, tenant_id) is not None:
        raise Conflict("This staff member already has a grant on that tenant.")
    grant = StaffGrant(staff_id=staff_id, tenant_id=tenant_id, include_children=include_children)
    session.add(grant)
    await session.flush()
    return grant


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


async def close_tenant_access(session: AsyncSession, tenant_id: AccessibleTenantId) -> dict[str, int]:
    """Offboarding closes every way into the tenant: open invitations are revoked, every refresh token of its
    users and clients is revoked, and its integration clients are revoked (as ``DELETE /clients/{id}`` does;
    after a reactivation the tenant creates new ones). The session must be bound to the tenant."""
    now = utcnow()
    repo = UserRepository(session)
    invitations = await repo.all_open_invitations()
    for invitation in invitations:
        invitation.revoked_at = now
        label(session, invitation, "revoked")
    clients = await ClientRepository(session).active(tenant_id)
    for client in clients:
        client.revoked_at = now
        label(session, client, "revoked")
    tokens = await repo.revoke_all_refresh_tokens(tenant_id, now)
    await session.flush()
    return {"invitations": len(invitations), "clients": len(clients), "refresh_tokens": tokens}


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


# --- users --------------------------------------------------------------------------------------------------

USER_TEXT_LIMITS = {"title": 120, "department": 120, "phone": 40, "employee_id": 64}
# Optional text: an empty value means "none" (stored as NULL), so "" and null cannot drift apart.
OPTIONAL_TEXT = frozenset(USER_TEXT_LIMITS) | {"site"}
USER_ROLES = frozenset(r.value for r in UserRole)
_PHONE = re.compile(r"^\+?[0-9 ().\-/]{3,32}(\s*(x|ext\.?|#)\s*[0-9]{1,8})?$", re.IGNORECASE)
_COMMIT_CONFLICT = (
    "The change conflicts with data stored meanwhile (another request took this email, or removed the "
    "site). Nothing was saved; retry."
)


def clean_user_values(values: dict[str, Any]) -> dict[str, Any]:
    """Strip text, lower-case the email, turn empty optional text into None."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = value.strip()
            if key == "email":
                value = value.lower()
            elif key in OPTIONAL_TEXT and not value:
                value = None
        cleaned[key] = value
    return cleaned


def user_field_errors(values: dict[str, Any]) -> list[FieldError]:
    """Checks of the values themselves (no stored data); ``values`` went through clean_user_values."""
    errors: list[FieldError] = []
    if "email" in values:
        errors += email_errors("email", values["email"])
    if "name" in values:
        errors += text_errors("name", values["name"], max_length=200, required=True)
    for key, limit in USER_TEXT_LIMITS.items():
        if key in values:
            errors += text_errors(key, values[key], max_length=limit)
    phone = values.get("phone")
    if phone and len(phone) <= USER_TEXT_LIMITS["phone"] and not _PHONE.match(phone):
        errors.append(
            FieldError("phone", "not a phone number (digits, spaces, + ( ) - . /, optional 'x123')")
        )
    return errors


def _is_self(actor: Principal, user: User) -> bool:
    return actor.user_id is not None and actor.user_id == user.id


def _self_change_problem(
    actor: Principal, user: User, *, role: str | None, active: bool | None
) -> FieldError | None:
    """What a tenant admin may not do to their own account (lock themselves out)."""
    if not _is_self(actor, user):
        return None
    if role is not None and role != user.role and user.role == UserRole.tenant_admin:
        return FieldError("role", "You cannot remove your own administrator role; ask another administrator.")
    if active is False and user.active:
        return FieldError("active", "You cannot deactivate your own account; ask another administrator.")
    return None


async def _site_exists(session: AsyncSession, site_id: uuid.UUID) -> bool:
    try:
        await sites_service.get_site(session, site_id)
    except NotFound:
        return False
    return True


async def _check_user(
    session: AsyncSession, values: dict[str, Any], *, user_id: uuid.UUID | None
) -> list[FieldError]:
    errors = user_field_errors(values)
    if "email" in values and not any(e.field == "email" for e in errors):
        other = await UserRepository(session).by_email(values["email"])
        if other is not None and other.id != user_id:
            errors.append(FieldError("email", f"{values['email']} is already used by another user"))
    site_id = values.get("site_id")
    if site_id is not None and not await _site_exists(session, site_id):
        errors.append(FieldError("site_id", "no such site"))
    return errors


async def _flush(session: AsyncSession) -> None:
    # Checked above, but a concurrent request may have taken the email since (PostgreSQL; SQLite writers
    # are serialised): answer 409, never 500.
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(_COMMIT_CONFLICT) from exc


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await UserRepository(session).get(user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    return user


async def create_user(session: AsyncSession, data: UserCreate) -> User:
    values = clean_user_values(msgspec.structs.asdict(data))
    raise_if(await _check_user(session, values, user_id=None), "The user is invalid.")
    user = User(**values, active=True, password_hash=None)
    session.add(user)
    await _flush(session)
    return user


async def update_user(
    session: AsyncSession, user: User, values: dict[str, Any], *, actor: Principal
) -> dict[str, tuple[Any, Any]]:
    values = clean_user_values(values)
    problem = _self_change_problem(actor, user, role=values.get("role"), active=None)
    if problem:
        raise Conflict(problem.message, errors=[problem])
    raise_if(await _check_user(session, values, user_id=user.id), "The change is invalid.")
    changed = assign(user, values)
    await _flush(session)
    return changed


async def _deactivate(
    session: AsyncSession, tenant_id: AccessibleTenantId, users: list[User], at: datetime
) -> None:
    """Deactivate users: their refresh tokens and open invitations are revoked (access tokens stop working
    on the next request, when the auth middleware re-checks ``active``)."""
    for user in users:
        user.active = False
        user.deactivated_at = at
        label(session, user, "deactivated")
    repo = UserRepository(session)
    ids = [u.id for u in users]
    await repo.revoke_refresh_tokens(tenant_id, ids, at)
    for invitation in await repo.open_invitations(ids):
        invitation.revoked_at = at
        label(session, invitation, "revoked")


def _reactivate(session: AsyncSession, user: User) -> None:
    user.active = True
    user.deactivated_at = None
    label(session, user, "reactivated")


async def deactivate_user(
    session: AsyncSession, tenant_id: AccessibleTenantId, user: User, *, actor: Principal
) -> User:
    problem = _self_change_problem(actor, user, role=None, active=False)
    if problem:
        raise Conflict(problem.message, errors=[problem])
    if user.active:
        await _deactivate(session, tenant_id, [user], utcnow())
        await session.flush()
    return user


async def reactivate_user(session: AsyncSession, user: User) -> User:
    if not user.active:
        _reactivate(session, user)
        await session.flush()
    return user


# --- invitations --------------------------------------------------------------------------------------------

INVITATION_PREFIX = "msp_inv_"
# msp_inv_<tenant id, 32 hex>_<256 random bits, url-safe base64>: the tenant part lets the public accept
# endpoint scope its lookup to one tenant; the random part is the secret (stored as a SHA-256 hash).
_INVITATION_TOKEN = re.compile(r"^msp_inv_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")

INVITATION_INVALID = problem_type(
    "invitation-invalid",
    400,
    "Invitation not valid",
    "The invitation token is malformed or unknown, has expired, was already used, or was withdrawn (a newer "
    "invitation replaces older ones); `reason` says which. Ask an administrator for a new invitation.",
)


class InvitationInvalid(BadRequest):
    problem = INVITATION_INVALID

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail, extra={"reason": reason})


_UNKNOWN_INVITATION = (
    "This invitation is not valid; check that the whole link was copied, or ask for a new one."
)


@dataclass(frozen=True)
class NewInvitation:
    invitation: Invitation
    # Shown once (only its hash is stored); ``accept_url`` carries it too.
    token: str
    accept_url: str
    email: InvitationEmail


async def create_invitation(
    session: AsyncSession, settings: Settings, user: User, *, expires_in_hours: int, created_by: str
) -> NewInvitation:
    """A single-use invitation for ``user`` to set their password; older unused ones are revoked. With
    SMTP configured, the invitee is emailed the link by a job queued in this unit of work (after commit)."""
    if not user.active:
        raise Conflict(f"User {user.email} is deactivated; reactivate them before inviting them.")
    now = utcnow()
    for older in await UserRepository(session).open_invitations([user.id]):
        older.revoked_at = now
        label(session, older, "revoked")
    token = f"{INVITATION_PREFIX}{user.tenant_id.hex}_{secrets.token_urlsafe(32)}"
    invitation = Invitation(
        user_id=user.id,
        token_hash=sha256_hex(token),
        expires_at=now + timedelta(hours=expires_in_hours),
        created_by=created_by,
    )
    session.add(invitation)
    await session.flush()
    email = queue_invitation_email(session, settings, invitation, token, tenant_id=user.tenant_id)
    return NewInvitation(invitation, token, accept_url(settings, token), email)


async def get_invitation(session: AsyncSession, user: User, invitation_id: uuid.UUID) -> Invitation:
    invitation = await UserRepository(session).invitation(invitation_id)
    if invitation is None or invitation.user_id != user.id:
        raise NotFound(f"Invitation {invitation_id} of user {user.email} not found.")
    return invitation


async def revoke_invitation(session: AsyncSession, invitation: Invitation) -> Invitation:
    """Withdraw an invitation (a link sent to the wrong address, a leaked email): its token stops working at
    once. Revoking a revoked or expired one changes nothing; a used one is refused (the password is set:
    deactivate the user to close their access)."""
    if invitation.used_at is not None:
        raise Conflict(
            "This invitation was already used to set a password; deactivate the user to close their access."
        )
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        label(session, invitation, "revoked")
        await session.flush()
    return invitation


# Why an invitation that is no longer pending cannot be accepted (its status is the problem's ``reason``).
_NOT_ACCEPTED = {
    "used": "This invitation was already used. Sign in with your password, or ask for a new invitation.",
    "revoked": "This invitation was withdrawn (a newer one replaces it); use the latest invitation.",
    "expired": "This invitation expired at {expires_at}; ask for a new one.",
}


async def accept_invitation(session: AsyncSession, token: str, password: str) -> tuple[User, Tenant]:
    """Set the invited user's password and use up the invitation (public: the token is the credential).

    The token names its tenant; the session is bound to that tenant before the invitation is looked up,
    so a token never finds another tenant's rows (a forged tenant part just finds nothing)."""
    token = token.strip()
    match = _INVITATION_TOKEN.match(token)
    if match is None:
        raise InvitationInvalid(_UNKNOWN_INVITATION, reason="invalid")
    repo = UserRepository(session)
    tenant = await repo.tenant(uuid.UUID(hex=match.group(1)))
    if tenant is None:
        raise InvitationInvalid(_UNKNOWN_INVITATION, reason="invalid")
    ctx = system_tenant_context(tenant.id)
    await set_tenant_context(session, ctx)
    invitation = await repo.invitation_by_hash(sha256_hex(token))
    if invitation is None:
        raise InvitationInvalid(_UNKNOWN_INVITATION, reason="invalid")
    now = utcnow()
    status = invitation.status(now)
    if status != "pending":
        detail = _NOT_ACCEPTED[status].format(expires_at=invitation.expires_at.isoformat())
        raise InvitationInvalid(detail, reason=status)
    if tenant.status != TenantStatus.active:
        raise InvitationInvalid(
            "Your organization's access is closed at the moment.", reason="tenant_inactive"
        )
    user = await repo.get(invitation.user_id)
    if user is None or not user.active:
        raise InvitationInvalid("This account is deactivated; ask your administrator.", reason="deactivated")
    check_password(password)
    set_actor(session, f"{PrincipalKind.user.value}:{user.id}")
    user.password_hash = await anyio.to_thread.run_sync(hash_password, password)
    invitation.used_at = now
    label(session, invitation, "accepted")
    # A password set through an invitation replaces any earlier one: sessions signed in with that end.
    await repo.revoke_refresh_tokens(ctx.require_write_tenant(), [user.id], now)
    await session.flush()
    return user, tenant


# --- bulk import --------------------------------------------------------------------------------------------

IMPORT_COLUMNS = (
    "email",
    "name",
    "role",
    "title",
    "department",
    "site",
    "phone",
    "vip",
    "clinical",
    "employee_id",
    "active",
)
IMPORT_REQUIRED = ("email", "name")
IMPORT_BOOL_COLUMNS = ("vip", "clinical", "active")
_NEW_USER_DEFAULTS: dict[str, Any] = {
    "role": UserRole.tenant_user,
    "title": None,
    "department": None,
    "site_id": None,
    "phone": None,
    "vip": False,
    "clinical": False,
    "employee_id": None,
}


@dataclass
class _ImportRow:
    source: SourceRow
    email: str
    fields: dict[str, Any]  # User attributes to set (site code still unresolved under "site")
    active: bool | None


def _email_key(row: SourceRow) -> str | None:
    raw = row.values.get("email")
    return raw.strip().lower() if isinstance(raw, str) and raw.strip() else None


def _parse_row(row: SourceRow) -> tuple[_ImportRow | None, list[tuple[str, str]]]:
    data, problems = convert_row(row, UserImportRow, bool_fields=IMPORT_BOOL_COLUMNS)
    if data is None:
        return None, problems
    values = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    for name in OPTIONAL_TEXT:
        # convert_row drops empty cells; an empty optional text cell (or JSON null) clears the field.
        if name in row.values and row.values[name] is None:
            values[name] = None
    values = clean_user_values(values)
    errors = [(e.field, e.message) for e in user_field_errors(values)]
    if "role" in values:
        role = values["role"].lower()
        if role not in USER_ROLES:
            errors.append(("role", f"{values['role']!r} is not a role; use tenant_admin or tenant_user"))
        else:
            values["role"] = UserRole(role)
    if errors:
        return None, errors
    active = values.pop("active", None)
    email = values.pop("email")
    return _ImportRow(row, email, values, active), []


async def import_users(
    session: AsyncSession,
    tenant_id: AccessibleTenantId,
    rows: list[SourceRow],
    *,
    mode: ImportMode,
    dry_run: bool,
    actor: Principal,
) -> ImportReport:
    """Upsert users by email. Every row is checked against the stored data first (two batch lookups), then
    the good rows are applied in one flush; ``ReportBuilder.finish`` decides atomic/partial/dry-run."""
    report = ReportBuilder(mode, dry_run)
    keys = [_email_key(row) for row in rows]
    lines_by_email: dict[str, list[int]] = defaultdict(list)
    for row, key in zip(rows, keys, strict=True):
        if key is not None:
            lines_by_email[key].append(row.line)

    parsed: list[_ImportRow] = []
    for row, key in zip(rows, keys, strict=True):
        problems: list[tuple[str, str]] = []
        if key is not None and len(lines_by_email[key]) > 1:
            lines = ", ".join(str(n) for n in lines_by_email[key])
            problems.append(("email", f"{key} appears more than once in the file (rows {lines})"))
        item, row_problems = _parse_row(row)
        problems += row_problems
        if problems or item is None:
            report.error(row, key, problems)
        else:
            parsed.append(item)

    repo = UserRepository(session)
    existing = await repo.by_emails(item.email for item in parsed)
    sites = await repo.site_ids_by_code(item.fields["site"] for item in parsed if item.fields.get("site"))

    now = utcnow()
    new_users: list[User] = []
    to_deactivate: list[User] = []
    changes: list[tuple[User, dict[str, Any], bool | None]] = []
    for item in parsed:
        fields = dict(item.fields)
        if "site" in fields:
            code = fields.pop("site")
            if code is None:
                fields["site_id"] = None
            elif code.upper() in sites:
                fields["site_id"] = sites[code.upper()]
            else:
                report.error(item.source, item.email, [("site", f"no such site code {code.upper()}")])
                continue
        user = existing.get(item.email)
        if user is None:
            active = item.active is not False
            created = User(
                id=new_id(),
                email=item.email,
                **{**_NEW_USER_DEFAULTS, **fields},
                active=active,
                deactivated_at=None if active else now,
                password_hash=None,
            )
            new_users.append(created)
            # A dry run previews "created" without an id: the user it names would never exist.
            report.ok(item.source, item.email, RowStatus.created, None if dry_run else created.id)
            continue
        problem = _self_change_problem(actor, user, role=fields.get("role"), active=item.active)
        if problem:
            report.error(item.source, item.email, [(problem.field, problem.message)])
            continue
        changed = {k: v for k, v in fields.items() if getattr(user, k) != v}
        activity = item.active if item.active is not None and item.active != user.active else None
        status = RowStatus.updated if changed or activity is not None else RowStatus.unchanged
        report.ok(item.source, item.email, status, user.id)
        if status is RowStatus.updated:
            changes.append((user, changed, activity))

    if dry_run or (mode is ImportMode.atomic and report.any_failed):
        return report.finish()
    session.add_all(new_users)
    for user, changed, activity in changes:
        assign(user, changed)
        if activity is True:
            _reactivate(session, user)
        elif activity is False:
            to_deactivate.append(user)
    if to_deactivate:
        await _deactivate(session, tenant_id, to_deactivate, now)
    await _flush(session)
    return report.finish()
