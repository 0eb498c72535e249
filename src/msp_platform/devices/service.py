"""Devices: rules for the inventory (identifiers, references, retirement) and the bulk import.

Identifiers: ``serial`` and ``asset_tag`` are unique per tenant and stored trimmed and upper-cased;
``hostname`` is stored lower-cased (host names are case-insensitive) and is not unique (a re-imaged
machine may reuse one). A device needs at least one of the three. Blank strings count as absent.

Deleting a device retires it (``status=retired``): inventory records of hospital hardware are kept for
accountability (where a device holding patient data went), incidents and the audit log refer to them, and
the serial stays reserved, so a later import of the same serial updates the record instead of duplicating it.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label
from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role
from msp_platform.devices.repository import DeviceRepository, UserRef
from msp_platform.devices.schemas import DeviceCreate, DeviceImportRow, DeviceSort
from msp_platform.kit.bulk import ImportMode, ImportReport, ReportBuilder, RowStatus, SourceRow, convert_row
from msp_platform.kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from msp_platform.kit.ids import new_id
from msp_platform.kit.params import require_aware
from msp_platform.kit.patch import assign
from msp_platform.kit.time import ensure_utc, utcnow
from msp_platform.kit.validation import raise_if, text_errors
from msp_platform.models.device import Device, DeviceKind, DeviceStatus

# A device's clock (or the agent reporting it) may run a little ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)
IDENTIFIERS = ("serial", "asset_tag", "hostname")
UNIQUE_IDENTIFIERS = ("serial", "asset_tag")
IDENTIFIER_MAX = 100
TEXT_MAX = {"manufacturer": 100, "model": 100, "os": 100, "os_version": 100, "notes": 10_000}
SEARCH_MAX = 100
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- values and their validation (shared by the API and the import) ------------------------------------------


def normalize(values: dict[str, Any]) -> dict[str, Any]:
    """Trim text (blank -> None), upper-case serial and asset tag, lower-case the host name, UTC timestamps."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str) and name not in {"kind", "status"}:
            value = value.strip() or None
            if value is not None and name in UNIQUE_IDENTIFIERS:
                value = value.upper()
            elif value is not None and name == "hostname":
                value = value.lower()
                value = value[:-1] if value.endswith(".") and len(value) > 1 else value
        elif isinstance(value, datetime):
            value = ensure_utc(value)
        out[name] = value
    return out


def hostname_ok(value: str) -> bool:
    return len(value) <= 253 and all(_LABEL.match(part) for part in value.split("."))


def format_errors(values: dict[str, Any], *, now: datetime) -> list[FieldError]:
    """Errors of the values themselves (no stored data needed); ``values`` are normalized."""
    errors: list[FieldError] = []
    hostname = values.get("hostname")
    if hostname is not None and not hostname_ok(hostname):
        errors.append(
            FieldError(
                "hostname",
                "not a valid host name: letters, digits and '-' in dot-separated labels of at most 63 "
                "characters (not starting or ending with '-'), 253 characters in all",
            )
        )
    for name in UNIQUE_IDENTIFIERS:
        value = values.get(name)
        if value is None:
            continue
        if len(value) > IDENTIFIER_MAX:
            errors.append(FieldError(name, f"must be at most {IDENTIFIER_MAX} characters"))
        elif _CONTROL.search(value):
            errors.append(FieldError(name, "must not contain control characters"))
    for name, limit in TEXT_MAX.items():
        if name in values:
            errors += text_errors(name, values[name], max_length=limit)
    seen = values.get("last_seen_at")
    if seen is not None and seen > now + CLOCK_SKEW:
        errors.append(FieldError("last_seen_at", "is in the future"))
    return errors


def identifier_errors(values: dict[str, Any]) -> list[FieldError]:
    if any(values.get(name) for name in IDENTIFIERS):
        return []
    return [FieldError("serial", "a device needs at least one of serial, asset_tag or hostname")]


def _used_by(name: str, value: str, other: Device) -> str:
    what = "serial" if name == "serial" else "asset tag"
    return f"{what} {value} is already used by device {other.id}"


