"""SLA rules: versioned policies, clocks computed from the incident's event log, threshold timers that emit
each warning and breach exactly once, and recalculation under another policy version.

The same ``evaluate`` serves live incidents and imported history: it only reads the event log (state
changes with their original timestamps, the first response) and the calendar the policy names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal
from msp_platform.kit import timers
from msp_platform.kit.calendar import BusinessCalendar, CalendarError, parse_calendar
from msp_platform.kit.errors import FieldError, NotFound, ValidationFailed
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import HoldReason, Incident, IncidentEvent, IncidentState
from msp_platform.models.sla import IncidentSla, SlaNotice, SlaPolicy
from msp_platform.models.tenant import Tenant
from msp_platform.sla.clock import (
    ClockResult,
    MissedUpdate,
    TargetSpec,
    Timeline,
    compute_clock,
    compute_update_cadence,
)
from msp_platform.sla.repository import SlaRepository
from msp_platform.sla.schemas import PolicyIn

STOP_STATES = frozenset(
    {IncidentState.resolved.value, IncidentState.closed.value, IncidentState.cancelled.value}
)
TIMER_KIND = "sla.threshold"
BREACH = 100
# Thresholds crossed longer ago than this (imported history, a recalculation) are not announced late.
LATE_NOTICE_WINDOW = timedelta(hours=1)


# --- policies ------------------------------------------------------------------------------------------


def policy_errors(data: PolicyIn) -> list[FieldError]:
    errors: list[FieldError] = []
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
    if data.calendar == "custom":
        if data.custom_calendar is None:
            errors.append(FieldError("custom_calendar", "is required when calendar is custom"))
        else:
            try:
                _parse(
                    data.custom_calendar.timezone, data.custom_calendar.hours, data.custom_calendar.holidays
                )
            except CalendarError as exc:
                errors += [FieldError(f"custom_calendar.{e['field']}", e["message"]) for e in exc.errors]
    elif data.custom_calendar is not None:
        errors.append(FieldError("custom_calendar", "only with calendar: custom"))
    return errors


async def publish_policy(session: AsyncSession, principal: Principal, data: PolicyIn) -> SlaPolicy:
    errors = policy_errors(data)
    if errors:
        raise ValidationFailed("The SLA policy is invalid.", errors=errors)
    current = await SlaRepository(session).current_policy()
    policy = SlaPolicy(
        version=(current.version if current else 0) + 1,
        name=data.name.strip(),
        calendar=data.calendar,
        custom_calendar=(
            {
                "timezone": data.custom_calendar.timezone,
                "hours": data.custom_calendar.hours,
                "holidays": data.custom_calendar.holidays,
            }
            if data.custom_calendar
            else None
        ),
        pause_states=[s.value for s in dict.fromkeys(data.pause_states)],
        pause_hold_reasons=[r.value for r in data.pause_hold_reasons] if data.pause_hold_reasons else None,
        warning_percents=sorted(set(data.warning_percents)),
        targets={
            k: {
                "response_minutes": t.response_minutes,
                "resolution_minutes": t.resolution_minutes,
                "update_minutes": t.update_minutes,
            }
            for k, t in sorted(data.targets.items())
        },
        created_by=principal.key,
    )
    session.add(policy)
    await session.flush()
    return policy


async def current_policy_version(session: AsyncSession) -> int | None:
    """The version an incident opening now is measured against (called by the incidents service)."""
    policy = await SlaRepository(session).current_policy()
    return policy.version if policy else None


# --- calendars -----------------------------------------------------------------------------------------


def _parse(timezone: str, hours: list[dict[str, Any]], holidays: list[Any]) -> BusinessCalendar:
    if not hours:
        return BusinessCalendar.always_open(timezone)
    days: list[str | date] = [h["date"] if isinstance(h, dict) else h for h in holidays]
    return parse_calendar(timezone, hours, days)


def calendar_for(policy: SlaPolicy, tenant: Tenant) -> tuple[BusinessCalendar, str]:
    if policy.calendar == "24x7":
        return BusinessCalendar.always_open(tenant.timezone), "24x7"
    if policy.calendar == "custom" and policy.custom_calendar:
        c = policy.custom_calendar
        return _parse(c["timezone"], c.get("hours", []), c.get("holidays", [])), f"custom ({c['timezone']})"
    hours = (tenant.business_calendar or {}).get("hours") or []
    holidays = (tenant.business_calendar or {}).get("holidays") or []
    if not hours:
        return BusinessCalendar.always_open(
            tenant.timezone
        ), f"tenant business hours ({tenant.timezone}): 24x7"
    return _parse(tenant.timezone, hours, holidays), f"tenant business hours ({tenant.timezone})"


# --- clocks --------------------------------------------------------------------------------------------


def _state_name(state: str, hold_reason: str | None) -> str:
    return f"on_hold:{hold_reason}" if state == IncidentState.on_hold.value and hold_reason else state


def timeline_for(incident: Incident, events: list[IncidentEvent]) -> Timeline:
    states: list[tuple[datetime, str]] = []
    responded: datetime | None = None
    for event in events:
        if event.type == "created":
            states.append((event.occurred_at, str(event.data.get("state", IncidentState.new.value))))
        elif event.type == "state_changed":
            to = str(event.data.get("to"))
            states.append((event.occurred_at, _state_name(to, event.data.get("on_hold_reason"))))
        elif event.type == "responded" and responded is None:
            responded = event.occurred_at
    started = incident.opened_at
    states.sort(key=lambda s: s[0])
    if not states or states[0][0] > started:
        states.insert(0, (started, IncidentState.new.value))
    states = [(max(at, started), name) for at, name in states]
    return Timeline(started_at=started, states=tuple(states), responded_at=responded)


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


def specs_for(policy: SlaPolicy, priority: int) -> list[TargetSpec]:
    targets = policy.targets.get(str(priority))
    if not targets:
        return []
    pause = pause_states_of(policy)
    warnings = tuple(p for p in policy.warning_percents if p < BREACH)
    return [
        TargetSpec(
            "response",
            timedelta(minutes=targets["response_minutes"]),
            "response",
            pause,
            STOP_STATES,
            warnings,
        ),
        TargetSpec(
            "resolution",
            timedelta(minutes=targets["resolution_minutes"]),
            "resolution",
            pause,
            STOP_STATES,
            warnings,
        ),
    ]


@dataclass(frozen=True)
class Evaluation:
    incident: Incident
    policy: SlaPolicy | None
    calendar_description: str
    as_of: datetime
    clocks: list[ClockResult]
    update_minutes: int | None
    missed_updates: list[MissedUpdate]


async def evaluate(
    session: AsyncSession,
    incident: Incident,
    *,
    as_of: datetime | None = None,
    policy: SlaPolicy | None = None,
) -> Evaluation:
    repo = SlaRepository(session)
    as_of = as_of or utcnow()
    if policy is None and incident.sla_policy_version is not None:
        policy = await repo.policy(incident.sla_policy_version)
    tenant = await session.get(Tenant, incident.tenant_id)
    if policy is None or tenant is None:
        return Evaluation(incident, None, "no SLA policy", as_of, [], None, [])
    calendar, description = calendar_for(policy, tenant)
    timeline = timeline_for(incident, await repo.clock_events(incident.id))
    clocks = [compute_clock(timeline, spec, calendar, as_of) for spec in specs_for(policy, incident.priority)]
    update_minutes = (policy.targets.get(str(incident.priority)) or {}).get("update_minutes")
    misses: list[MissedUpdate] = []
    if update_minutes:
        resolution = next((c for c in clocks if c.target == "resolution"), None)
        misses = compute_update_cadence(
            timeline.started_at,
            await repo.public_staff_updates(incident.id),
            timedelta(minutes=update_minutes),
            calendar,
            resolution.stopped_at if resolution else None,
            as_of,
        )
    return Evaluation(incident, policy, description, as_of, clocks, update_minutes, misses)


def explain(clock: ClockResult) -> str:
    def fmt(delta: timedelta) -> str:
        minutes = int(delta.total_seconds() // 60)
        hours, minutes = divmod(abs(minutes), 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"

    parts = [f"{fmt(clock.elapsed)} counted of {fmt(clock.duration)}"]
    if clock.paused:
        paused_states = sorted({s.state for s in clock.segments if s.kind == "paused"})
        parts.append(f"paused {fmt(clock.paused)} ({', '.join(paused_states)})")
    if clock.outside_hours:
        parts.append(f"{fmt(clock.outside_hours)} outside business hours")
    status = {
        "running": f"running, {fmt(clock.remaining)} left",
        "paused": f"paused with {fmt(clock.remaining)} left",
        "met": "met",
        "breached": f"breached by {fmt(-clock.remaining)}",
    }[clock.status]
    return f"{clock.target}: {status}; " + "; ".join(parts)


# --- keeping stored clocks and timers in step ------------------------------------------------------------


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


async def sync(session: AsyncSession, incident: Incident, *, as_of: datetime | None = None) -> Evaluation:
    """Store the incident's clocks and (re)schedule a timer for each threshold still ahead."""
    evaluation = await evaluate(session, incident, as_of=as_of)
    repo = SlaRepository(session)
    stored = await repo.stored(incident.id)
    now = evaluation.as_of
    live_targets = set()
    for clock in evaluation.clocks:
        live_targets.add(clock.target)
        assert evaluation.policy is not None
        row = stored.get(clock.target)
        values = _outcome(clock) | {
            "policy_version": evaluation.policy.version,
            "priority": incident.priority,
            "computed_at": now,
        }
        if row is None:
            session.add(
                IncidentSla(
                    tenant_id=incident.tenant_id, incident_id=incident.id, target=clock.target, **values
                )
            )
        else:
            for name, value in values.items():
                setattr(row, name, value)
        await _schedule_thresholds(session, incident, evaluation.policy, clock, now)
    for target, row in stored.items():
        if target not in live_targets:  # the priority lost its targets
            await session.delete(row)
    await session.flush()
    return evaluation


