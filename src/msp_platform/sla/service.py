"""SLA rules: versioned policies, clocks computed from the incident's event log, warnings and breaches announced
once, and recalculation under another policy version.

The same ``evaluate`` serves live incidents and imported history: it only reads the event log (state
changes, the first response, priority changes and public staff comments, at their original times), the
policy version and the calendar pinned to the incident.

Rules (also in ``RULES``, shown by GET /incidents/{id}/sla):

- **Calendar versioning.** The effective calendar (the policy's custom one, 24x7, or the tenant's business
  hours with its time zone and holidays) is pinned to the incident when its SLA starts (its first
  evaluation) and stored once per distinct content. Editing the tenant's business hours applies to incidents
  whose SLA starts afterwards; running incidents keep theirs until a recalculation is asked for, which pins
  the calendar in force then. (Pinning at the incident's start rather than at publication means new business
  hours take effect without publishing a new policy version.)
- **Priority history.** Each target is evaluated under the priority in force at each instant of the log: the
  new priority's targets apply measured from the incident's start (a retroactive start), a threshold a
  change leaves already exceeded is reached at the change, and a breach once recorded is never erased by a
  later change (see ``sla.clock``).
- **Update cadence.** A target that restarts at every public comment by MSP staff: pauses, stops, the
  calendar and priority changes apply as for resolution. Each cycle that ran past the cadence is a missed
  update (a breach of target ``update``, with its cycle number).
- **Announcements.** Every warning and breach is stored once per (incident, target, threshold, cycle) and
  announced at most once, by whichever evaluation first sees it passed (an event, the incident's timer, a
  recalculation). One passed more than ``LATE_NOTICE_WINDOW`` ago is announced late (``late: true``): an
  outage, a lost timer or a late bus job loses nothing. A late warning overtaken by a later threshold of its
  target is recorded as superseded instead; thresholds passed before the platform knew the incident
  (imported history) or found by a recalculation on a clock that has stopped are recorded as historical.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal
from msp_platform.kit import timers
from msp_platform.kit.calendar import BusinessCalendar, CalendarError, parse_calendar
from msp_platform.kit.errors import FieldError, NotFound, ValidationFailed
from msp_platform.kit.time import utcnow
from msp_platform.kit.validation import timezone_errors
from msp_platform.models.incident import HoldReason, Incident, IncidentState, Visibility
from msp_platform.models.sla import IncidentSla, SlaNotice, SlaPolicy
from msp_platform.models.tenant import Tenant
from msp_platform.sla.clock import (
    ClockResult,
    MissedUpdate,
    TargetSpec,
    Timeline,
    UpdateCadence,
    compute_clock,
    compute_update_clock,
)
from msp_platform.sla.repository import SlaRepository
from msp_platform.sla.schemas import PolicyIn

STOP_STATES = frozenset(
    {IncidentState.resolved.value, IncidentState.closed.value, IncidentState.cancelled.value}
)
OPEN_STATES = frozenset(s.value for s in IncidentState) - STOP_STATES
TIMER_KIND = "sla.threshold"
# One "look again" timer per incident, due when its next warning, breach or update is.
WAKE_KEY = "next"
BREACH = 100
UPDATE = "update"
TARGET_FIELDS = {"response": "response_minutes", "resolution": "resolution_minutes", UPDATE: "update_minutes"}
# A warning or breach announced more than this after it happened is marked late.
LATE_NOTICE_WINDOW = timedelta(hours=1)
# Publishing refuses a calendar on which a target would need more than this many weeks.
REACH_HORIZON_WEEKS = 104
_ALL_DAY = tuple({"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7))

RULES = (
    "Priority changes: the targets of the priority in force apply, measured from the incident's start; "
    "a threshold a change leaves already exceeded is reached at the change; a breach is never erased.",
    "Pauses: the policy's pause states (and hold reasons) stop counting; closed hours never count.",
    "Calendar: the one in force when the incident's SLA started (pinned); a recalculation re-pins it.",
    "Update cadence: restarts at every public comment by MSP staff; each cycle past the cadence is a miss.",
)


# --- policies ------------------------------------------------------------------------------------------


def _holiday_days(raw: Sequence[Any] | None) -> list[str]:
    days: list[str] = []
    for item in raw or []:
        value = item.get("date") if isinstance(item, dict) else item
        if value is not None:
            days.append(value.isoformat() if isinstance(value, date) else str(value))
    return sorted(set(days))


def _open_weeks_needed(calendar: BusinessCalendar, minutes: int) -> float:
    per_week = calendar.open_us_per_week() / 60_000_000
    return float("inf") if per_week <= 0 else minutes / per_week


def policy_errors(data: PolicyIn, tenant: Tenant | None = None) -> list[FieldError]:
    errors: list[FieldError] = []
    if not data.name.strip():
        errors.append(FieldError("name", "must not be blank"))
    if not data.targets:
        errors.append(FieldError("targets", "give targets for at least one priority"))
    for key in data.targets:
        if key not in {"1", "2", "3", "4", "5"}:
            errors.append(FieldError(f"targets.{key}", "priorities are 1 to 5"))
    for key, target in data.targets.items():
        if target.resolution_minutes < target.response_minutes:
            errors.append(
                FieldError(
                    f"targets.{key}.resolution_minutes", "must not be shorter than the response target"
                )
            )
    for i, percent in enumerate(data.warning_percents):
        if not 1 <= percent <= 100:
            errors.append(FieldError(f"warning_percents[{i}]", f"{percent} is outside 1..100"))
    for i, state in enumerate(data.pause_states):
        if state.value in STOP_STATES:
            errors.append(
                FieldError(f"pause_states[{i}]", f"{state.value} stops the clock; it cannot pause it")
            )
    if data.pause_hold_reasons and IncidentState.on_hold not in data.pause_states:
        errors.append(FieldError("pause_hold_reasons", "only apply when on_hold is a pause state"))
    if {s.value for s in data.pause_states} >= OPEN_STATES and not data.pause_hold_reasons:
        errors.append(FieldError("pause_states", "pauses every open state: the clocks would never count"))
    calendar: BusinessCalendar | None = None
    if data.calendar == "custom":
        if data.custom_calendar is None:
            errors.append(FieldError("custom_calendar", "is required when calendar is custom"))
        else:
            custom = data.custom_calendar
            zone_problems = timezone_errors("custom_calendar.timezone", custom.timezone)
            errors += zone_problems
            try:
                calendar = _build(
                    custom.timezone,
                    custom.hours,
                    [h if isinstance(h, str) else h.date for h in custom.holidays],
                )
            except CalendarError as exc:
                errors += [
                    FieldError(f"custom_calendar.{e['field']}", e["message"])
                    for e in exc.errors
                    if not (zone_problems and e["field"] == "timezone")
                ]
    elif data.custom_calendar is not None:
        errors.append(FieldError("custom_calendar", "only with calendar: custom"))
    elif data.calendar == "business_hours" and tenant is not None:
        calendar = _calendar(calendar_definition_of("business_hours", None, tenant))[0]
    if calendar is not None:
        for key, target in sorted(data.targets.items()):
            for name in ("response_minutes", "resolution_minutes", "update_minutes"):
                minutes = getattr(target, name)
                if minutes is None:
                    continue
                weeks = _open_weeks_needed(calendar, minutes)
                if weeks > REACH_HORIZON_WEEKS:
                    open_hours = calendar.open_us_per_week() / 3_600_000_000
                    errors.append(
                        FieldError(
                            f"targets.{key}.{name}",
                            f"{minutes} minutes of business time take "
                            f"{'forever' if weeks == float('inf') else f'{weeks:,.0f} weeks'} on this calendar "
                            f"(open {open_hours:g} h a week); at most {REACH_HORIZON_WEEKS} weeks",
                        )
                    )
    return errors


def policy_values(data: PolicyIn) -> dict[str, Any]:
    """The stored form of a valid policy body (what a version holds; compared by ``msp tenants apply``)."""
    return {
        "name": data.name.strip(),
        "calendar": data.calendar,
        "custom_calendar": (
            {
                "timezone": data.custom_calendar.timezone,
                "hours": data.custom_calendar.hours,
                "holidays": [
                    {"date": h, "name": ""}
                    if isinstance(h, str)
                    else {"date": h.date.isoformat(), "name": h.name}
                    for h in data.custom_calendar.holidays
                ],
            }
            if data.custom_calendar
            else None
        ),
        "pause_states": [s.value for s in dict.fromkeys(data.pause_states)],
        "pause_hold_reasons": (
            [r.value for r in data.pause_hold_reasons] if data.pause_hold_reasons else None
        ),
        "warning_percents": sorted(set(data.warning_percents)),
        "targets": {
            k: {
                "response_minutes": t.response_minutes,
                "resolution_minutes": t.resolution_minutes,
                "update_minutes": t.update_minutes,
            }
            for k, t in sorted(data.targets.items())
        },
    }


def stored_policy_values(policy: SlaPolicy) -> dict[str, Any]:
    """``policy_values`` of a stored version."""
    return {
        "name": policy.name,
        "calendar": policy.calendar,
        "custom_calendar": policy.custom_calendar,
        "pause_states": list(policy.pause_states),
        "pause_hold_reasons": list(policy.pause_hold_reasons) if policy.pause_hold_reasons else None,
        "warning_percents": list(policy.warning_percents),
        "targets": {
            k: {name: t.get(name) for name in ("response_minutes", "resolution_minutes", "update_minutes")}
            for k, t in sorted(policy.targets.items())
        },
    }


async def publish_policy(
    session: AsyncSession, by: Principal | str, data: PolicyIn, tenant_id: uuid.UUID | None = None
) -> SlaPolicy:
    """Publish ``data`` as the tenant's next version; ``by`` is the caller, or an actor such as
    ``cli:tenants-apply`` (stored as ``created_by``)."""
    tenant = await session.get(Tenant, tenant_id) if tenant_id is not None else None
    errors = policy_errors(data, tenant)
    if errors:
        raise ValidationFailed("The SLA policy is invalid.", errors=errors)
    current = await SlaRepository(session).current_policy()
    policy = SlaPolicy(
        version=(current.version if current else 0) + 1,
        created_by=by if isinstance(by, str) else by.key,
        **policy_values(data),
    )
    session.add(policy)
    await session.flush()
    return policy


async def current_policy_version(session: AsyncSession) -> int | None:
    """The version an incident opening now is measured against (called by the incidents service)."""
    policy = await SlaRepository(session).current_policy()
    return policy.version if policy else None


# --- calendars -----------------------------------------------------------------------------------------


def calendar_definition_of(kind: str, custom: dict[str, Any] | None, tenant: Tenant) -> dict[str, Any]:
    """The effective calendar as plain data: what is pinned to incidents (and hashed to store it once)."""
    if kind == "24x7":
        return {"source": "24x7", "timezone": tenant.timezone, "hours": [], "holidays": []}
    if kind == "custom" and custom:
        return {
            "source": "custom",
            "timezone": custom["timezone"],
            "hours": list(custom.get("hours") or []),
            "holidays": _holiday_days(custom.get("holidays")),
        }
    raw = tenant.business_calendar or {}
    return {
        "source": "business_hours",
        "timezone": tenant.timezone,
        "hours": list(raw.get("hours") or []),
        "holidays": _holiday_days(raw.get("holidays")),
    }


def calendar_definition(policy: SlaPolicy, tenant: Tenant) -> dict[str, Any]:
    return calendar_definition_of(policy.calendar, policy.custom_calendar, tenant)


def _canonical(definition: dict[str, Any]) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)


def calendar_digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(definition).encode()).hexdigest()


def _build(timezone: str, hours: Sequence[Any], holidays: Sequence[Any]) -> BusinessCalendar:
    """No hours means open around the clock; holidays still close whole days (as tenants/schemas.py says)."""
    if not hours and not holidays:
        return BusinessCalendar.always_open(timezone)
    return parse_calendar(timezone, list(hours) if hours else list(_ALL_DAY), list(holidays))


@lru_cache(maxsize=512)
def _calendar_from_text(text: str) -> tuple[BusinessCalendar, str]:
    definition = json.loads(text)
    timezone = str(definition.get("timezone") or "UTC")
    hours, holidays = definition.get("hours") or [], definition.get("holidays") or []
    source = definition.get("source")
    where = {"24x7": "", "custom": f"custom ({timezone})"}.get(
        str(source), f"tenant business hours ({timezone})"
    )
    if source == "24x7":
        return BusinessCalendar.always_open("UTC"), "24x7"
    try:
        calendar = _build(timezone, hours, holidays)
    except CalendarError:
        # Stored data that no longer parses (every input path validates it): count around the clock.
        return BusinessCalendar.always_open("UTC"), f"{where}: invalid, 24x7 used"
    if not hours:
        return calendar, f"{where}: 24x7" + (" except holidays" if holidays else "")
    return calendar, where


def _calendar(definition: dict[str, Any]) -> tuple[BusinessCalendar, str]:
    return _calendar_from_text(_canonical(definition))


# --- clocks --------------------------------------------------------------------------------------------


def _state_name(state: str, hold_reason: str | None) -> str:
    return f"on_hold:{hold_reason}" if state == IncidentState.on_hold.value and hold_reason else state


@dataclass(frozen=True)
class IncidentLog:
    """What the clocks read from an incident's event log."""

    timeline: Timeline
    # (from, priority) in force, the first at the start
    priorities: tuple[tuple[datetime, int], ...]
    # public comments by MSP staff
    updates: tuple[datetime, ...]