async def _reference_errors(
    repo: DeviceRepository, values: dict[str, Any], *, device: Device | None, invalid: set[str]
) -> list[FieldError]:
    """Uniqueness and references, checked only for values that change (re-sending the stored value is fine)."""
    errors: list[FieldError] = []

    def changes(name: str) -> bool:
        value = values.get(name)
        return (
            value is not None and name not in invalid and (device is None or getattr(device, name) != value)
        )

    if changes("serial"):
        other = await repo.by_serial(values["serial"])
        if other is not None:
            errors.append(FieldError("serial", _used_by("serial", values["serial"], other)))
    if changes("asset_tag"):
        other = await repo.by_asset_tag(values["asset_tag"])
        if other is not None:
            errors.append(FieldError("asset_tag", _used_by("asset_tag", values["asset_tag"], other)))
    # Another tenant's site or user is invisible here, so it reads as "no such" (never "not yours").
    if changes("site_id") and not await repo.site_exists(values["site_id"]):
        errors.append(FieldError("site_id", "no such site"))
    if changes("assigned_user_id"):
        user = await repo.user(values["assigned_user_id"])
        if user is None:
            errors.append(FieldError("assigned_user_id", "no such user"))
        elif not user.active:
            errors.append(FieldError("assigned_user_id", "the user is deactivated"))
    return errors


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "Another request stored a device with the same serial or asset tag, or removed a site or user "
            "this change refers to, meanwhile. Nothing was saved; retry."
        ) from exc


def _label_retirement(session: AsyncSession, device: Device, changed: dict[str, tuple[Any, Any]]) -> None:
    if "status" in changed and device.status == DeviceStatus.retired:
        label(session, device, "retired")


# --- single devices ----------------------------------------------------------------------------------------


def assigned_only(principal: Principal | None) -> uuid.UUID | None:
    """Whose devices a caller may see: a plain tenant user (role ``tenant_user``) sees only the devices assigned
    to them ("my devices"); tenant administrators, integration clients and MSP staff see the inventory.
    Returns the user to restrict to, or None."""
    if principal is not None and principal.role is Role.tenant_user:
        if principal.user_id is None:  # a tenant_user is always a user; refuse to widen if not
            raise NotFound("No devices.")
        return principal.user_id
    return None


async def get_device(
    session: AsyncSession, device_id: uuid.UUID, *, principal: Principal | None = None
) -> Device:
    """A device of the session's tenant; with ``principal``, one that caller may see (else 404)."""
    device = await DeviceRepository(session).get(device_id)
    owner = assigned_only(principal)
    if device is None or (owner is not None and device.assigned_user_id != owner):
        raise NotFound(f"Device {device_id} not found.")
    return device


async def create_device(session: AsyncSession, data: DeviceCreate) -> Device:
    repo = DeviceRepository(session)
    values = normalize(msgspec.structs.asdict(data))
    errors = format_errors(values, now=utcnow()) + identifier_errors(values)
    errors += await _reference_errors(repo, values, device=None, invalid={e.field for e in errors})
    raise_if(errors, "The device is invalid.")
    device = Device(id=new_id(), **values)
    session.add(device)
    await _flush(session)
    return device


