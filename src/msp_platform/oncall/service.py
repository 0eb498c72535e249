"""On-call schedules: rules for schedules, layers and overrides, the computed final schedule, gap checks and
publishing, calendar feed tokens, and ``on_call_now`` for the escalation engine.

Every change to a schedule (its fields, its layer set, its overrides) bumps ``version`` and clears
``published_at``: a changed schedule must pass the gap check again (``publish``) before it is published.
Escalations page from the published version only: ``publish`` freezes the layers, their members and the
overrides still to come (``published_snapshot``), and edits take effect for paging at the next publish.
The gap check counts a shift of someone who cannot be paged (a deactivated user, staff whose access to the
tenant ended) as a gap, so such a schedule does not publish.

People are staff members granted the tenant (``authz.service.staff_tenants``) or users of the tenant; the
schedule engine (``oncall.schedule``) sees them as opaque keys ``staff:<uuid>`` / ``user:<uuid>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label
from msp_platform.auth.principal import Principal, PrincipalKind
from msp_platform.authz.service import (
    cross_tenant_read_context,
    staff_member_tenants,
    staff_with_access,
    system_tenant_context,
)
from msp_platform.db.session import set_tenant_context
from msp_platform.kit.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed, problem_type
from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import get_logger
from msp_platform.kit.params import EARLIEST, LATEST
from msp_platform.kit.patch import assign
from msp_platform.kit.time import utcnow
from msp_platform.kit.validation import raise_if, text_errors, timezone_errors
from msp_platform.models.oncall import OncallLayer, OncallLayerMember, OncallOverride, OncallSchedule
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.oncall.ical import CalendarEntry, render_entries, render_ical
from msp_platform.oncall.repository import OncallRepository
from msp_platform.oncall.schedule import (
    OVERRIDE_SOURCE,
    Gap,
    Layer,
    Override,
    Restriction,
    ScheduleError,
    Shift,
    TurnLength,
    compute_schedule,
    on_call_at,
    validate_layers,
    validate_overrides,
)
from msp_platform.oncall.schemas import LayerIn, OverrideCreate, PersonRef, ScheduleCreate

log = get_logger(__name__)

MAX_LAYERS = 20
MAX_PARTICIPANTS = 100
MAX_RESTRICTIONS = 14
MAX_TURN = {"hours": 24 * 366, "days": 366, "weeks": 52}
MAX_WINDOW = timedelta(days=366)
DEFAULT_WINDOW = timedelta(days=7)
MAX_WEEKS = 52
DEFAULT_PUBLISH_WEEKS = 4
FEED_WEEKS_AHEAD = 12
FEED_DAYS_BEHIND = 7
# on_call_at searches a shift's bounds at most this far from the instant asked about.
_ON_CALL_HORIZON = timedelta(days=92)

STALE = problem_type(
    "precondition-failed",
    412,
    "The resource changed",
    "If-Match named a version that is no longer current; reload the resource and retry.",
)
COVERAGE_GAPS = problem_type(
    "oncall-coverage-gaps",
    409,
    "The schedule has coverage gaps",
    "Publishing needs someone on call at every moment of the checked period; `gaps` lists the periods "
    "with nobody on call. Add a layer or overrides that cover them, then publish again.",
)


class StaleVersion(Conflict):
    problem = STALE


class CoverageGaps(Conflict):
    problem = COVERAGE_GAPS


# --------------------------------------------------------------------------------------------------------
# People


@dataclass(frozen=True, slots=True)
class OnCallPerson:
    """A person on call: exactly one of ``staff_id`` (MSP staff) and ``user_id`` (a user of the tenant)."""

    staff_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @property
    def key(self) -> str:
        return f"staff:{self.staff_id}" if self.staff_id is not None else f"user:{self.user_id}"

    @classmethod
    def from_key(cls, key: str) -> OnCallPerson:
        kind, _, raw = key.partition(":")
        return cls(staff_id=uuid.UUID(raw)) if kind == "staff" else cls(user_id=uuid.UUID(raw))

    @classmethod
    def of(cls, row: OncallLayerMember | OncallOverride) -> OnCallPerson:
        return cls(staff_id=row.staff_id, user_id=row.user_id)


def _ref_key(ref: PersonRef) -> str | None:
    if (ref.staff_id is None) == (ref.user_id is None):
        return None
    return OnCallPerson(ref.staff_id, ref.user_id).key


async def _person_errors(
    session: AsyncSession, tenant_id: uuid.UUID, refs: Sequence[tuple[str, PersonRef]]
) -> list[FieldError]:
    """Each person must be an active user of the tenant or an active staff member with access to it
    (``authz.service.staff_with_access``: MSP admins, agents granted the tenant or an ancestor). Anyone
    else (another tenant's user, an ungranted staff member, an unknown id) is "no such person", so the
    answer never tells whether an id exists elsewhere."""
    errors: list[FieldError] = []
    repo = OncallRepository(session)
    users = await repo.users(r.user_id for _, r in refs if r.user_id is not None)
    staff = await repo.staff(r.staff_id for _, r in refs if r.staff_id is not None)
    granted = await staff_with_access(session, tenant_id) if staff else frozenset()
    for path, ref in refs:
        if (ref.staff_id is None) == (ref.user_id is None):
            errors.append(FieldError(path, "set exactly one of staff_id or user_id"))
        elif ref.user_id is not None:
            user = users.get(ref.user_id)
            if user is None or user.tenant_id != tenant_id:
                errors.append(FieldError(f"{path}.user_id", "no such person"))
            elif not user.active:
                errors.append(FieldError(f"{path}.user_id", "this user is deactivated"))
        else:
            assert ref.staff_id is not None
            # Deactivated staff have no access either: to the caller they are no such person.
            if ref.staff_id not in staff or ref.staff_id not in granted:
                errors.append(FieldError(f"{path}.staff_id", "no such person"))
    return errors


async def person_names(session: AsyncSession, people: Sequence[OnCallPerson]) -> dict[str, str]:
    repo = OncallRepository(session)
    users = await repo.users(p.user_id for p in people if p.user_id is not None)
    staff = await repo.staff(p.staff_id for p in people if p.staff_id is not None)
    names = {f"user:{k}": v.name for k, v in users.items()}
    names.update({f"staff:{k}": v.name for k, v in staff.items()})
    return names


# --------------------------------------------------------------------------------------------------------
# Layers: API input <-> engine layers <-> rows

_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_ENGINE_FIELD = re.compile(r"^(layers\[\d+\])\.(start|end)$")


def _parse_time(value: str) -> time | None:
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def _api_field(engine_field: str) -> str:
    """The engine names fields after its own types; answer with the API's names."""
    mapped = _ENGINE_FIELD.sub(r"\1.\2_at", engine_field)
    return mapped.replace(".start_time", ".start").replace(".end_time", ".end")


def _bounds_errors(values: Sequence[tuple[str, datetime | None]]) -> list[FieldError]:
    """Stored instants stay within 1900..9000, so every computation around them stays in range."""
    return [
        FieldError(name, "must lie between the years 1900 and 9000")
        for name, value in values
        if value is not None and value.utcoffset() is not None and not EARLIEST <= value <= LATEST
    ]


def _schedule_errors(exc: ScheduleError) -> list[FieldError]:
    return [FieldError(_api_field(e["field"]), e["message"]) for e in exc.errors]


def restriction_from_json(raw: dict[str, Any]) -> Restriction:
    start, end = _parse_time(raw["start"]), _parse_time(raw["end"])
    assert start is not None
    assert end is not None  # validated before it was stored
    if raw["kind"] == "weekly":
        return Restriction.weekly(int(raw["start_weekday"]), start, int(raw["end_weekday"]), end)
    return Restriction.daily(start, end)


def _restriction_json(kind: str, start: time, end: time, sw: int | None, ew: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
    if start.second or end.second:
        out["start"], out["end"] = start.isoformat(), end.isoformat()
    if kind == "weekly":
        out["start_weekday"], out["end_weekday"] = sw, ew
    return out


@dataclass
class _PlannedLayer:
    engine: Layer
    restrictions: list[dict[str, Any]]
    people: list[PersonRef]


def _plan_layers(
    layers: Sequence[LayerIn], default_timezone: str
) -> tuple[list[_PlannedLayer], list[FieldError], list[tuple[str, PersonRef]]]:
    """Check the layers (shape and limits here, schedule rules in the engine) and build engine layers."""
    errors: list[FieldError] = []
    refs: list[tuple[str, PersonRef]] = []
    planned: list[_PlannedLayer] = []
    if not layers:
        errors.append(FieldError("layers", "A schedule needs at least one layer with participants."))
    if len(layers) > MAX_LAYERS:
        errors.append(FieldError("layers", f"at most {MAX_LAYERS} layers"))
        return planned, errors, refs
    for i, data in enumerate(layers):
        p = f"layers[{i}]"
        name = data.name.strip()
        errors += text_errors(f"{p}.name", name, max_length=120)
        if len(data.participants) > MAX_PARTICIPANTS:
            errors.append(FieldError(f"{p}.participants", f"at most {MAX_PARTICIPANTS} participants"))
        keys: list[str] = []
        for j, ref in enumerate(data.participants):
            refs.append((f"{p}.participants[{j}]", ref))
            keys.append(_ref_key(ref) or f"invalid:{j}")
        errors += _bounds_errors([(f"{p}.start_at", data.start_at), (f"{p}.end_at", data.end_at)])
        count, unit = data.turn_length.count, data.turn_length.unit
        if unit in MAX_TURN and isinstance(count, int) and count > MAX_TURN[unit]:
            errors.append(FieldError(f"{p}.turn_length.count", f"at most {MAX_TURN[unit]} {unit} (a year)"))
        timezone = default_timezone if data.timezone is None else data.timezone
        if len(data.restrictions) > MAX_RESTRICTIONS:
            errors.append(FieldError(f"{p}.restrictions", f"at most {MAX_RESTRICTIONS} restrictions"))
        restrictions: list[Restriction] = []
        stored: list[dict[str, Any]] = []
        for j, r in enumerate(data.restrictions):
            rp = f"{p}.restrictions[{j}]"
            start, end = _parse_time(r.start), _parse_time(r.end)
            for value, attr in ((start, "start"), (end, "end")):
                if value is None:
                    errors.append(
                        FieldError(
                            f"{rp}.{attr}",
                            "must be a local time of day such as 18:00 (HH:MM, 00:00 to 23:59; the "
                            "layer's time zone applies)",
                        )
                    )
            if start is None or end is None:
                continue
            restriction = Restriction(
                kind=r.kind,  # type: ignore[arg-type]  # the engine reports an unknown kind
                start_time=start,
                end_time=end,
                start_weekday=r.start_weekday,
                end_weekday=r.end_weekday,
            )
            restrictions.append(restriction)
            stored.append(_restriction_json(r.kind, start, end, r.start_weekday, r.end_weekday))
        engine = Layer(
            name=name,
            participants=tuple(keys),
            start=data.start_at,
            turn_length=TurnLength(count, unit),  # type: ignore[arg-type]  # the engine checks the unit
            timezone=timezone,
            restrictions=tuple(restrictions),
            end=data.end_at,
        )
        planned.append(_PlannedLayer(engine, stored, list(data.participants)))
    try:
        validate_layers([pl.engine for pl in planned])
    except ScheduleError as exc:
        # Restrictions that could not be parsed were left out; their indexes shift, so their own messages
        # above stand, and the engine's are about the rest.
        errors += _schedule_errors(exc)
    return planned, errors, refs


async def _store_layers(
    session: AsyncSession, schedule: OncallSchedule, planned: list[_PlannedLayer]
) -> None:
    rows: list[tuple[OncallLayer, list[PersonRef]]] = []
    for position, pl in enumerate(planned):
        layer = OncallLayer(
            id=new_id(),
            schedule_id=schedule.id,
            position=position,
            name=pl.engine.name,
            start_at=pl.engine.start.astimezone(UTC),
            end_at=pl.engine.end.astimezone(UTC) if pl.engine.end is not None else None,
            turn_count=pl.engine.turn_length.count,
            turn_unit=pl.engine.turn_length.unit,
            timezone=pl.engine.timezone,
            restrictions=pl.restrictions,
        )
        rows.append((layer, pl.people))
    for layer, _ in rows:
        session.add(layer)
    await session.flush()
    for layer, people in rows:
        for position, ref in enumerate(people):
            session.add(
                OncallLayerMember(
                    layer_id=layer.id, position=position, staff_id=ref.staff_id, user_id=ref.user_id
                )
            )
    await session.flush()


async def _delete_layers(session: AsyncSession, schedule: OncallSchedule) -> None:
    repo = OncallRepository(session)
    layers = await repo.layers([schedule.id])
    for member in await repo.members([layer.id for layer in layers]):
        await session.delete(member)
    await session.flush()
    for layer in layers:
        await session.delete(layer)
    await session.flush()


def _changed(schedule: OncallSchedule) -> None:
    """Every change: a new version, and unpublished until the gap check passes again."""
    schedule.version += 1
    schedule.published_at = None


def check_version(schedule: OncallSchedule, if_match: str | None) -> None:
    if if_match is None:
        return
    wanted = if_match.strip().removeprefix("W/").strip('"')
    if wanted != str(schedule.version):
        raise StaleVersion(
            f"Schedule {schedule.name!r} is at version {schedule.version}, not {wanted}; reload it and retry."
        )


# --------------------------------------------------------------------------------------------------------
# Schedules


async def _field_errors(
    repo: OncallRepository, values: dict[str, Any], *, schedule_id: uuid.UUID | None
) -> list[FieldError]:
    errors: list[FieldError] = []
    if "name" in values:
        errors += text_errors("name", values["name"], max_length=120, required=True)
        if not errors:
            other = await repo.by_name(values["name"])
            if other is not None and other.id != schedule_id:
                errors.append(FieldError("name", f"a schedule named {values['name']!r} already exists"))
    if "description" in values:
        errors += text_errors("description", values["description"], max_length=4000)
    if "timezone" in values:
        errors += timezone_errors("timezone", values["timezone"]) or (
            [] if values["timezone"] else [FieldError("timezone", "is required")]
        )
    return errors


async def create_schedule(
    session: AsyncSession, tenant_id: uuid.UUID, data: ScheduleCreate
) -> OncallSchedule:
    repo = OncallRepository(session)
    timezone = data.timezone
    if timezone is None:
        tenant = await repo.tenant(tenant_id)
        timezone = tenant.timezone if tenant is not None else "UTC"
    values: dict[str, Any] = {
        "name": data.name.strip(),
        "description": data.description,
        "timezone": timezone,
    }
    errors = await _field_errors(repo, values, schedule_id=None)
    planned, layer_errors, refs = _plan_layers(data.layers, timezone)
    errors += layer_errors + await _person_errors(session, tenant_id, refs)
    raise_if(errors, "The schedule is invalid.")
    schedule = OncallSchedule(**values, version=1, published_at=None)
    session.add(schedule)
    await session.flush()
    await _store_layers(session, schedule, planned)
    return schedule


async def get_schedule(
    session: AsyncSession, schedule_id: uuid.UUID, *, for_update: bool = False
) -> OncallSchedule:
    schedule = await OncallRepository(session).get(schedule_id, for_update=for_update)
    if schedule is None:
        raise NotFound(f"On-call schedule {schedule_id} not found.")
    return schedule


async def update_schedule(session: AsyncSession, schedule: OncallSchedule, values: dict[str, Any]) -> None:
    if "name" in values:
        values["name"] = values["name"].strip()
    raise_if(
        await _field_errors(OncallRepository(session), values, schedule_id=schedule.id),
        "The change is invalid.",
    )
    if assign(schedule, values):
        _changed(schedule)
        await session.flush()


async def replace_layers(session: AsyncSession, schedule: OncallSchedule, layers: Sequence[LayerIn]) -> None:
    planned, errors, refs = _plan_layers(layers, schedule.timezone)
    errors += await _person_errors(session, schedule.tenant_id, refs)
    raise_if(errors, "The layers are invalid.")
    await _delete_layers(session, schedule)
    await _store_layers(session, schedule, planned)
    _changed(schedule)
    label(session, schedule, "layers_replaced")
    await session.flush()


async def delete_schedule(session: AsyncSession, schedule: OncallSchedule) -> None:
    repo = OncallRepository(session)
    if await repo.used_by_escalations(schedule.id):
        raise Conflict(
            f"Schedule {schedule.name!r} is a target of an escalation policy; remove it from the policy first."
        )
    for override in await repo.all_overrides(schedule.id):
        await session.delete(override)
    await session.flush()
    await _delete_layers(session, schedule)
    await session.delete(schedule)
    await session.flush()


@dataclass
class ScheduleView:
    """A schedule with its layers (bottom first) and each layer's members (in rotation order)."""

    schedule: OncallSchedule
    layers: list[OncallLayer]
    members: dict[uuid.UUID, list[OncallLayerMember]]
    names: dict[str, str]


async def views(session: AsyncSession, schedules: Sequence[OncallSchedule]) -> list[ScheduleView]:
    repo = OncallRepository(session)
    layers = await repo.layers([s.id for s in schedules])
    members: dict[uuid.UUID, list[OncallLayerMember]] = {}
    for m in await repo.members([layer.id for layer in layers]):
        members.setdefault(m.layer_id, []).append(m)
    names = await person_names(session, [OnCallPerson.of(m) for ms in members.values() for m in ms])
    by_schedule: dict[uuid.UUID, list[OncallLayer]] = {}
    for layer in layers:
        by_schedule.setdefault(layer.schedule_id, []).append(layer)
    return [ScheduleView(s, by_schedule.get(s.id, []), members, names) for s in schedules]


# --------------------------------------------------------------------------------------------------------
# Overrides


async def add_override(
    session: AsyncSession, schedule: OncallSchedule, data: OverrideCreate, *, created_by: str
) -> OncallOverride:
    errors = await _person_errors(session, schedule.tenant_id, [("person", data.person)])
    errors += text_errors("reason", data.reason, max_length=200)
    times_ok = True
    for value, name in ((data.start_at, "start_at"), (data.end_at, "end_at")):
        if value.utcoffset() is None:
            errors.append(FieldError(name, "must be a date and time with a UTC offset (e.g. ...Z)"))
            times_ok = False
    bounds = _bounds_errors([("start_at", data.start_at), ("end_at", data.end_at)]) if times_ok else []
    errors += bounds
    times_ok = times_ok and not bounds
    if times_ok and data.end_at <= data.start_at:
        errors.append(FieldError("end_at", "must be after start_at"))
        times_ok = False
    if times_ok and not errors:
        key = _ref_key(data.person)
        assert key is not None
        try:
            validate_overrides([Override(key, data.start_at, data.end_at)])
        except ScheduleError as exc:
            errors += [FieldError(e["field"].removeprefix("overrides[0]."), e["message"]) for e in exc.errors]
        clashes = await OncallRepository(session).person_overlaps(
            schedule.id,
            staff_id=data.person.staff_id,
            user_id=data.person.user_id,
            start=data.start_at,
            end=data.end_at,
        )
        for other in clashes:
            errors.append(
                FieldError(
                    "start_at",
                    f"overlaps override {other.id} of the same person ({_fmt(other.start_at)} to "
                    f"{_fmt(other.end_at)}); merge them or change the times",
                )
            )
    raise_if(errors, "The override is invalid.")
    override = OncallOverride(
        schedule_id=schedule.id,
        staff_id=data.person.staff_id,
        user_id=data.person.user_id,
        start_at=data.start_at.astimezone(UTC),
        end_at=data.end_at.astimezone(UTC),
        reason=data.reason,
        created_by=created_by,
    )
    session.add(override)
    _changed(schedule)
    await session.flush()
    return override


async def get_override(
    session: AsyncSession, schedule: OncallSchedule, override_id: uuid.UUID
) -> OncallOverride:
    override = await OncallRepository(session).override(schedule.id, override_id)
    if override is None:
        raise NotFound(f"Override {override_id} not found.")
    return override


async def delete_override(session: AsyncSession, schedule: OncallSchedule, override: OncallOverride) -> None:
    await session.delete(override)
    _changed(schedule)
    await session.flush()


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------------------------------------
# Computing: final schedule, who is on call, gaps


@dataclass(frozen=True, slots=True)
class ResolvedShift:
    start: datetime
    end: datetime
    person: OnCallPerson
    source: Literal["layer", "override"]
    layer_id: uuid.UUID | None = None
    layer_name: str | None = None
    override_id: uuid.UUID | None = None


@dataclass
class _Definition:
    layers: list[Layer]
    layer_rows: dict[str, OncallLayer]
    overrides: list[Override]
    override_rows: dict[str, list[OncallOverride]] = field(default_factory=dict)


async def _definition(
    session: AsyncSession, schedule: OncallSchedule, start: datetime, end: datetime
) -> _Definition:
    """The schedule as engine input; only overrides that can matter in ``[start, end)`` are loaded."""
    repo = OncallRepository(session)
    layer_rows = await repo.layers([schedule.id])
    members = await repo.members([layer.id for layer in layer_rows])
    return _build_definition(layer_rows, members, await repo.overrides_between(schedule.id, start, end))


def _build_definition(
    layer_rows: Sequence[OncallLayer],
    member_rows: Sequence[OncallLayerMember],
    override_rows: Sequence[OncallOverride],
) -> _Definition:
    """One schedule's rows (layers by position, members by position, overrides in creation order)."""
    members: dict[uuid.UUID, list[OncallLayerMember]] = {}
    for m in member_rows:
        members.setdefault(m.layer_id, []).append(m)
    layers = [
        Layer(
            name=row.name,
            participants=tuple(OnCallPerson.of(m).key for m in members.get(row.id, [])),
            start=row.start_at,
            turn_length=TurnLength(row.turn_count, row.turn_unit),  # type: ignore[arg-type]
            timezone=row.timezone,
            restrictions=tuple(restriction_from_json(r) for r in row.restrictions or []),
            end=row.end_at,
        )
        for row in layer_rows
    ]
    by_person: dict[str, list[OncallOverride]] = {}
    for o in override_rows:
        by_person.setdefault(OnCallPerson.of(o).key, []).append(o)
    return _Definition(
        layers=layers,
        layer_rows={row.name: row for row in layer_rows},
        overrides=[Override(OnCallPerson.of(o).key, o.start_at, o.end_at) for o in override_rows],
        override_rows=by_person,
    )


def _resolve(defn: _Definition, shifts: Sequence[Shift]) -> list[ResolvedShift]:
    out: list[ResolvedShift] = []
    for s in shifts:
        person = OnCallPerson.from_key(s.person)
        if s.source != OVERRIDE_SOURCE:
            row = defn.layer_rows.get(s.source)
            out.append(
                ResolvedShift(
                    s.start, s.end, person, "layer", row.id if row else None, row.name if row else s.source
                )
            )
            continue
        # Adjacent overrides of one person come out of the engine merged; split them back so each piece
        # names its override (one person's overrides never overlap).
        pieces = [
            ResolvedShift(
                max(s.start, o.start_at), min(s.end, o.end_at), person, "override", override_id=o.id
            )
            for o in sorted(defn.override_rows.get(s.person, []), key=lambda o: o.start_at)
            if o.start_at < s.end and o.end_at > s.start
        ]
        out.extend(pieces or [ResolvedShift(s.start, s.end, person, "override")])
    return out


def _window_errors(start: datetime, end: datetime, names: tuple[str, str]) -> list[FieldError]:
    errors = [
        FieldError(name, "must be a date and time with a UTC offset (e.g. 2024-03-04T09:00:00Z)")
        for value, name in ((start, names[0]), (end, names[1]))
        if value.utcoffset() is None
    ]
    if errors:
        return errors
    if end < start:
        return [FieldError(names[1], f"must not be before {names[0]}")]
    if end - start > MAX_WINDOW:
        return [FieldError(names[1], f"the window is at most {MAX_WINDOW.days} days")]
    return []


def _compute_failed(exc: ScheduleError) -> ValidationFailed:
    return ValidationFailed("The schedule cannot be computed.", errors=_schedule_errors(exc))


async def final_schedule(
    session: AsyncSession, schedule: OncallSchedule, start: datetime, end: datetime
) -> list[ResolvedShift]:
    """The computed schedule in ``[start, end)``: who is on call when, and from which layer or override."""
    raise_if(_window_errors(start, end, ("from", "to")), "The window is invalid.")
    defn = await _definition(session, schedule, start, end)
    try:
        result = compute_schedule(defn.layers, defn.overrides, start, end)
    except ScheduleError as exc:
        raise _compute_failed(exc) from exc
    return _resolve(defn, result.shifts)


async def on_call(session: AsyncSession, schedule: OncallSchedule, at: datetime) -> list[ResolvedShift]:
    """The shift(s) covering ``at`` (empty when nobody is on call)."""
    raise_if(_window_errors(at, at, ("at", "at")), "The time is invalid.")
    defn = await _definition(session, schedule, at - _ON_CALL_HORIZON, at + _ON_CALL_HORIZON)
    try:
        shift = on_call_at(defn.layers, defn.overrides, at, horizon=_ON_CALL_HORIZON)
    except ScheduleError as exc:
        raise _compute_failed(exc) from exc
    if shift is None:
        return []
    return [r for r in _resolve(defn, [shift]) if r.start <= at < r.end]


async def on_call_now(
    session: AsyncSession, schedule_id: uuid.UUID, at: datetime | None = None
) -> list[OnCallPerson]:
    """For the escalation engine: who is on call for ``schedule_id`` at ``at`` (default: now).

    ``session`` must already be bound to the schedule's tenant (a request's session, or an actor's with
    ``system_tenant_context``); a schedule of another tenant is a ``NotFound``. Returns the people on call
    (today at most one; a list so that multi-person shifts need no new signature), empty when nobody is.
    Publication is not checked here: read ``get_schedule(...).published_at`` if the policy requires it.
    """
    schedule = await get_schedule(session, schedule_id)
    return [s.person for s in await on_call(session, schedule, at or utcnow())]


@dataclass(frozen=True, slots=True)
class GapReport:
    start: datetime
    end: datetime
    weeks: int
    gaps: tuple[Gap, ...]
    # People with shifts in the window who cannot be paged (their shifts are among the gaps).
    unreachable: tuple[OnCallPerson, ...] = ()


def _check_weeks(weeks: int, name: str = "weeks") -> None:
    if not 1 <= weeks <= MAX_WEEKS:
        raise ValidationFailed(
            "Invalid period.", errors=[FieldError(name, f"must be between 1 and {MAX_WEEKS}")]
        )


async def unreachable_people(session: AsyncSession, tenant_id: uuid.UUID, keys: Iterable[str]) -> set[str]:
    """Which of these people cannot be paged for the tenant now: users deactivated (or not of the tenant),
    staff deactivated or no longer granted the tenant."""
    people = [OnCallPerson.from_key(k) for k in set(keys)]
    repo = OncallRepository(session)
    users = await repo.users(p.user_id for p in people if p.user_id is not None)
    granted = await staff_with_access(session, tenant_id) if any(p.staff_id for p in people) else frozenset()
    bad: set[str] = set()
    for person in people:
        if person.user_id is not None:
            user = users.get(person.user_id)
            if user is None or not user.active or user.tenant_id != tenant_id:
                bad.add(person.key)
        elif person.staff_id not in granted:
            bad.add(person.key)
    return bad


def _gaps(shifts: Sequence[Shift], start: datetime, end: datetime, skip: set[str]) -> tuple[Gap, ...]:
    """Periods of ``[start, end)`` covered by no shift of a person outside ``skip``."""
    gaps: list[Gap] = []
    cursor = start
    for shift in shifts:
        if shift.person in skip:
            continue
        if shift.start > cursor:
            gaps.append(Gap(cursor, shift.start))
        cursor = max(cursor, shift.end)
    if cursor < end:
        gaps.append(Gap(cursor, end))
    return tuple(gaps)


async def coverage_gaps(
    session: AsyncSession, schedule: OncallSchedule, *, weeks: int, start: datetime | None = None
) -> GapReport:
    """Periods with nobody who can be paged on call from ``start`` (default now) over the next ``weeks``
    weeks. A shift of someone without access (deactivated, grant revoked) counts as a gap."""
    _check_weeks(weeks)
    begin = start or utcnow()
    raise_if(_window_errors(begin, begin, ("from", "from")), "The time is invalid.")
    end = begin + timedelta(weeks=weeks)
    defn = await _definition(session, schedule, begin, end)
    try:
        computed = compute_schedule(defn.layers, defn.overrides, begin, end)
    except ScheduleError as exc:
        raise _compute_failed(exc) from exc
    bad = await unreachable_people(session, schedule.tenant_id, (s.person for s in computed.shifts))
    gaps = _gaps(computed.shifts, computed.start, computed.end, bad)
    return GapReport(
        begin.astimezone(UTC),
        end.astimezone(UTC),
        weeks,
        gaps,
        tuple(OnCallPerson.from_key(k) for k in sorted(bad)),
    )


def gap_hours(gap: Gap) -> float:
    return round((gap.end - gap.start).total_seconds() / 3600, 2)


async def publish(
    session: AsyncSession, schedule: OncallSchedule, *, weeks: int = DEFAULT_PUBLISH_WEEKS
) -> None:
    """Publish once nobody-on-call never happens in the next ``weeks`` weeks; otherwise a 409 listing gaps.
    Publishing freezes this version for paging (``published_snapshot``)."""
    report = await coverage_gaps(session, schedule, weeks=weeks)
    if report.gaps:
        total = round(sum(gap_hours(g) for g in report.gaps), 2)
        first = report.gaps[0]
        names = await person_names(session, list(report.unreachable))
        who = ", ".join(names.get(p.key) or p.key for p in report.unreachable)
        cannot = (
            f" Their shifts count as gaps: {who} cannot be paged (deactivated, or no longer granted the "
            "tenant); replace them or cover their shifts."
            if report.unreachable
            else ""
        )
        raise CoverageGaps(
            f"Schedule {schedule.name!r} has {len(report.gaps)} gap(s) in the next {weeks} week(s), "
            f"{total} hour(s) in all with nobody on call; the first is {_fmt(first.start)} to "
            f"{_fmt(first.end)}. It stays unpublished.{cannot}",
            extra={
                "weeks": weeks,
                "window_start": report.start,
                "window_end": report.end,
                "total_gap_hours": total,
                "gaps": [{"start_at": g.start, "end_at": g.end, "hours": gap_hours(g)} for g in report.gaps],
                "unreachable": [
                    {"staff_id": p.staff_id, "user_id": p.user_id, "name": names.get(p.key)}
                    for p in report.unreachable
                ],
            },
        )
    now = utcnow()
    schedule.published_at = now
    schedule.published_version = schedule.version
    schedule.published_snapshot = await _snapshot(session, schedule, now)
    label(session, schedule, "published")
    await session.flush()


# --------------------------------------------------------------------------------------------------------
# What escalations page from: the published version


async def _snapshot(session: AsyncSession, schedule: OncallSchedule, now: datetime) -> dict[str, Any]:
    """The schedule as published: its layers with their members, and the overrides not yet over."""
    repo = OncallRepository(session)
    layers = await repo.layers([schedule.id])
    members: dict[uuid.UUID, list[OncallLayerMember]] = {}
    for m in await repo.members([layer.id for layer in layers]):
        members.setdefault(m.layer_id, []).append(m)
    overrides = await repo.overrides_between(schedule.id, now, None)
    return {
        "version": schedule.version,
        "published_at": now.isoformat(),
        "layers": [
            {
                "id": str(row.id),
                "name": row.name,
                "start_at": row.start_at.isoformat(),
                "end_at": row.end_at.isoformat() if row.end_at else None,
                "turn_count": row.turn_count,
                "turn_unit": row.turn_unit,
                "timezone": row.timezone,
                "restrictions": list(row.restrictions or []),
                "participants": [OnCallPerson.of(m).key for m in members.get(row.id, [])],
            }
            for row in layers
        ],
        "overrides": [
            {
                "id": str(o.id),
                "person": OnCallPerson.of(o).key,
                "start_at": o.start_at.isoformat(),
                "end_at": o.end_at.isoformat(),
            }
            for o in overrides
        ],
    }


def _engine_input(
    snapshot: dict[str, Any], start: datetime, end: datetime
) -> tuple[list[Layer], list[Override]]:
    layers = [
        Layer(
            name=raw["name"],
            participants=tuple(raw["participants"]),
            start=datetime.fromisoformat(raw["start_at"]),
            turn_length=TurnLength(int(raw["turn_count"]), raw["turn_unit"]),
            timezone=raw["timezone"],
            restrictions=tuple(restriction_from_json(r) for r in raw.get("restrictions") or []),
            end=datetime.fromisoformat(raw["end_at"]) if raw.get("end_at") else None,
        )
        for raw in snapshot.get("layers", [])
    ]
    overrides = [
        Override(
            raw["person"], datetime.fromisoformat(raw["start_at"]), datetime.fromisoformat(raw["end_at"])
        )
        for raw in snapshot.get("overrides", [])
        if datetime.fromisoformat(raw["end_at"]) > start and datetime.fromisoformat(raw["start_at"]) < end
    ]
    return layers, overrides


@dataclass(frozen=True, slots=True)
class PagingAnswer:
    """Who a schedule target pages at an instant, from the schedule's published version."""

    people: list[OnCallPerson]
    schedule_name: str
    version: int | None
    # Why nobody, when ``people`` is empty.
    reason: str | None = None


async def paging_on_call(session: AsyncSession, schedule_id: uuid.UUID, at: datetime) -> PagingAnswer:
    """For the escalation engine: who is on call at ``at`` in the *published* version of the schedule
    (unpublished edits do not page). Never raises for a missing, unpublished or empty schedule: the answer
    says why nobody is on call. ``session`` must be bound to the schedule's tenant."""
    schedule = await OncallRepository(session).get(schedule_id)
    if schedule is None:
        return PagingAnswer([], str(schedule_id), None, "the schedule was deleted")
    name = schedule.name
    horizon_start, horizon_end = at - _ON_CALL_HORIZON, at + _ON_CALL_HORIZON
    if schedule.published_snapshot is not None:
        layers, overrides = _engine_input(schedule.published_snapshot, horizon_start, horizon_end)
        version = schedule.published_version
    elif schedule.published_at is not None:
        # Published before published versions were frozen: the current definition is the published one.
        defn = await _definition(session, schedule, horizon_start, horizon_end)
        layers, overrides, version = defn.layers, defn.overrides, schedule.version
    else:
        return PagingAnswer([], name, None, f"schedule {name!r} has never been published")
    try:
        shift = on_call_at(layers, overrides, at, horizon=_ON_CALL_HORIZON)
    except (ScheduleError, OverflowError, ValueError) as exc:
        return PagingAnswer([], name, version, f"schedule {name!r} cannot be computed: {exc}"[:300])
    if shift is None:
        return PagingAnswer(
            [], name, version, f"nobody is on call in schedule {name!r} (version {version}) at {_fmt(at)}"
        )
    return PagingAnswer([OnCallPerson.from_key(shift.person)], name, version)


# --------------------------------------------------------------------------------------------------------
# Calendar feeds
#
# A feed URL must work without OAuth (calendar apps cannot do it), so its token is the credential:
#   mspcal_<payload>.<mac>   payload = base64url(msgpack [version, tenant, schedule, person, issuer, issued
#                            at (ms), expires at (s), 96 random bits]); mac = HMAC-SHA256 over
#                            "mspcal_<payload>" with a key derived from MSP_SECRET_KEY.
# The feed endpoint verifies the MAC before anything else, then binds the session to the token's tenant
# (a forged tenant cannot get past the MAC, and even then only that tenant's rows are visible), checks the
# token is neither expired nor revoked, that the schedule still exists, that the issuer still has access to
# the tenant and that the feed's person is still valid. Every failure is the same 404.
# Revocation: one token (present it) or every token of a schedule issued so far; deny entries live until
# the tokens they deny would have expired.
#
# Personal feeds (one person's shifts across every schedule and tenant, ``scope`` "personal") use the same
# token, MAC and deny list: tenant is the user's tenant (empty for staff), schedule is empty, and person and
# issuer are the person themself. Opening one re-derives the person's tenants at that moment (staff: their
# stored role and grants; users: their own tenant, if active), so a deactivated person's feed is a 404 and
# a lost grant drops that tenant's shifts (all grants lost: a 404). "Revoke all" is per person.

FEED_PREFIX = "mspcal_"
FEED_VERSION = 1
MAX_FEED_DAYS = 730
_FEED_RE = re.compile(r"^mspcal_([A-Za-z0-9_-]{20,400})\.([A-Za-z0-9_-]{43})$")
_DENY_ONE = "oncall-feed:"
_DENY_ALL = "oncall-feeds:"
SCOPE_SCHEDULE = "schedule"
SCOPE_PERSONAL = "personal"
_UNKNOWN_FEED = "No such calendar feed (the link is wrong, expired or was revoked)."


class _FeedClaims(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    version: int
    tenant_id: bytes
    schedule_id: bytes
    person: str | None  # "staff:<uuid>" / "user:<uuid>"
    issuer: str  # the principal key of whoever issued it
    issued_ms: int
    expires: int
    nonce: bytes
    # Trailing with a default: tokens issued before personal feeds existed decode as schedule feeds.
    scope: str = SCOPE_SCHEDULE


@dataclass(frozen=True, slots=True)
class FeedToken:
    token: str
    schedule_id: uuid.UUID | None
    person: OnCallPerson | None
    issued_at: datetime
    expires_at: datetime


# MSP_SECRET_KEY first, then MSP_SECRET_KEY_PREVIOUS (Settings.secret_keys).
Secrets = tuple[bytes, ...]


def _feed_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"msp-platform/oncall-feed-token/v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secrets: Secrets, claims: _FeedClaims) -> str:
    """Signed with MSP_SECRET_KEY (the first of ``secrets``)."""
    body = FEED_PREFIX + _b64(msgspec.msgpack.encode(claims))
    mac = hmac.new(_feed_key(secrets[0]), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def _verify(secrets: Secrets, token: str) -> _FeedClaims | None:
    """The claims of a token signed with MSP_SECRET_KEY or a previous one (a key rotation keeps the calendar
    subscriptions working), or None."""
    match = _FEED_RE.match(token)
    if match is None:
        return None
    body = token[: token.rindex(".")]
    macs = (_b64(hmac.new(_feed_key(k), body.encode(), hashlib.sha256).digest()) for k in secrets)
    if not any(hmac.compare_digest(expected, match.group(2)) for expected in macs):
        return None
    try:
        claims = msgspec.msgpack.decode(_unb64(match.group(1)), type=_FeedClaims)
    except (msgspec.DecodeError, binascii.Error, ValueError):
        return None
    if claims.version != FEED_VERSION:
        return None
    if claims.scope == SCOPE_SCHEDULE:
        if len(claims.tenant_id) != 16 or len(claims.schedule_id) != 16:
            return None
    elif claims.scope == SCOPE_PERSONAL:
        if (
            claims.schedule_id
            or claims.person is None
            or claims.person != claims.issuer
            or len(claims.tenant_id) not in (0, 16)
        ):
            return None
    else:
        return None
    return claims


def _person_ref(person: OnCallPerson) -> PersonRef:
    return PersonRef(staff_id=person.staff_id, user_id=person.user_id)


async def issue_feed_token(
    session: AsyncSession,
    secret: Secrets,
    schedule: OncallSchedule,
    principal: Principal,
    *,
    person: PersonRef | None,
    expires_in_days: int,
) -> FeedToken:
    errors: list[FieldError] = []
    if not 1 <= expires_in_days <= MAX_FEED_DAYS:
        errors.append(FieldError("expires_in_days", f"must be between 1 and {MAX_FEED_DAYS}"))
    if person is not None:
        errors += await _person_errors(session, schedule.tenant_id, [("person", person)])
    if principal.kind not in (PrincipalKind.staff, PrincipalKind.user):
        raise Forbidden(
            "Calendar feed tokens are issued to people; integrations read .../final with their access token."
        )
    raise_if(errors, "The feed token request is invalid.")
    issued = utcnow()
    expires = issued + timedelta(days=expires_in_days)
    who = OnCallPerson(person.staff_id, person.user_id) if person is not None else None
    claims = _FeedClaims(
        version=FEED_VERSION,
        tenant_id=schedule.tenant_id.bytes,
        schedule_id=schedule.id.bytes,
        person=who.key if who else None,
        issuer=principal.key,
        issued_ms=int(issued.timestamp() * 1000),
        expires=int(expires.timestamp()),
        nonce=secrets.token_bytes(12),
    )
    return FeedToken(
        _sign(secret, claims), schedule.id, who, issued, datetime.fromtimestamp(claims.expires, UTC)
    )


async def revoke_feed_token(
    session: AsyncSession, secret: Secrets, schedule: OncallSchedule, token: str
) -> None:
    """Revoke one token of this schedule (the caller presents it, as in RFC 7009)."""
    claims = _verify(secret, token.strip())
    if (
        claims is None
        or claims.scope != SCOPE_SCHEDULE
        or uuid.UUID(bytes=claims.tenant_id) != schedule.tenant_id
        or uuid.UUID(bytes=claims.schedule_id) != schedule.id
    ):
        raise ValidationFailed(
            "The feed token is invalid.", errors=[FieldError("token", "not a feed token of this schedule")]
        )
    await OncallRepository(session).deny(
        _DENY_ONE + claims.nonce.hex(), datetime.fromtimestamp(claims.expires, UTC)
    )


async def revoke_all_feed_tokens(session: AsyncSession, schedule: OncallSchedule) -> None:
    """Revoke every feed token of this schedule issued until now (new ones may be issued afterwards)."""
    now = utcnow()
    cutoff = int(now.timestamp() * 1000)
    await OncallRepository(session).deny(
        f"{_DENY_ALL}{schedule.id.hex}:{cutoff}", now + timedelta(days=MAX_FEED_DAYS + 1)
    )


async def _issuer_valid(session: AsyncSession, issuer: str, tenant_id: uuid.UUID) -> bool:
    kind, _, raw = issuer.partition(":")
    try:
        subject = uuid.UUID(raw)
    except ValueError:
        return False
    repo = OncallRepository(session)
    if kind == PrincipalKind.staff.value:
        return subject in await staff_with_access(session, tenant_id)
    if kind == PrincipalKind.user.value:
        user = (await repo.users([subject])).get(subject)
        return user is not None and user.active and user.tenant_id == tenant_id
    return False


@dataclass(frozen=True, slots=True)
class Feed:
    schedule: OncallSchedule | None  # None for a personal feed (every schedule the person is in)
    person: OnCallPerson | None
    body: bytes


def _denied(claims: _FeedClaims, entries: Sequence[str]) -> bool:
    for entry in entries:
        if entry.startswith(_DENY_ONE):
            return True
        cutoff = entry.rsplit(":", 1)[1]
        if cutoff.isdigit() and claims.issued_ms <= int(cutoff):
            return True
    return False


async def open_feed(session: AsyncSession, secret: Secrets, token: str) -> Feed:
    """The calendar behind a feed token (public: the token is the credential). Any failure is a 404."""
    claims = _verify(secret, token)
    if claims is None or claims.expires <= utcnow().timestamp():
        raise NotFound(_UNKNOWN_FEED)
    if claims.scope == SCOPE_PERSONAL:
        return await _open_personal_feed(session, claims)
    tenant_id = uuid.UUID(bytes=claims.tenant_id)
    schedule_id = uuid.UUID(bytes=claims.schedule_id)
    repo = OncallRepository(session)
    tenant = await repo.tenant(tenant_id)
    if tenant is None or tenant.status != TenantStatus.active:
        raise NotFound(_UNKNOWN_FEED)
    await set_tenant_context(session, system_tenant_context(tenant_id))
    if _denied(claims, await repo.denied([_DENY_ONE + claims.nonce.hex()], f"{_DENY_ALL}{schedule_id.hex}:")):
        raise NotFound(_UNKNOWN_FEED)
    schedule = await repo.get(schedule_id)
    if schedule is None or not await _issuer_valid(session, claims.issuer, tenant_id):
        raise NotFound(_UNKNOWN_FEED)
    person: OnCallPerson | None = None
    if claims.person is not None:
        try:
            person = OnCallPerson.from_key(claims.person)
        except ValueError as exc:
            raise NotFound(_UNKNOWN_FEED) from exc
        if await _person_errors(session, tenant_id, [("person", _person_ref(person))]):
            raise NotFound(_UNKNOWN_FEED)
    return Feed(schedule, person, await render_feed(session, schedule, person))


def feed_window() -> tuple[datetime, datetime]:
    """From a week ago to 12 weeks ahead, on day boundaries (UTC)."""
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=FEED_DAYS_BEHIND), today + timedelta(weeks=FEED_WEEKS_AHEAD)


async def render_feed(session: AsyncSession, schedule: OncallSchedule, person: OnCallPerson | None) -> bytes:
    """iCalendar of the schedule (or one person's shifts in it) from a week ago to 12 weeks ahead.

    The window starts at a day boundary and DTSTAMP is the schedule's last change, so the feed's bytes
    (and ETag) only change when the schedule does or a day passes."""
    start, end = feed_window()
    defn = await _definition(session, schedule, start, end)
    try:
        shifts = compute_schedule(defn.layers, defn.overrides, start, end).shifts
    except ScheduleError as exc:
        raise _compute_failed(exc) from exc
    names = await person_names(session, [OnCallPerson.from_key(s.person) for s in shifts])
    if person is not None:
        shifts = tuple(s for s in shifts if s.person == person.key)
        display = names.get(person.key) or (await person_names(session, [person])).get(person.key, "")
        title = f"{display}: on call for {schedule.name}"
        namespace = f"schedule:{schedule.id}:person:{person.key}"
    else:
        title = f"On call: {schedule.name}"
        namespace = f"schedule:{schedule.id}"
    return render_ical(
        title, shifts, uid_namespace=namespace, person_names=names, dtstamp=schedule.updated_at
    )


# --------------------------------------------------------------------------------------------------------
# Personal calendars: one person's shifts across every schedule they are in, in every tenant they may see
#
# Only schedules in force count: those with a published version. A schedule published as it stands is
# computed from its current rows (identical to the published version, and including overrides that have
# already ended); a schedule edited since it was published is computed from its frozen published version,
# which is what escalations page from. Drafts never published are not in force and are left out.

MAX_PERSONAL_WINDOW = timedelta(days=92)


def person_of(principal: Principal) -> OnCallPerson:
    """The caller as an on-call person; integrations have no shifts of their own."""
    if principal.kind not in (PrincipalKind.staff, PrincipalKind.user):
        raise Forbidden("Personal on-call calendars belong to people (staff or users), not integrations.")
    return OnCallPerson(principal.staff_id, principal.user_id)


async def bind_personal_scope(
    session: AsyncSession, person: OnCallPerson, user_tenant: uuid.UUID | None
) -> dict[uuid.UUID, Tenant]:
    """The active tenants whose schedules count for ``person`` right now, and bind ``session`` to a
    read-only view of exactly those. Staff: the tenants their stored role and grants reach (none once
    deactivated); users: their own tenant (``user_tenant``), while they are active. Empty means no calendar.
    """
    repo = OncallRepository(session)
    if person.staff_id is not None:
        ids: frozenset[uuid.UUID] = await staff_member_tenants(session, person.staff_id)
    else:
        ids = frozenset()
        if user_tenant is not None and person.user_id is not None:
            await set_tenant_context(session, system_tenant_context(user_tenant))
            user = (await repo.users([person.user_id])).get(person.user_id)
            if user is not None and user.active and user.tenant_id == user_tenant:
                ids = frozenset({user_tenant})
    tenants = {t.id: t for t in (await repo.tenants(ids)).values() if t.status == TenantStatus.active}
    await set_tenant_context(session, cross_tenant_read_context(tenants))
    return tenants


@dataclass(frozen=True, slots=True)
class PersonalShift:
    start: datetime
    end: datetime
    schedule: OncallSchedule
    tenant: Tenant
    source: Literal["layer", "override"]
    layer_name: str | None
    version: int | None  # the schedule version the shift comes from

    @property
    def label(self) -> str:
        return f"On call: {self.schedule.name} ({self.tenant.name}, {self.layer_name or 'override'})"


@dataclass(frozen=True, slots=True)
class PersonalShifts:
    shifts: list[PersonalShift]
    # The schedules the person is in (with or without a shift in the window).
    schedules: list[OncallSchedule]


def _involves(key: str, layers: Sequence[Layer], overrides: Sequence[Override]) -> bool:
    return any(key in layer.participants for layer in layers) or any(o.person == key for o in overrides)


async def personal_shifts(
    session: AsyncSession,
    person: OnCallPerson,
    tenants: dict[uuid.UUID, Tenant],
    start: datetime,
    end: datetime,
) -> PersonalShifts:
    """``person``'s shifts in ``[start, end)`` over the schedules in force of ``tenants`` (the session must be
    bound by ``bind_personal_scope``), in time order."""
    repo = OncallRepository(session)
    schedules = [s for s in await repo.in_force() if s.tenant_id in tenants]
    live = [s for s in schedules if s.published_at is not None]
    layer_rows: dict[uuid.UUID, list[OncallLayer]] = {}
    for layer in await repo.layers([s.id for s in live]):
        layer_rows.setdefault(layer.schedule_id, []).append(layer)
    members: dict[uuid.UUID, list[OncallLayerMember]] = {}
    for m in await repo.members([layer.id for rows in layer_rows.values() for layer in rows]):
        members.setdefault(m.layer_id, []).append(m)
    override_rows: dict[uuid.UUID, list[OncallOverride]] = {}
    for o in await repo.overrides_of([s.id for s in live], start, end):
        override_rows.setdefault(o.schedule_id, []).append(o)

    found: list[PersonalShift] = []
    involved: list[OncallSchedule] = []
    for schedule in schedules:
        version: int | None
        if schedule.published_at is not None:
            rows = layer_rows.get(schedule.id, [])
            defn = _build_definition(
                rows,
                [m for layer in rows for m in members.get(layer.id, [])],
                override_rows.get(schedule.id, []),
            )
            layers, overrides, version = defn.layers, defn.overrides, schedule.version
        elif schedule.published_snapshot is not None:
            layers, overrides = _engine_input(schedule.published_snapshot, start, end)
            version = schedule.published_version
        else:
            continue
        if not _involves(person.key, layers, overrides):
            continue
        involved.append(schedule)
        try:
            computed = compute_schedule(layers, overrides, start, end).shifts
        except (ScheduleError, OverflowError, ValueError) as exc:
            # A stored schedule was valid when saved; one that no longer computes must not take the
            # person's other schedules down with it.
            log.warning(
                "personal calendar skips a schedule", schedule_id=str(schedule.id), error=str(exc)[:200]
            )
            continue
        tenant = tenants[schedule.tenant_id]
        for shift in computed:
            if shift.person != person.key:
                continue
            is_override = shift.source == OVERRIDE_SOURCE
            found.append(
                PersonalShift(
                    start=shift.start,
                    end=shift.end,
                    schedule=schedule,
                    tenant=tenant,
                    source="override" if is_override else "layer",
                    layer_name=None if is_override else shift.source,
                    version=version,
                )
            )
    found.sort(key=lambda p: (p.start, p.end, p.tenant.name, p.schedule.name, p.schedule.id))
    return PersonalShifts(found, involved)


def check_personal_window(start: datetime, end: datetime) -> None:
    errors: list[FieldError] = []
    if end <= start:
        errors.append(FieldError("to", "must be after from"))
    elif end - start > MAX_PERSONAL_WINDOW:
        errors.append(FieldError("to", f"the window is at most {MAX_PERSONAL_WINDOW.days} days"))
    raise_if(errors, "The window is invalid.")


def personal_uid_namespace(person: OnCallPerson, schedule_id: uuid.UUID) -> str:
    """Per (person, schedule): with the shift start in the UID, an event is stable per (schedule, person,
    start) and distinct from the same shift in the schedule's own feeds."""
    return f"me:{person.key}:schedule:{schedule_id}"


async def render_personal_feed(
    session: AsyncSession, person: OnCallPerson, tenants: dict[uuid.UUID, Tenant]
) -> bytes:
    """iCalendar of the person's shifts over every schedule in force in ``tenants``, in the window of the
    schedule feeds. DTSTAMP is the latest change of the schedules (and their tenants) the person is in, so
    the bytes (and ETag) change only when one of them does or a day passes."""
    start, end = feed_window()
    found = await personal_shifts(session, person, tenants, start, end)
    display = (await person_names(session, [person])).get(person.key)
    entries = [
        CalendarEntry(
            uid_namespace=personal_uid_namespace(person, p.schedule.id),
            person=person.key,
            start=p.start,
            end=p.end,
            summary=p.label,
            description=f"Schedule: {p.schedule.name}\nTenant: {p.tenant.name}\n"
            + (f"Layer: {p.layer_name}" if p.layer_name else "Override"),
        )
        for p in found.shifts
    ]
    stamps = [s.updated_at for s in found.schedules]
    stamps += [tenants[s.tenant_id].updated_at for s in found.schedules]
    return render_entries(
        f"{display}: on call" if display else "On call",
        entries,
        calendar_uid=f"me:{person.key}",
        dtstamp=max(stamps, default=start),
    )


def _personal_deny_prefix(person: OnCallPerson) -> str:
    # "s"/"u" are not hex digits, so these never match a schedule's "oncall-feeds:<32 hex>:" entries.
    subject = person.staff_id or person.user_id
    assert subject is not None
    return f"{_DENY_ALL}{'s' if person.staff_id is not None else 'u'}{subject.hex}:"


async def issue_personal_feed_token(
    secret: Secrets, principal: Principal, *, expires_in_days: int
) -> FeedToken:
    person = person_of(principal)
    if not 1 <= expires_in_days <= MAX_FEED_DAYS:
        raise ValidationFailed(
            "The feed token request is invalid.",
            errors=[FieldError("expires_in_days", f"must be between 1 and {MAX_FEED_DAYS}")],
        )
    issued = utcnow()
    expires = issued + timedelta(days=expires_in_days)
    claims = _FeedClaims(
        version=FEED_VERSION,
        tenant_id=principal.tenant_id.bytes if principal.tenant_id is not None else b"",
        schedule_id=b"",
        person=person.key,
        issuer=person.key,
        issued_ms=int(issued.timestamp() * 1000),
        expires=int(expires.timestamp()),
        nonce=secrets.token_bytes(12),
        scope=SCOPE_PERSONAL,
    )
    return FeedToken(_sign(secret, claims), None, person, issued, datetime.fromtimestamp(claims.expires, UTC))


async def revoke_personal_feed_token(
    session: AsyncSession, secret: Secrets, principal: Principal, token: str
) -> None:
    """Revoke one of the caller's personal feed tokens (the caller presents it, as in RFC 7009)."""
    person = person_of(principal)
    claims = _verify(secret, token.strip())
    if claims is None or claims.scope != SCOPE_PERSONAL or claims.person != person.key:
        raise ValidationFailed(
            "The feed token is invalid.", errors=[FieldError("token", "not a personal feed token of yours")]
        )
    await OncallRepository(session).deny(
        _DENY_ONE + claims.nonce.hex(), datetime.fromtimestamp(claims.expires, UTC)
    )


async def revoke_all_personal_feed_tokens(session: AsyncSession, principal: Principal) -> None:
    """Revoke every personal feed token of the caller issued until now (new ones may be issued afterwards)."""
    person = person_of(principal)
    now = utcnow()
    await OncallRepository(session).deny(
        f"{_personal_deny_prefix(person)}{int(now.timestamp() * 1000)}",
        now + timedelta(days=MAX_FEED_DAYS + 1),
    )


async def _open_personal_feed(session: AsyncSession, claims: _FeedClaims) -> Feed:
    assert claims.person is not None  # checked by _verify
    try:
        person = OnCallPerson.from_key(claims.person)
    except ValueError as exc:
        raise NotFound(_UNKNOWN_FEED) from exc
    if (person.staff_id is None) != bool(claims.tenant_id):
        raise NotFound(_UNKNOWN_FEED)  # a user's token names their tenant, a staff member's none
    repo = OncallRepository(session)
    if _denied(claims, await repo.denied([_DENY_ONE + claims.nonce.hex()], _personal_deny_prefix(person))):
        raise NotFound(_UNKNOWN_FEED)
    user_tenant = uuid.UUID(bytes=claims.tenant_id) if claims.tenant_id else None
    tenants = await bind_personal_scope(session, person, user_tenant)
    if not tenants:
        raise NotFound(_UNKNOWN_FEED)
    return Feed(None, person, await render_personal_feed(session, person, tenants))