def read_log(incident: Incident, events: Sequence[Any]) -> IncidentLog:
    """``events``: the log's clock events (rows with type, occurred_at, data, visibility, actor), in order."""
    states: list[tuple[datetime, str]] = []
    responded: datetime | None = None
    changes: list[tuple[datetime, int]] = []
    initial: int | None = None
    updates: list[datetime] = []
    for event in events:
        data = event.data or {}
        if event.type == "created":
            states.append((event.occurred_at, str(data.get("state", IncidentState.new.value))))
            if isinstance(data.get("priority"), int):
                initial = data["priority"]
        elif event.type == "state_changed":
            states.append((event.occurred_at, _state_name(str(data.get("to")), data.get("on_hold_reason"))))
        elif event.type == "responded" and responded is None:
            responded = event.occurred_at
        elif event.type == "priority_changed" and isinstance(data.get("to"), int):
            if initial is None and not changes and isinstance(data.get("from"), int):
                initial = data["from"]
            changes.append((event.occurred_at, data["to"]))
        elif (
            event.type == "commented"
            and event.visibility == Visibility.public
            and str(event.actor or "").startswith("staff:")
        ):
            updates.append(event.occurred_at)
    started = incident.opened_at
    states.sort(key=lambda s: s[0])
    if not states or states[0][0] > started:
        states.insert(0, (started, IncidentState.new.value))
    states = [(max(at, started), name) for at, name in states]
    priorities = [(started, initial if initial is not None else incident.priority)]
    for at, priority in sorted(changes, key=lambda c: c[0]):
        priorities.append((max(at, started), priority))
    return IncidentLog(
        Timeline(started_at=started, states=tuple(states), responded_at=responded),
        tuple(priorities),
        tuple(sorted(updates)),
    )