async def update_device(
    session: AsyncSession, device: Device, values: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    repo = DeviceRepository(session)
    values = normalize(values)
    errors = format_errors(values, now=utcnow())
    errors += identifier_errors({name: values.get(name, getattr(device, name)) for name in IDENTIFIERS})
    errors += await _reference_errors(repo, values, device=device, invalid={e.field for e in errors})
    raise_if(errors, "The change is invalid.")
    changed = assign(device, values)
    _label_retirement(session, device, changed)
    await _flush(session)
    return changed


async def retire_device(session: AsyncSession, device: Device) -> None:
    """DELETE: the device stays on record with ``status=retired`` (idempotent)."""
    if device.status == DeviceStatus.retired:
        return
    device.status = DeviceStatus.retired
    label(session, device, "retired")
    await _flush(session)


async def list_devices(
    session: AsyncSession,
    *,
    limit: int | None,
    cursor: str | None,
    sort: DeviceSort,
    kinds: Sequence[DeviceKind],
    statuses: Sequence[DeviceStatus],
    site_id: uuid.UUID | None,
    assigned_user_id: uuid.UUID | None,
    unassigned: bool | None,
    seen_before: datetime | None,
    seen_after: datetime | None,
    never_seen: bool | None,
    q: str | None,
    principal: Principal | None = None,
) -> tuple[list[Device], str | None]:
    require_aware(seen_before=seen_before, seen_after=seen_after)
    if q is not None and len(q) > SEARCH_MAX:
        raise ValidationFailed(
            "Invalid filter.", errors=[FieldError("q", f"must be at most {SEARCH_MAX} characters")]
        )
    return await DeviceRepository(session).page(
        limit=limit,
        cursor=cursor,
        sort=sort,
        kinds=kinds,
        statuses=statuses,
        site_id=site_id,
        assigned_user_id=assigned_user_id,
        unassigned=unassigned,
        seen_before=seen_before,
        seen_after=seen_after,
        never_seen=never_seen,
        q=q.strip() if q else None,
        assigned_only=assigned_only(principal),
    )


# --- bulk import -------------------------------------------------------------------------------------------

_TEXT_COLUMNS = ("hostname", "manufacturer", "model", "os", "os_version", "notes")


@dataclass
class _Candidate:
    """One parsed import row: the device fields it sets (normalized) and the references it names."""

    row: SourceRow
    values: dict[str, Any]
    site_code: str | None = None
    user_email: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    target: Device | None = None

    @property
    def serial(self) -> str | None:
        value: str | None = self.values.get("serial")
        return value

    @property
    def asset_tag(self) -> str | None:
        value: str | None = self.values.get("asset_tag")
        return value

    @property
    def key(self) -> str | None:
        if self.serial:
            return f"serial:{self.serial}"
        if self.asset_tag:
            return f"asset_tag:{self.asset_tag}"
        return None


def _choice(raw: str) -> str:
    return re.sub(r"[\s-]+", "_", raw.strip().lower())


def _parse_enum(name: str, raw: str, enum: type[DeviceKind] | type[DeviceStatus]) -> Any:
    try:
        return enum(_choice(raw))
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ValueError(f"{raw!r} is not a device {name}; use one of: {allowed}") from None


def _parse_timestamp(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ValueError(f"{raw!r} is not an ISO 8601 timestamp with a time zone (e.g. 2025-03-01T08:30:00Z)")
    return value


def _parse_row(row: SourceRow, data: DeviceImportRow, now: datetime) -> _Candidate:
    """Per-row checks that need no stored data. Columns present in the source are set (a blank cell or null
    clears the field) and absent ones are left alone; blank identifiers, kind and status never clear."""
    present = set(row.values)
    values: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    if data.kind is None or not data.kind.strip():
        errors.append(("kind", "is required"))
    else:
        try:
            values["kind"] = _parse_enum("kind", data.kind, DeviceKind)
        except ValueError as exc:
            errors.append(("kind", str(exc)))
    if data.status is not None and data.status.strip():
        try:
            values["status"] = _parse_enum("status", data.status, DeviceStatus)
        except ValueError as exc:
            errors.append(("status", str(exc)))
    if "last_seen_at" in present:
        if data.last_seen_at is None or not data.last_seen_at.strip():
            values["last_seen_at"] = None
        else:
            try:
                values["last_seen_at"] = _parse_timestamp(data.last_seen_at)
            except ValueError as exc:
                errors.append(("last_seen_at", str(exc)))
    for name in _TEXT_COLUMNS:
        if name in present:
            values[name] = getattr(data, name)
    for name in UNIQUE_IDENTIFIERS:
        if getattr(data, name) is not None:
            values[name] = getattr(data, name)
    values = normalize(values)
    candidate = _Candidate(row, values, errors=errors)
    if "site" in present:
        code = (data.site or "").strip()
        if code:
            candidate.site_code = code.upper()
        else:
            values["site_id"] = None
    if "assigned_user" in present:
        email = (data.assigned_user or "").strip()
        if email:
            candidate.user_email = email.lower()
        else:
            values["assigned_user_id"] = None
    errors += [(e.field, e.message) for e in format_errors(values, now=now)]
    if not candidate.serial and not candidate.asset_tag:
        errors.append(
            ("serial", "no identifier: give a serial or an asset_tag (the import matches devices on them)")
        )
    return candidate


def _mark_duplicates(candidates: Sequence[_Candidate]) -> None:
    """A serial or asset tag on several rows makes each of them ambiguous: all of them fail."""
    for name, what in (("serial", "serial"), ("asset_tag", "asset tag")):
        lines: dict[str, list[int]] = defaultdict(list)
        for candidate in candidates:
            value = candidate.values.get(name)
            if value:
                lines[value].append(candidate.row.line)
        for candidate in candidates:
            value = candidate.values.get(name)
            if value and len(lines[value]) > 1:
                others = ", ".join(str(n) for n in lines[value] if n != candidate.row.line)
                candidate.errors.append(
                    (name, f"duplicate {what} {value} in the file (also on row {others})")
                )


async def _resolve(repo: DeviceRepository, candidates: Sequence[_Candidate]) -> None:
    """Match rows to stored devices and resolve site codes and user emails: one batch query per kind."""
    by_serial = await repo.by_serials(c.serial for c in candidates if c.serial)
    by_tag = await repo.by_asset_tags(c.asset_tag for c in candidates if c.asset_tag)
    sites = await repo.site_ids_by_code(c.site_code for c in candidates if c.site_code)
    users: dict[str, UserRef] = await repo.users_by_email(c.user_email for c in candidates if c.user_email)
    rows_by_target: dict[uuid.UUID, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        serial, tag = candidate.serial, candidate.asset_tag
        # The upsert key: the serial when the row has one, else the asset tag.
        target = by_serial.get(serial) if serial else by_tag.get(tag) if tag else None
        candidate.target = target
        if target is not None:
            rows_by_target[target.id].append(candidate)
        holder = by_tag.get(tag) if tag else None
        if holder is not None and holder is not target:
            what = f"device {holder.id}" + (f" (serial {holder.serial})" if holder.serial else "")
            candidate.errors.append(("asset_tag", f"asset tag {tag} is already used by {what}"))
        if candidate.site_code is not None:
            site_id = sites.get(candidate.site_code)
            if site_id is None:
                candidate.errors.append(("site", f"unknown site code {candidate.site_code}"))
            else:
                candidate.values["site_id"] = site_id
        if candidate.user_email is not None:
            user = users.get(candidate.user_email)
            if user is None:
                candidate.errors.append(("assigned_user", f"unknown user email {candidate.user_email}"))
            elif not user.active and (target is None or target.assigned_user_id != user.id):
                candidate.errors.append(("assigned_user", f"user {candidate.user_email} is deactivated"))
            else:
                candidate.values["assigned_user_id"] = user.id
    for same in rows_by_target.values():
        if len(same) > 1:
            for candidate in same:
                others = ", ".join(str(c.row.line) for c in same if c is not candidate)
                candidate.errors.append(("row", f"matches the same stored device as row {others}"))


async def import_devices(
    session: AsyncSession, rows: Iterable[SourceRow], *, mode: ImportMode, dry_run: bool
) -> ImportReport:
    """Validate every row against the stored data first (batch lookups), then apply the valid ones in one
    flush. ``atomic``: any bad row refuses the whole import (ImportFailed, nothing stored); ``partial``: the
    good rows are stored; ``dry_run``: nothing is stored either way."""
    report = ReportBuilder(mode, dry_run)
    now = utcnow()
    candidates: list[_Candidate] = []
    for row in rows:
        data, errors = convert_row(row, DeviceImportRow)
        if data is None:
            report.error(row, None, errors)
            continue
        candidates.append(_parse_row(row, data, now))
    _mark_duplicates(candidates)
    await _resolve(DeviceRepository(session), candidates)

    creates: list[Device] = []
    updates: list[tuple[Device, dict[str, Any]]] = []
    for candidate in candidates:
        if candidate.errors:
            report.error(candidate.row, candidate.key, candidate.errors)
            continue
        target = candidate.target
        if target is None:
            device = Device(id=new_id(), **candidate.values)
            creates.append(device)
            report.ok(candidate.row, candidate.key, RowStatus.created, device.id)
            continue
        changes = {k: v for k, v in candidate.values.items() if getattr(target, k) != v}
        if changes:
            updates.append((target, changes))
        report.ok(
            candidate.row, candidate.key, RowStatus.updated if changes else RowStatus.unchanged, target.id
        )

    if dry_run or (mode is ImportMode.atomic and report.any_failed):
        return report.finish()  # raises ImportFailed for an atomic import with bad rows
    session.add_all(creates)
    for device, changes in updates:
        _label_retirement(session, device, assign(device, changes))
    await _flush(session)
    return report.finish()
