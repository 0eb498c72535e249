"""Escalation policies and the engine that runs them.

A trigger (an incident raised at some priority, out of hours, an SLA warning or breach, all arriving on
the internal event bus) starts an *escalation*: level 0 fires after its delay, paging its targets (people,
a schedule's current on-call, a tier group, or another policy); nobody acknowledging lets the next level
fire after its delay, and the whole ladder repeats ``repeat_count`` times. Every level is a durable timer
(``kit.timers``), so it fires on time, survives broker outages and fires exactly once; every page is a row
unique per (escalation, level, repeat, person), and every page and acknowledgement is in the incident's
event log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role
from msp_platform.authz.service import staff_with_access
from msp_platform.escalations.repository import EscalationRepository
from msp_platform.escalations.schemas import PolicyIn, TargetIn
from msp_platform.kit import timers
from msp_platform.kit.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Incident
from msp_platform.models.oncall import Escalation, EscalationLevel, EscalationPolicy, EscalationTarget, Page
from msp_platform.models.tenant import Tenant

log = get_logger(__name__)
TIMER_KIND = "escalation.level"
ACTIVE, ACKNOWLEDGED, RESOLVED, EXHAUSTED = "active", "acknowledged", "resolved", "exhausted"


@dataclass(frozen=True)
class Person:
    staff_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @property
    def key(self) -> str:
        return f"staff:{self.staff_id}" if self.staff_id else f"user:{self.user_id}"


# --- policies ------------------------------------------------------------------------------------------


async def _target_errors(
    session: AsyncSession, tenant_id: uuid.UUID, target: TargetIn, where: str, granted: set[uuid.UUID]
) -> list[FieldError]:
    repo = EscalationRepository(session)
    fields = {
        "staff_id": target.staff_id,
        "user_id": target.user_id,
        "schedule_id": target.schedule_id,
        "tier": target.tier,
        "policy_id": target.policy_id,
    }
    wanted = {
        "person": {"staff_id", "user_id"},
        "schedule": {"schedule_id"},
        "tier_group": {"tier"},
        "policy": {"policy_id"},
    }[target.kind]
    errors = [
        FieldError(f"{where}.{name}", f"not used by a {target.kind} target")
        for name, value in fields.items()
        if value is not None and name not in wanted
    ]
    if target.kind == "person":
        if (target.staff_id is None) == (target.user_id is None):
            errors.append(FieldError(where, "a person target names exactly one of staff_id or user_id"))
        elif target.user_id is not None:
            user = await repo.user(target.user_id)
            if user is None or not user.active:
                errors.append(FieldError(f"{where}.user_id", "no such person"))
        elif target.staff_id is not None:
            staff = await repo.staff(target.staff_id)
            if staff is None or not staff.active or staff.id not in granted:
                errors.append(FieldError(f"{where}.staff_id", "no such person"))
    elif target.kind == "schedule":
        if target.schedule_id is None or await repo.schedule(target.schedule_id) is None:
            errors.append(FieldError(f"{where}.schedule_id", "no such schedule"))
    elif target.kind == "tier_group":
        if target.tier is None:
            errors.append(FieldError(f"{where}.tier", "is required (1, 2 or 3)"))
    elif target.kind == "policy" and (
        target.policy_id is None or await repo.policy(target.policy_id) is None
    ):
        errors.append(FieldError(f"{where}.policy_id", "no such escalation policy"))
    return errors


async def _granted_staff(session: AsyncSession, tenant: Tenant) -> set[uuid.UUID]:
    return set(await staff_with_access(session, tenant.id))


def _creates_cycle(edges: dict[uuid.UUID, set[uuid.UUID]], start: uuid.UUID) -> bool:
    seen: set[uuid.UUID] = set()
    stack = list(edges.get(start, ()))
    while stack:
        current = stack.pop()
        if current == start:
            return True
        if current in seen:
            continue
        seen.add(current)
        stack.extend(edges.get(current, ()))
    return False


async def save_policy(
    session: AsyncSession, tenant_id: uuid.UUID, data: PolicyIn, existing: EscalationPolicy | None = None
) -> EscalationPolicy:
    repo = EscalationRepository(session)
    tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    errors: list[FieldError] = []
    same_name = await repo.policy_by_name(data.name.strip())
    if same_name is not None and (existing is None or same_name.id != existing.id):
        errors.append(FieldError("name", "another escalation policy has this name"))
    for i, trigger in enumerate(data.triggers):
        if trigger.type == "sla_warning" and trigger.percent is None:
            errors.append(FieldError(f"triggers[{i}].percent", "is required for sla_warning"))
        if trigger.type != "sla_warning" and trigger.percent is not None:
            errors.append(FieldError(f"triggers[{i}].percent", "only for sla_warning"))
        if trigger.type in ("sla_warning", "sla_breached") and trigger.priorities:
            errors.append(
                FieldError(f"triggers[{i}].priorities", "only for incident_created and after_hours")
            )
    granted = await _granted_staff(session, tenant)
    for i, level in enumerate(data.levels):
        for j, target in enumerate(level.targets):
            errors += await _target_errors(session, tenant_id, target, f"levels[{i}].targets[{j}]", granted)
    if errors:
        raise ValidationFailed("The escalation policy is invalid.", errors=errors)

    policy = existing or EscalationPolicy(id=new_id())
    policy.name = data.name.strip()
    policy.active = data.active
    policy.repeat_count = data.repeat_count
    policy.triggers = [{k: v for k, v in _trigger_dict(t).items() if v is not None} for t in data.triggers]
    if existing is None:
        session.add(policy)
    else:
        await repo.delete_levels(policy.id)
    await session.flush()
    for position, level in enumerate(data.levels):
        level_row = EscalationLevel(
            id=new_id(), policy_id=policy.id, position=position, delay_minutes=level.delay_minutes
        )
        session.add(level_row)
        await session.flush()
        for target in level.targets:
            session.add(
                EscalationTarget(
                    level_id=level_row.id,
                    kind=target.kind,
                    staff_id=target.staff_id,
                    user_id=target.user_id,
                    schedule_id=target.schedule_id,
                    tier=target.tier,
                    target_policy_id=target.policy_id,
                )
            )
    await session.flush()
    edges = await repo.policy_edges()
    if _creates_cycle(edges, policy.id):
        raise ValidationFailed(
            "Policies hand over to each other in a cycle.",
            errors=[FieldError("levels", "a policy target leads back to this policy")],
        )
    return policy


def _trigger_dict(t: Any) -> dict[str, Any]:
    return {"type": t.type, "priorities": t.priorities, "percent": t.percent, "target": t.target}


async def delete_policy(session: AsyncSession, policy: EscalationPolicy) -> None:
    if await EscalationRepository(session).policy_in_use(policy.id):
        raise Conflict("The policy has escalations running; deactivate it (active=false) instead.")
    policy.active = False
    await session.flush()


# --- the engine ----------------------------------------------------------------------------------------


def _matches(
    trigger: dict[str, Any], event_type: str, payload: dict[str, Any], after_hours: bool
) -> str | None:
    """The trigger key if ``trigger`` fires for this bus event."""
    kind = trigger.get("type")
    data = payload.get("data", {})
    priorities = trigger.get("priorities")
    if kind == "incident_created" and event_type == "incident.created":
        if priorities and payload.get("priority") not in priorities:
            return None
        return "created"
    if kind == "after_hours" and event_type == "incident.created" and after_hours:
        if priorities and payload.get("priority") not in priorities:
            return None
        return "after_hours"
    if kind == "sla_warning" and event_type == "incident.sla_warning":
        if data.get("percent") != trigger.get("percent"):
            return None
        if trigger.get("target") and data.get("target") != trigger.get("target"):
            return None
        return f"sla_warning:{data.get('target')}:{data.get('percent')}"
    if kind == "sla_breached" and event_type == "incident.sla_breached":
        if trigger.get("target") and data.get("target") != trigger.get("target"):
            return None
        return f"sla_breached:{data.get('target')}"
    return None


def _after_hours(tenant: Tenant, at: datetime) -> bool:
    from msp_platform.kit.calendar import BusinessCalendar, CalendarError, parse_calendar

    hours = (tenant.business_calendar or {}).get("hours") or []
    if not hours:
        return False  # a 24x7 tenant has no "after hours"
    holidays = [
        h["date"] if isinstance(h, dict) else h
        for h in (tenant.business_calendar or {}).get("holidays") or []
    ]
    try:
        calendar: BusinessCalendar = parse_calendar(tenant.timezone, hours, holidays)
    except CalendarError:
        return False
    return not calendar.is_open(at)


async def on_incident_event(
    session: AsyncSession, event_type: str, occurred_at: datetime, payload: dict[str, Any]
) -> list[Escalation]:
    """Start the escalations this event triggers (idempotent: a trigger starts a policy once per incident)."""
    from sqlalchemy import select

    repo = EscalationRepository(session)
    incident = await session.scalar(select(Incident).where(Incident.id == uuid.UUID(payload["incident_id"])))
    if incident is None:
        return []
    if event_type in ("incident.state_changed",) and payload.get("data", {}).get("to") in (
        "resolved",
        "closed",
        "cancelled",
    ):
        await resolve_for_incident(session, incident, actor="system:incident-" + str(payload["data"]["to"]))
        return []
    tenant = await session.get(Tenant, incident.tenant_id)
    assert tenant is not None
    after_hours = event_type == "incident.created" and _after_hours(tenant, occurred_at)
    started: list[Escalation] = []
    for policy in await repo.active_policies():
        for trigger in policy.triggers:
            key = _matches(trigger, event_type, payload, after_hours)
            if key is None or await repo.existing(incident.id, policy.id, key) is not None:
                continue
            started.append(
                await start(session, incident, policy, trigger=str(trigger["type"]), trigger_key=key)
            )
    return started


async def start(
    session: AsyncSession, incident: Incident, policy: EscalationPolicy, *, trigger: str, trigger_key: str
) -> Escalation:
    from msp_platform.incidents.service import EventWriter

    repo = EscalationRepository(session)
    levels = await repo.levels(policy.id)
    now = utcnow()
    escalation = Escalation(
        id=new_id(),
        tenant_id=incident.tenant_id,
        incident_id=incident.id,
        policy_id=policy.id,
        trigger=trigger,
        trigger_key=trigger_key,
        state=ACTIVE,
        level=0,
        repeat=0,
        started_at=now,
    )
    session.add(escalation)
    await session.flush()
    await EventWriter(session, "system:escalation")(
        incident,
        "escalation_started",
        {"escalation_id": str(escalation.id), "policy": policy.name, "trigger": trigger_key},
        visibility=_internal(),
    )
    if levels:
        await _schedule_level(session, escalation, 0, 0, now + timedelta(minutes=levels[0].delay_minutes))
    return escalation


def _internal() -> Any:
    from msp_platform.models.incident import Visibility

    return Visibility.internal


async def _schedule_level(
    session: AsyncSession, escalation: Escalation, level: int, repeat: int, due: datetime
) -> None:
    await timers.schedule(
        session,
        tenant_id=escalation.tenant_id,
        kind=TIMER_KIND,
        subject_id=escalation.id,
        key=f"{level}:{repeat}",
        due_at=due,
        payload={"level": level, "repeat": repeat},
    )


async def resolve_targets(
    session: AsyncSession, tenant: Tenant, targets: list[EscalationTarget], at: datetime
) -> list[Person]:
    """The people a level pages right now (schedules answer with their current on-call)."""
    repo = EscalationRepository(session)
    people: list[Person] = []
    granted: set[uuid.UUID] | None = None
    for target in targets:
        if target.kind == "person":
            people.append(Person(target.staff_id, target.user_id))
        elif target.kind == "schedule" and target.schedule_id is not None:
            from msp_platform.oncall import service as oncall

            for who in await oncall.on_call_now(session, target.schedule_id, at):
                people.append(Person(who.staff_id, who.user_id))
        elif target.kind == "tier_group" and target.tier is not None:
            if granted is None:
                granted = await _granted_staff(session, tenant)
            people += [Person(staff_id=s.id) for s in await repo.tier_staff(target.tier) if s.id in granted]
    return list(dict.fromkeys(people))


@timers.timer_handler(TIMER_KIND)
async def fire_level(job: Any, timer: Any) -> None:
    session: AsyncSession = job.session
    repo = EscalationRepository(session)
    escalation = await repo.escalation(timer.subject_id, for_update=True)
    if escalation is None or escalation.state != ACTIVE:
        return
    level_no, repeat = int(timer.payload["level"]), int(timer.payload["repeat"])
    pages = await fire(
        session, escalation, level_no, repeat, lateness=(utcnow() - timer.due_at).total_seconds()
    )
    if pages:
        from msp_platform.integrations.channels import notify_page

        # In the same unit of work: the page and its queued notifications commit together.
        for page in pages:
            await notify_page(session, page.id, settings=job.settings)


async def fire(
    session: AsyncSession, escalation: Escalation, level_no: int, repeat: int, *, lateness: float = 0.0
) -> list[Page]:
    from msp_platform.incidents.service import EventWriter

    repo = EscalationRepository(session)
    policy = await repo.policy(escalation.policy_id)
    incident = await session.get(Incident, (escalation.tenant_id, escalation.incident_id))
    tenant = await session.get(Tenant, escalation.tenant_id)
    if policy is None or incident is None or tenant is None:
        return []
    levels = await repo.levels(policy.id)
    if level_no >= len(levels):
        return []
    level = levels[level_no]
    now = utcnow()
    targets = await repo.targets([level.id])
    write = EventWriter(session, "system:escalation")
    pages: list[Page] = []
    for person in await resolve_targets(session, tenant, targets, now):
        if (
            await repo.existing_page(escalation.id, level_no, repeat, person.staff_id, person.user_id)
            is not None
        ):
            continue
        page = Page(
            id=new_id(),
            tenant_id=escalation.tenant_id,
            escalation_id=escalation.id,
            incident_id=escalation.incident_id,
            level=level_no,
            repeat=repeat,
            staff_id=person.staff_id,
            user_id=person.user_id,
            state="triggered",
        )
        session.add(page)
        pages.append(page)
        await write(
            incident,
            "paged",
            {
                "page_id": str(page.id),
                "escalation_id": str(escalation.id),
                "level": level_no,
                "repeat": repeat,
                "person": person.key,
            },
            visibility=_internal(),
        )
    for handover in (t for t in targets if t.kind == "policy" and t.target_policy_id is not None):
        target_policy = await repo.policy(handover.target_policy_id)  # type: ignore[arg-type]
        key = f"handover:{escalation.id}:{level_no}:{repeat}"
        if target_policy is not None and await repo.existing(incident.id, target_policy.id, key) is None:
            await start(session, incident, target_policy, trigger="handover", trigger_key=key)
    await session.flush()
    escalation.level, escalation.repeat = level_no, repeat
    if level_no + 1 < len(levels):
        await _schedule_level(
            session,
            escalation,
            level_no + 1,
            repeat,
            now + timedelta(minutes=levels[level_no + 1].delay_minutes),
        )
    elif repeat < policy.repeat_count:
        # Round again from the first level, at least a minute later so a ladder of zero delays cannot spin.
        delay = max(timedelta(minutes=levels[0].delay_minutes), timedelta(minutes=1))
        await _schedule_level(session, escalation, 0, repeat + 1, now + delay)
    else:
        escalation.state = EXHAUSTED
        await write(
            incident, "escalation_exhausted", {"escalation_id": str(escalation.id)}, visibility=_internal()
        )
    log.info(
        "escalation level fired",
        escalation_id=str(escalation.id),
        level=level_no,
        repeat=repeat,
        pages=len(pages),
        lateness_seconds=round(lateness, 3),
    )
    return pages


async def _stop(session: AsyncSession, escalation: Escalation) -> None:
    await timers.cancel(session, kind=TIMER_KIND, subject_id=escalation.id)


async def acknowledge(session: AsyncSession, principal: Principal, page: Page) -> Page:
    """The paged person (or MSP staff working the tenant) acknowledges: no further levels fire."""
    from msp_platform.incidents.service import EventWriter

    _check_page_actor(principal, page)
    repo = EscalationRepository(session)
    escalation = await repo.escalation(page.escalation_id, for_update=True)
    if page.state not in ("triggered",):
        raise Conflict(f"The page is {page.state}.")
    now = utcnow()
    page.state, page.acknowledged_at = "acknowledged", now
    incident = await session.get(Incident, (page.tenant_id, page.incident_id))
    if escalation is not None and escalation.state == ACTIVE:
        escalation.state, escalation.acknowledged_at, escalation.acknowledged_by = (
            ACKNOWLEDGED,
            now,
            principal.key,
        )
        await _stop(session, escalation)
        for other in await repo.pages_of(escalation.id):
            if other.id != page.id and other.state == "triggered":
                other.state = "superseded"
    if incident is not None:
        await EventWriter(session, principal.key)(
            incident,
            "page_acknowledged",
            {"page_id": str(page.id), "escalation_id": str(page.escalation_id), "level": page.level},
            visibility=_internal(),
        )
    await session.flush()
    return page


async def resolve_page(session: AsyncSession, principal: Principal, page: Page) -> Page:
    from msp_platform.incidents.service import EventWriter

    _check_page_actor(principal, page)
    if page.state == "resolved":
        raise Conflict("The page is already resolved.")
    repo = EscalationRepository(session)
    escalation = await repo.escalation(page.escalation_id, for_update=True)
    now = utcnow()
    page.state, page.resolved_at = "resolved", now
    if escalation is not None and escalation.state in (ACTIVE, ACKNOWLEDGED):
        escalation.state, escalation.resolved_at = RESOLVED, now
        await _stop(session, escalation)
    incident = await session.get(Incident, (page.tenant_id, page.incident_id))
    if incident is not None:
        await EventWriter(session, principal.key)(
            incident,
            "page_resolved",
            {"page_id": str(page.id), "escalation_id": str(page.escalation_id)},
            visibility=_internal(),
        )
    await session.flush()
    return page


async def resolve_for_incident(session: AsyncSession, incident: Incident, *, actor: str) -> None:
    """The incident is resolved: its escalations stop."""
    repo = EscalationRepository(session)
    now = utcnow()
    for escalation in await repo.escalations_of(incident.id, active_only=True):
        escalation.state, escalation.resolved_at = RESOLVED, now
        await _stop(session, escalation)
        for page in await repo.pages_of(escalation.id):
            if page.state == "triggered":
                page.state, page.resolved_at = "resolved", now
    await session.flush()


def _check_page_actor(principal: Principal, page: Page) -> None:
    staff = principal.role in (Role.msp_admin, Role.msp_agent)
    addressed = (page.staff_id is not None and principal.staff_id == page.staff_id) or (
        page.user_id is not None and principal.user_id == page.user_id
    )
    if not (staff or addressed):
        raise Forbidden("Only the paged person or MSP staff acknowledge or resolve a page.")


async def get_page(session: AsyncSession, page_id: uuid.UUID, *, for_update: bool = False) -> Page:
    page = await EscalationRepository(session).page(page_id, for_update=for_update)
    if page is None:
        raise NotFound(f"Page {page_id} not found.")
    return page
