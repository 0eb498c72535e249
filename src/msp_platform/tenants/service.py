"""Tenants: who sees which tenant, the rules for creating and changing one, and its lifecycle
(active -> suspended -> active, active/suspended -> offboarded -> active).

Writes to a tenant bind the session to it first (``authz.bind_tenant`` / ``bind_new_tenant``), so the
tenant's audit events land in its own chain.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label
from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role, Scope
from msp_platform.authz.service import bind_new_tenant, bind_tenant, staff_tenants
from msp_platform.db.session import get_tenant_context
from msp_platform.identity import service as identity_service
from msp_platform.kit import calendar as cal
from msp_platform.kit.errors import Conflict, FieldError, Forbidden, InsufficientScope, NotFound
from msp_platform.kit.ids import new_id
from msp_platform.kit.patch import assign
from msp_platform.kit.time import utcnow
from msp_platform.kit.validation import raise_if, text_errors, timezone_errors
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.tenants.repository import TenantRepository
from msp_platform.tenants.schemas import BusinessCalendar, Holiday, HoursWindow, TenantCreate

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_PREFIX = re.compile(r"^[A-Z0-9]{2,12}$")
_ALL_DAY = tuple({"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7))
CALENDAR_FIELD = "business_calendar"


# --- field rules (shared with tenant manifests) ------------------------------------------------------------


def slug_errors(field: str, value: str) -> list[FieldError]:
    if not 3 <= len(value) <= 63:
        return [FieldError(field, "must be 3 to 63 characters")]
    if not _SLUG.match(value):
        return [
            FieldError(
                field, "only lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        ]
    try:
        uuid.UUID(value)
    except ValueError:
        return []
    # MSP-Tenant accepts an id or a slug: a slug that reads as an id could never be named.
    return [FieldError(field, "must not look like a tenant id (UUID)")]


def normalize_prefix(value: str) -> str:
    return value.strip().upper()


def prefix_errors(field: str, value: str) -> list[FieldError]:
    if not _PREFIX.match(value):
        return [FieldError(field, "2 to 12 letters or digits (stored upper-case), e.g. SMH")]
    return []


def _calendar_field(raw: str) -> str:
    """parse_calendar's field names, in the API's shape."""
    if raw.startswith("windows"):
        return f"{CALENDAR_FIELD}.hours{raw[len('windows') :]}"
    if raw.startswith("holidays["):
        return f"{CALENDAR_FIELD}.{raw}.date"
    return f"{CALENDAR_FIELD}.{raw}"


def calendar_errors(
    timezone: str, hours: Sequence[Mapping[str, Any]], holidays: Sequence[Mapping[str, Any]]
) -> list[FieldError]:
    """Every problem of a business calendar at once (field names under ``business_calendar.``). An invalid
    time zone is not reported here: the caller reports it on its own field."""
    errors: list[FieldError] = []
    for index, holiday in enumerate(holidays):
        errors += text_errors(f"{CALENDAR_FIELD}.holidays[{index}].name", holiday.get("name"), max_length=200)
    windows = list(hours) if hours else list(_ALL_DAY)
    zone = timezone if not timezone_errors("timezone", timezone) else "UTC"
    try:
        cal.parse_calendar(zone, windows, [str(h.get("date")) for h in holidays])
    except cal.CalendarError as exc:
        errors += [FieldError(_calendar_field(e["field"]), e["message"]) for e in exc.errors]
    return errors


def calendar_dict(
    hours: Sequence[Mapping[str, Any]], holidays: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The stored form of a valid calendar (dates normalized to YYYY-MM-DD, holidays in date order)."""
    return {
        "hours": [
            {"weekday": int(h["weekday"]), "start": str(h["start"]).strip(), "end": str(h["end"]).strip()}
            for h in hours
        ],
        "holidays": sorted(
            (
                {
                    "date": date.fromisoformat(str(h["date"]).strip()).isoformat(),
                    "name": (h.get("name") or "").strip(),
                }
                for h in holidays
            ),
            key=lambda h: (h["date"], h["name"]),
        ),
    }


def calendar_in(data: BusinessCalendar) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    hours = [{"weekday": w.weekday, "start": w.start, "end": w.end} for w in data.hours]
    holidays = [{"date": h.date, "name": h.name} for h in data.holidays]
    return hours, holidays


def calendar_out(raw: Mapping[str, Any] | None) -> BusinessCalendar:
    raw = raw or {}
    return BusinessCalendar(
        hours=[
            HoursWindow(weekday=int(h["weekday"]), start=str(h["start"]), end=str(h["end"]))
            for h in raw.get("hours") or []
        ],
        holidays=[
            Holiday(date=str(h["date"]), name=str(h.get("name") or "")) for h in raw.get("holidays") or []
        ],
    )