def pause_states_of(policy: SlaPolicy) -> frozenset[str]:
    result: set[str] = set()
    for state in policy.pause_states:
        if state == IncidentState.on_hold.value:
            reasons = policy.pause_hold_reasons or [r.value for r in HoldReason]
            result |= {f"on_hold:{r}" for r in reasons}
            if not policy.pause_hold_reasons:
                result.add(state)
        else:
            result.add(state)
    return frozenset(result)


def _minutes(policy: SlaPolicy, priority: int, name: str) -> timedelta | None:
    value = (policy.targets.get(str(priority)) or {}).get(TARGET_FIELDS[name])
    return timedelta(minutes=int(value)) if value else None


def target_spec(
    policy: SlaPolicy, name: str, priorities: Sequence[tuple[datetime, int]]
) -> TargetSpec | None:
    """The target under the priority history: the duration in force from each change (None: that priority
    has no such target). None when no priority of the history has one."""
    durations = [(at, _minutes(policy, p, name)) for at, p in priorities]
    known = [d for _, d in durations if d is not None]
    if not known:
        return None
    first = durations[0][1]
    changes = ([] if first is not None else [(durations[0][0], None)]) + durations[1:]
    return TargetSpec(
        name,
        first or known[0],
        "response" if name == "response" else "resolution",
        pause_states_of(policy),
        STOP_STATES,
        tuple(p for p in policy.warning_percents if p < BREACH),
        tuple(changes),
    )