def _thresholds(clock: ClockResult) -> list[tuple[int, datetime | None, datetime | None]]:
    """(percent, reached_at, due_at) for every warning and the breach."""
    items = [(w.percent, w.reached_at, w.due_at) for w in clock.warnings]
    breach_reached = clock.breached_at if clock.status == "breached" else None
    items.append((BREACH, breach_reached, clock.due_at if clock.status in ("running", "breached") else None))
    return items


async def _schedule_thresholds(
    session: AsyncSession, incident: Incident, policy: SlaPolicy, clock: ClockResult, now: datetime
) -> None:
    for percent, reached_at, due_at in _thresholds(clock):
        key = f"{policy.version}:{clock.target}:{percent}"
        when = reached_at or (due_at if clock.status == "running" else None)
        if when is None or when < now - LATE_NOTICE_WINDOW:
            await timers.cancel(session, kind=TIMER_KIND, subject_id=incident.id, key=key)
            continue
        await timers.schedule(
            session,
            tenant_id=incident.tenant_id,
            kind=TIMER_KIND,
            subject_id=incident.id,
            key=key,
            due_at=when,
            payload={"target": clock.target, "percent": percent, "policy_version": policy.version},
        )


@timers.timer_handler(TIMER_KIND)
async def on_threshold(job: Any, timer: Any) -> None:
    """A warning or breach timer fired: announce it once if it really happened, otherwise re-plan."""
    from msp_platform.incidents.service import EventWriter

    session: AsyncSession = job.session
    incident = await SlaRepository(session).incident(timer.subject_id, for_update=True)
    if incident is None:
        return
    evaluation = await sync(session, incident)
    target, percent = timer.payload["target"], int(timer.payload["percent"])
    version = int(timer.payload["policy_version"])
    if evaluation.policy is None or evaluation.policy.version != version:
        return
    clock = next((c for c in evaluation.clocks if c.target == target), None)
    if clock is None:
        return
    reached = next((r for p, r, _ in _thresholds(clock) if p == percent), None)
    if reached is None:
        return  # paused or moved; sync() scheduled the new instant
    repo = SlaRepository(session)
    if await repo.notice_exists(incident.id, target, percent, version):
        return
    write = EventWriter(session, "system:sla")
    data = {
        "target": target,
        "percent": percent,
        "policy_version": version,
        "reached_at": reached.isoformat(),
    }
    if percent == BREACH:
        event = await write(incident, "sla_breached", data, occurred_at=reached)
    else:
        event = await write(incident, "sla_warning", data, occurred_at=reached)
    session.add(
        SlaNotice(
            tenant_id=incident.tenant_id,
            incident_id=incident.id,
            target=target,
            threshold=percent,
            policy_version=version,
            due_at=reached,
            emitted_at=utcnow(),
            event_id=event.id,
        )
    )
    await session.flush()


# --- recalculation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecalcRow:
    incident: Incident
    target: str
    before: ClockResult | None
    after: ClockResult | None


async def recalculate(
    session: AsyncSession, *, opened_from: datetime, opened_to: datetime, version: int, apply: bool
) -> tuple[int, list[RecalcRow]]:
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
    incidents = await repo.incidents_opened(opened_from, opened_to)
    changes: list[RecalcRow] = []
    now = utcnow()
    for incident in incidents:
        before = {c.target: c for c in (await evaluate(session, incident, as_of=now)).clocks}
        after = {c.target: c for c in (await evaluate(session, incident, as_of=now, policy=policy)).clocks}
        for target in sorted(set(before) | set(after)):
            b, a = before.get(target), after.get(target)
            if (b.status if b else None) != (a.status if a else None):
                changes.append(RecalcRow(incident, target, b, a))
        if apply and incident.sla_policy_version != version:
            incident.sla_policy_version = version
            await sync(session, incident, as_of=now)
    return len(incidents), changes


async def incident_for_sla(session: AsyncSession, incident_id: uuid.UUID) -> Incident:
    incident = await SlaRepository(session).incident(incident_id)
    if incident is None:
        raise NotFound(f"Incident {incident_id} not found.")
    return incident