def business_calendar_of(tenant: Tenant) -> cal.BusinessCalendar:
    """The tenant's calendar for SLA clocks (24x7 when it has no hours)."""
    raw = tenant.business_calendar or {}
    holidays = [str(h["date"]) for h in raw.get("holidays") or []]
    return cal.parse_calendar(tenant.timezone, raw.get("hours") or list(_ALL_DAY), holidays)


async def _check(
    repo: TenantRepository, values: dict[str, Any], *, tenant: Tenant | None
) -> list[FieldError]:
    errors: list[FieldError] = []
    own_id = tenant.id if tenant is not None else None
    if "slug" in values:
        slug_problems = slug_errors("slug", values["slug"])
        errors += slug_problems
        if not slug_problems:
            other = await repo.by_slug(values["slug"])
            if other is not None and other.id != own_id:
                errors.append(
                    FieldError("slug", f"slug {values['slug']!r} is already used by another tenant")
                )
    if "name" in values:
        errors += text_errors("name", values["name"], max_length=200, required=True)
    if "ticket_prefix" in values:
        prefix_problems = prefix_errors("ticket_prefix", values["ticket_prefix"])
        errors += prefix_problems
        if not prefix_problems:
            other = await repo.by_prefix(values["ticket_prefix"])
            if other is not None and other.id != own_id:
                errors.append(
                    FieldError(
                        "ticket_prefix",
                        f"ticket prefix {values['ticket_prefix']} is already used by another tenant",
                    )
                )
    if "timezone" in values:
        errors += timezone_errors("timezone", values["timezone"])
    if "calendar" in values:
        timezone = values.get("timezone") or (tenant.timezone if tenant is not None else "UTC")
        hours, holidays = values["calendar"]
        errors += calendar_errors(timezone, hours, holidays)
    parent_id = values.get("parent_id")
    if parent_id is not None:
        parent = await repo.get(parent_id)
        if parent is None:
            errors.append(FieldError("parent_id", "no such tenant"))
        elif own_id is not None and own_id in await repo.ancestors(parent_id):
            errors.append(FieldError("parent_id", "a tenant cannot be its own ancestor"))
        elif parent.status == TenantStatus.offboarded:
            errors.append(FieldError("parent_id", "the parent tenant is offboarded"))
    return errors