@dataclass(frozen=True)
class Evaluation:
    incident: Incident
    policy: SlaPolicy | None
    calendar_description: str
    calendar: dict[str, Any] | None
    as_of: datetime
    clocks: list[ClockResult]
    update_minutes: int | None
    missed_updates: list[MissedUpdate]
    update: UpdateCadence | None = None
    priorities: tuple[tuple[datetime, int], ...] = ()
    calendar_id: uuid.UUID | None = None

    @property
    def next_update_due_at(self) -> datetime | None:
        return self.update.next_due_at if self.update else None

    @property
    def wake_at(self) -> datetime | None:
        """When something can next be reached: the incident's timer."""
        instants = [c.wake_at for c in self.clocks if c.wake_at is not None]
        if self.update is not None and self.update.wake_at is not None:
            instants.append(self.update.wake_at)
        return min(instants) if instants else None


def evaluate_log(
    incident: Incident,
    log: IncidentLog,
    policy: SlaPolicy | None,
    calendar_def: dict[str, Any] | None,
    as_of: datetime,
    *,
    calendar_id: uuid.UUID | None = None,
    explained: bool = False,
) -> Evaluation:
    """The clocks of one incident as of ``as_of`` (pure: the log, the policy and the calendar decide);
    ``explained`` keeps the clocks' segments (GET /incidents/{id}/sla shows them)."""
    if policy is None or calendar_def is None:
        return Evaluation(
            incident, None, "no SLA policy", None, as_of, [], None, [], priorities=log.priorities
        )
    calendar, description = _calendar(calendar_def)
    clocks: list[ClockResult] = []
    for name in ("response", "resolution"):
        spec = target_spec(policy, name, log.priorities)
        if spec is None:
            continue
        clock = compute_clock(log.timeline, spec, calendar, as_of, with_segments=explained)
        if clock.applies or clock.status == "breached":
            clocks.append(clock)
    update: UpdateCadence | None = None
    spec = target_spec(policy, UPDATE, log.priorities)
    if spec is not None:
        update = compute_update_clock(log.timeline, spec, calendar, as_of, log.updates)
        if not update.current.clock.applies and update.status != "breached":
            update = None
    in_force = [p for at, p in log.priorities if at <= as_of][-1]
    minutes = _minutes(policy, in_force, UPDATE)
    return Evaluation(
        incident,
        policy,
        description,
        calendar_def,
        as_of,
        clocks,
        int(minutes.total_seconds() // 60) if minutes else None,
        list(update.missed) if update else [],
        update,
        log.priorities,
        calendar_id,
    )


async def evaluate(
    session: AsyncSession,
    incident: Incident,
    *,
    as_of: datetime | None = None,
    policy: SlaPolicy | None = None,
) -> Evaluation:
    """The incident's clocks under its policy version and pinned calendar (the current one if none is pinned
    yet), as of now or a past moment."""
    repo = SlaRepository(session)
    as_of = as_of or utcnow()
    if as_of < incident.opened_at:
        raise ValidationFailed(
            "The incident was not open yet.",
            errors=[FieldError("as_of", f"must not be before the incident opened ({incident.opened_at})")],
        )
    if policy is None and incident.sla_policy_version is not None:
        policy = await repo.policy(incident.sla_policy_version)
    events = (await repo.clock_events([incident.id]))[incident.id]
    log = read_log(incident, events)
    if policy is None:
        return evaluate_log(incident, log, None, None, as_of, explained=True)
    rows = (await repo.stored([incident.id]))[incident.id]
    pinned = next((r.calendar_id for r in rows.values() if r.calendar_id is not None), None)
    definition = (await repo.calendars({pinned})).get(pinned) if pinned is not None else None
    if definition is None:
        tenant = await session.get(Tenant, incident.tenant_id)
        if tenant is None:
            return evaluate_log(incident, log, None, None, as_of, explained=True)
        definition = calendar_definition(policy, tenant)
    return evaluate_log(incident, log, policy, definition, as_of, calendar_id=pinned, explained=True)


def _fmt(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(abs(minutes), 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def explain(clock: ClockResult, priorities: Sequence[tuple[datetime, int]] = ()) -> str:
    parts = [f"{_fmt(clock.elapsed)} counted of {_fmt(clock.duration)}"]
    if clock.paused:
        paused_states = sorted({s.state for s in clock.segments if s.kind == "paused"})
        parts.append(f"paused {_fmt(clock.paused)} ({', '.join(paused_states)})")
    if clock.outside_hours:
        parts.append(f"{_fmt(clock.outside_hours)} outside business hours")
    changes = [(at, p) for at, p in priorities[1:] if at <= clock.as_of]
    if changes:
        moves = ", ".join(
            f"P{before} -> P{after} at {at:%Y-%m-%d %H:%M}Z"
            for (_, before), (at, after) in zip([priorities[0], *changes[:-1]], changes, strict=True)
        )
        parts.append(f"priority changed ({moves}): the target in force counts from the start")
    status = {
        "running": f"running, {_fmt(clock.remaining)} left",
        "paused": f"paused with {_fmt(clock.remaining)} left",
        "met": "met",
        "breached": f"breached by {_fmt(-clock.remaining)}"
        if clock.remaining < timedelta(0)
        else "breached (under an earlier priority)",
    }[clock.status]
    return f"{clock.target}: {status}; " + "; ".join(parts)


# --- keeping stored clocks, notices and the timer in step ------------------------------------------------


def _outcome(clock: ClockResult) -> dict[str, Any]:
    return {
        "status": clock.status,
        "due_at": clock.due_at,
        "breached_at": clock.breached_at,
        "stopped_at": clock.stopped_at,
        "elapsed_seconds": int(clock.elapsed.total_seconds()),
        "paused_seconds": int(clock.paused.total_seconds()),
        "duration_seconds": int(clock.duration.total_seconds()),
    }


def _update_outcome(update: UpdateCadence) -> dict[str, Any]:
    current = update.current.clock
    return {
        "status": update.status,
        "due_at": update.next_due_at,
        "breached_at": update.missed[0].due_at if update.missed else None,
        "stopped_at": current.stopped_at,
        "elapsed_seconds": int(current.elapsed.total_seconds()),
        "paused_seconds": int(current.paused.total_seconds()),
        "duration_seconds": int(current.duration.total_seconds()),
    }


def outcomes(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """What is stored per target (and compared by a recalculation)."""
    out = {c.target: _outcome(c) for c in evaluation.clocks}
    if evaluation.update is not None:
        out[UPDATE] = _update_outcome(evaluation.update)
    return out


@dataclass(frozen=True)
class _Passed:
    target: str
    threshold: int
    cycle: int
    reached_at: datetime
    status: str
    # the target's clock is stopped as of the evaluation (resolved, responded...)
    stopped: bool


def _passed(evaluation: Evaluation) -> list[_Passed]:
    """Every warning and breach reached by ``as_of``."""
    found: list[_Passed] = []

    def of(clock: ClockResult, target: str, cycle: int, stopped: bool) -> None:
        for warning in clock.warnings:
            if warning.reached_at is not None:
                found.append(
                    _Passed(target, warning.percent, cycle, warning.reached_at, clock.status, stopped)
                )
        if clock.status == "breached" and clock.breached_at is not None:
            found.append(_Passed(target, BREACH, cycle, clock.breached_at, clock.status, stopped))

    for clock in evaluation.clocks:
        of(clock, clock.target, 0, clock.stopped_at is not None)
    if evaluation.update is not None:
        stopped = evaluation.update.current.clock.stopped_at is not None
        for cycle in evaluation.update.cycles:
            of(cycle.clock, UPDATE, cycle.number, stopped)
    return found


@dataclass
class _Batch:
    """Everything one sync of several incidents reads, loaded at once."""

    stored: dict[uuid.UUID, dict[str, IncidentSla]]
    notices: dict[uuid.UUID, set[tuple[str, int, int]]]
    pins: dict[str, uuid.UUID] = field(default_factory=dict)


async def _pin(
    repo: SlaRepository, batch: _Batch, tenant_id: uuid.UUID, definition: dict[str, Any]
) -> uuid.UUID:
    digest = calendar_digest(definition)
    if digest not in batch.pins:
        batch.pins[digest] = await repo.pin_calendar(tenant_id, digest, definition)
    return batch.pins[digest]


async def sync(session: AsyncSession, incident: Incident, *, as_of: datetime | None = None) -> Evaluation:
    """Store the incident's clocks, announce what was passed and plan its timer (the caller holds the incident's
    row lock, or is the only writer)."""
    return (await sync_many(session, [incident], as_of=as_of))[0]


async def sync_many(
    session: AsyncSession,
    incidents: Sequence[Incident],
    *,
    as_of: datetime | None = None,
    policy: SlaPolicy | None = None,
    repin: bool = False,
) -> list[Evaluation]:
    """``sync`` for several incidents of the current tenant in a few queries. ``policy`` evaluates them all under
    that version and ``repin`` pins the calendar in force now (a recalculation)."""
    if not incidents:
        return []
    repo = SlaRepository(session)
    now = as_of or utcnow()
    ids = [i.id for i in incidents]
    events = await repo.clock_events(ids)
    batch = _Batch(await repo.stored(ids), await repo.notices(ids))
    policies = await repo.policies_by_version(
        {i.sla_policy_version for i in incidents if i.sla_policy_version}
    )
    tenant = await session.get(Tenant, incidents[0].tenant_id)
    pinned = await repo.calendars(
        {r.calendar_id for rows in batch.stored.values() for r in rows.values() if r.calendar_id is not None}
    )
    evaluations: list[Evaluation] = []
    for incident in incidents:
        chosen = policy or (
            policies.get(incident.sla_policy_version) if incident.sla_policy_version else None
        )
        log = read_log(incident, events.get(incident.id, []))
        rows = batch.stored.get(incident.id, {})
        pin = next((r.calendar_id for r in rows.values() if r.calendar_id is not None), None)
        if chosen is None or tenant is None:
            evaluations.append(evaluate_log(incident, log, None, None, now))
            continue
        if repin or pin is None or pin not in pinned:
            definition = calendar_definition(chosen, tenant)
            pin = await _pin(repo, batch, incident.tenant_id, definition)
        else:
            definition = pinned[pin]
        evaluations.append(evaluate_log(incident, log, chosen, definition, now, calendar_id=pin))
    await store(session, evaluations, batch, now)
    return evaluations


async def store(
    session: AsyncSession,
    evaluations: Sequence[Evaluation],
    batch: _Batch,
    now: datetime,
    *,
    recalculation: bool = False,
) -> None:
    """Write the evaluations: notices (and the events announcing them), the stored results, the timers. The
    incidents' rows are locked by the caller (the bus job, the timer, a recalculation's page)."""
    from msp_platform.incidents.service import EventWriter

    decisions: dict[uuid.UUID, list[tuple[_Passed, str, bool]]] = {}
    for evaluation in evaluations:
        if evaluation.policy is None:
            continue
        decisions[evaluation.incident.id] = _decide(
            evaluation, batch.notices.get(evaluation.incident.id, set()), now, recalculation=recalculation
        )
    announcing = [i for i, found in decisions.items() if any(o == "announced" for _, o, _ in found)]
    # The logs' last numbers in one query (the rows are locked, so they cannot move).
    write = EventWriter(session, "system:sla", await SlaRepository(session).last_event_seqs(announcing))
    wake: dict[uuid.UUID, datetime | None] = {}
    for evaluation in evaluations:
        incident = evaluation.incident
        wake[incident.id] = evaluation.wake_at
        if evaluation.policy is None:
            continue
        for passed, outcome, recent in decisions[incident.id]:
            await _notice(write, evaluation, passed, outcome, recent, now)
        rows = batch.stored.get(incident.id, {})
        values = outcomes(evaluation)
        for target, outcome_values in values.items():
            fields = outcome_values | {
                "policy_version": evaluation.policy.version,
                "priority": incident.priority,
                "computed_at": now,
                "calendar_id": evaluation.calendar_id,
                "opened_at": incident.opened_at,
            }
            row = rows.get(target)
            if row is None:
                session.add(
                    IncidentSla(
                        tenant_id=incident.tenant_id, incident_id=incident.id, target=target, **fields
                    )
                )
            else:
                for name, value in fields.items():
                    if getattr(row, name) != value:
                        setattr(row, name, value)
        for target, row in rows.items():
            if target not in values:  # the priority has no such target (and none was breached)
                await session.delete(row)
    if wake:
        await timers.arm_many(
            session,
            tenant_id=evaluations[0].incident.tenant_id,
            kind=TIMER_KIND,
            key=WAKE_KEY,
            due=wake,
            payload={"look": "again"},
        )
    await session.flush()


def _decide(
    evaluation: Evaluation, noticed: set[tuple[str, int, int]], now: datetime, *, recalculation: bool
) -> list[tuple[_Passed, str, bool]]:
    """(passed, outcome, recent) for every warning and breach passed and not yet noticed.

    - ``historical``: passed before the platform knew the incident (imported history: before its row was
      created), or found by a recalculation on a clock that has stopped since — unless recent (within
      ``LATE_NOTICE_WINDOW``);
    - ``superseded``: a late warning overtaken by a later threshold of its target (any cycle);
    - ``announced`` otherwise (``recent`` False: late), so every breach of a live clock is announced, whatever
      delayed the evaluation that found it (an outage, a lost timer, a bus job that ran late).
    """
    created = evaluation.incident.created_at
    passed = _passed(evaluation)
    latest: dict[str, tuple[datetime, int, int]] = {}
    for p in passed:
        key = (p.reached_at, p.cycle, p.threshold)
        if p.target not in latest or key > latest[p.target]:
            latest[p.target] = key
    fresh = sorted(
        (p for p in passed if (p.target, p.threshold, p.cycle) not in noticed),
        key=lambda p: (p.reached_at, p.target, p.cycle, p.threshold),
    )
    out: list[tuple[_Passed, str, bool]] = []
    for p in fresh:
        recent = p.reached_at >= now - LATE_NOTICE_WINDOW
        history = (created is not None and p.reached_at < created) or (recalculation and p.stopped)
        if history and not recent:
            outcome = "historical"
        elif recent or p.threshold == BREACH or latest[p.target] == (p.reached_at, p.cycle, p.threshold):
            outcome = "announced"
        else:
            outcome = "superseded"
        out.append((p, outcome, recent))
        noticed.add((p.target, p.threshold, p.cycle))
    return out


async def _notice(
    write: Any, evaluation: Evaluation, p: _Passed, outcome: str, recent: bool, now: datetime
) -> None:
    """Store the notice, and announce it on the incident's log (and so on the bus) when so decided."""
    assert evaluation.policy is not None
    incident = evaluation.incident
    event_id: uuid.UUID | None = None
    if outcome == "announced":
        data: dict[str, Any] = {
            "target": p.target,
            "percent": p.threshold,
            "policy_version": evaluation.policy.version,
            "reached_at": p.reached_at.isoformat(),
            "late": not recent,
            "announced_at": now.isoformat(),
            "cycle": p.cycle,
            "clock_status": p.status,
            "priority": incident.priority,
        }
        event = await write(
            incident,
            "sla_breached" if p.threshold == BREACH else "sla_warning",
            data,
            occurred_at=p.reached_at,
        )
        event_id = event.id
    write.session.add(
        SlaNotice(
            tenant_id=incident.tenant_id,
            incident_id=incident.id,
            target=p.target,
            threshold=p.threshold,
            cycle=p.cycle,
            policy_version=evaluation.policy.version,
            due_at=p.reached_at,
            emitted_at=now,
            event_id=event_id,
            outcome=outcome,
        )
    )


@timers.timer_handler(TIMER_KIND)
async def on_threshold(job: Any, timer: Any) -> None:
    """The incident's timer fired: recompute, announce what was passed, plan the next look (the timer is armed
    again whatever fired it, so a timer that fired while the clock was paused is never used up)."""
    session: AsyncSession = job.session
    incident = await SlaRepository(session).incident(timer.subject_id, for_update=True)
    if incident is None:
        return
    await sync(session, incident)


# --- recalculation -------------------------------------------------------------------------------------

MAX_PAGE = 2000


@dataclass(frozen=True)
class RecalcRow:
    incident: Incident
    target: str
    version_before: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True)
class RecalcResult:
    examined: int
    rows: list[RecalcRow]
    next_after: tuple[datetime, uuid.UUID] | None


def _compared(outcome: dict[str, Any] | None) -> tuple[Any, ...] | None:
    return None if outcome is None else (outcome["status"], outcome["due_at"], outcome["breached_at"])


async def recalculate(
    session: AsyncSession,
    *,
    opened_from: datetime,
    opened_to: datetime,
    version: int,
    apply: bool,
    limit: int = 500,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> RecalcResult:
    """One page of the incidents opened in [from, to): their outcomes now under their own version and pinned
    calendar, and under ``version`` with the calendar in force now; with ``apply``, each incident moves to
    ``version``, its calendar is re-pinned and its stored results refreshed (even on the same version)."""
    if opened_to <= opened_from:
        raise ValidationFailed(
            "The period is empty.", errors=[FieldError("opened_to", "must be after opened_from")]
        )
    repo = SlaRepository(session)
    policy = await repo.policy(version)
    if policy is None:
        raise ValidationFailed(
            "No such policy version.",
            errors=[FieldError("policy_version", f"version {version} does not exist")],
        )
    page = list(await repo.incidents_page(opened_from, opened_to, after=after, limit=limit, for_update=apply))
    more = len(page) > limit
    incidents = page[:limit]
    next_after = (incidents[-1].opened_at, incidents[-1].id) if more else None
    if not incidents:
        return RecalcResult(0, [], None)
    now = utcnow()
    ids = [i.id for i in incidents]
    events = await repo.clock_events(ids)
    batch = _Batch(await repo.stored(ids), await repo.notices(ids) if apply else {})
    versions = {i.sla_policy_version for i in incidents if i.sla_policy_version is not None}
    policies = await repo.policies_by_version(versions)
    tenant = await session.get(Tenant, incidents[0].tenant_id)
    assert tenant is not None
    pinned = await repo.calendars(
        {r.calendar_id for rows in batch.stored.values() for r in rows.values() if r.calendar_id is not None}
    )
    now_definition = calendar_definition(policy, tenant)
    now_pin = await _pin(repo, batch, tenant.id, now_definition) if apply else None
    changes: list[RecalcRow] = []
    afters: list[Evaluation] = []
    for incident in incidents:
        log = read_log(incident, events.get(incident.id, []))
        own = policies.get(incident.sla_policy_version) if incident.sla_policy_version is not None else None
        rows = batch.stored.get(incident.id, {})
        pin = next((r.calendar_id for r in rows.values() if r.calendar_id is not None), None)
        before_def = pinned.get(pin) if pin is not None else None
        if own is not None and before_def is None:
            before_def = calendar_definition(own, tenant)
        before = outcomes(evaluate_log(incident, log, own, before_def, now))
        evaluation = evaluate_log(incident, log, policy, now_definition, now, calendar_id=now_pin)
        after_out = outcomes(evaluation)
        for target in sorted(set(before) | set(after_out)):
            b, a = before.get(target), after_out.get(target)
            if _compared(b) != _compared(a):
                changes.append(RecalcRow(incident, target, incident.sla_policy_version, b, a))
        afters.append(evaluation)
    if apply:
        for incident in incidents:
            incident.sla_policy_version = version
        await store(session, afters, batch, now, recalculation=True)
    return RecalcResult(len(incidents), changes, next_after)


async def incident_for_sla(session: AsyncSession, incident_id: uuid.UUID) -> Incident:
    incident = await SlaRepository(session).incident(incident_id)
    if incident is None:
        raise NotFound(f"Incident {incident_id} not found.")
    return incident