def _normalized(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in ("slug", "name", "timezone"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip()
    if isinstance(out.get("ticket_prefix"), str):
        out["ticket_prefix"] = normalize_prefix(out["ticket_prefix"])
    if "business_calendar" in out:
        out["calendar"] = calendar_in(out.pop("business_calendar"))
    return out


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "calendar" in out:
        out["business_calendar"] = calendar_dict(*out.pop("calendar"))
    return out


# --- who sees what -----------------------------------------------------------------------------------------


async def visible_tenant_ids(session: AsyncSession, principal: Principal) -> frozenset[uuid.UUID] | None:
    """Tenants the caller may see (None: all of them). The same rule as ``authz.bind_tenant``: tenant users,
    admins and clients their own; agents their granted tenants (with children where granted); MSP admins
    every tenant, offboarded ones included."""
    if principal.tenant_id is not None:
        return frozenset({principal.tenant_id})
    if principal.role is Role.msp_admin:
        return None
    if principal.is_staff:
        return await staff_tenants(session, principal, include_offboarded=True)
    return frozenset()


async def get_tenant(session: AsyncSession, principal: Principal, tenant_id: uuid.UUID) -> Tenant:
    """A tenant the caller may see, with the session bound to it; anything else is a 404."""
    await bind_tenant(session, principal, tenant_id)
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise NotFound(f"Tenant {tenant_id} not found.")
    return tenant


async def tenant_to_change(session: AsyncSession, principal: Principal, tenant_id: uuid.UUID) -> Tenant:
    """A tenant an MSP administrator is about to change. Visibility first, so a tenant the caller cannot see
    is a 404 (never a 403 that would confirm it exists); then the role and the scope."""
    tenant = await get_tenant(session, principal, tenant_id)
    if principal.role is not Role.msp_admin:
        raise Forbidden(
            "Only MSP administrators change tenants; a tenant's own administrators cannot change its settings "
            "or status."
        )
    if not principal.has(Scope.tenants_write):
        raise InsufficientScope([Scope.tenants_write])
    return tenant


# --- create and change -------------------------------------------------------------------------------------


async def _flush(session: AsyncSession, values: dict[str, Any]) -> None:
    """The slug and ticket prefix were checked, but a concurrent request may have taken one since (PostgreSQL;
    SQLite writers queue): answer 409 naming them, never 500."""
    try:
        await session.flush()
    except IntegrityError as exc:
        taken = []
        if "slug" in values:
            taken.append(f"slug {values['slug']!r}")
        if "ticket_prefix" in values:
            taken.append(f"ticket prefix {values['ticket_prefix']}")
        what = " or ".join(taken) or "a value that must be unique"
        raise Conflict(
            f"Another request created or changed a tenant meanwhile: {what} is already used (or the parent "
            "tenant changed). Nothing was saved; check and retry."
        ) from exc


async def create_tenant(session: AsyncSession, principal: Principal, data: TenantCreate) -> Tenant:
    repo = TenantRepository(session)
    values = _normalized(
        {
            "slug": data.slug,
            "name": data.name,
            "ticket_prefix": data.ticket_prefix,
            "timezone": data.timezone,
            "business_calendar": data.business_calendar,
            "parent_id": data.parent_id,
        }
    )
    raise_if(await _check(repo, values, tenant=None), "The tenant is invalid.")
    tenant = Tenant(id=new_id(), status=TenantStatus.active, **_stored(values))
    session.add(tenant)
    await _flush(session, values)
    # Its audit events (starting with tenant.created) belong to its own chain.
    await bind_new_tenant(session, principal, tenant.id)
    return tenant


async def update_tenant(
    session: AsyncSession, tenant: Tenant, values: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """Apply the fields sent (the session is bound to ``tenant``); returns what changed."""
    repo = TenantRepository(session)
    values = _normalized(values)
    raise_if(await _check(repo, values, tenant=tenant), "The change is invalid.")
    changed = assign(tenant, _stored(values))
    await _flush(session, values)
    return changed


# --- lifecycle ---------------------------------------------------------------------------------------------


def _reason(reason: str) -> str:
    raise_if(text_errors("reason", reason, max_length=2000, required=True), "A reason is required.")
    return reason.strip()


def _refuse(tenant: Tenant, action: str) -> Conflict:
    return Conflict(f"Tenant {tenant.slug} is {tenant.status}; it cannot be {action}.")


async def suspend(session: AsyncSession, tenant: Tenant, reason: str) -> Tenant:
    reason = _reason(reason)
    if tenant.status != TenantStatus.active:
        raise _refuse(tenant, "suspended (only an active tenant can be)")
    label(session, tenant, "suspended")
    tenant.status = TenantStatus.suspended
    tenant.status_reason = reason
    tenant.suspended_at = utcnow()
    await session.flush()
    return tenant


async def reactivate(session: AsyncSession, tenant: Tenant) -> Tenant:
    if tenant.status == TenantStatus.active:
        raise _refuse(tenant, "reactivated (it is already active)")
    repo = TenantRepository(session)
    if tenant.parent_id is not None:
        parent = await repo.get(tenant.parent_id)
        if parent is not None and parent.status == TenantStatus.offboarded:
            raise Conflict(f"Tenant {tenant.slug}'s parent {parent.slug} is offboarded; reactivate it first.")
    label(session, tenant, "reactivated")
    tenant.status = TenantStatus.active
    tenant.status_reason = None
    tenant.suspended_at = None
    tenant.offboarded_at = None
    await session.flush()
    return tenant


async def offboard(session: AsyncSession, tenant: Tenant, reason: str) -> Tenant:
    reason = _reason(reason)
    if tenant.status == TenantStatus.offboarded:
        raise _refuse(tenant, "offboarded again")
    if await TenantRepository(session).has_children_not_offboarded(tenant.id):
        # Staff grants reach children through their parent: an offboarded parent would hide live children.
        raise Conflict(
            f"Tenant {tenant.slug} has tenants under it that are not offboarded; offboard them first."
        )
    label(session, tenant, "offboarded")
    tenant.status = TenantStatus.offboarded
    tenant.status_reason = reason
    tenant.offboarded_at = utcnow()
    # Access closed for good: a later reactivation restores the tenant, not old invitations, sessions or
    # client credentials.
    ctx = get_tenant_context(session)
    if ctx is None or ctx.tenant_id != tenant.id:
        raise RuntimeError("offboard: the session must be bound to the tenant (tenant_to_change)")
    await identity_service.close_tenant_access(session, ctx.tenant_id)
    await session.flush()
    return tenant
