"""Escalation policies and the engine that runs them.

A trigger (an incident raised at some priority, out of hours, an SLA warning or breach, all arriving on
the internal event bus) starts an *escalation*: level 0 fires after its delay, paging its targets (people,
a published schedule's current on-call, a tier group, or another policy); nobody acknowledging lets the
next level fire after its delay, and the whole ladder repeats ``repeat_count`` times, a round restarting
at level 0 once the last level had its own delay. Every level is a durable timer (``kit.timers``), so it
fires on time, survives broker outages and fires exactly once; every page is a row unique per
(escalation, level, repeat, person), and every page, skip and acknowledgement is in the incident's event
log.

Rules the engine keeps:
- An escalation runs on the ladder frozen when it started (``Escalation.ladder``): editing, shrinking or
  deleting the policy never changes it.
- One bus event starts a policy at most once per incident, however many of its triggers match; a trigger
  that already started the policy for the incident never starts it again.
- Acknowledging (or resolving) any page of an incident stops every escalation of that incident: other
  triggers, other policies, handover parents and children alike.
- A person already paged for the incident by another escalation within ``DEDUPE_WINDOW`` (the same level
  round of aligned ladders) is not paged twice.
- People are checked when paged: a deactivated user, or staff whose access to the tenant ended, is skipped
  (recorded in the log). A level with nobody to page (a schedule gap, an empty tier, only people without
  access) records why and the next level fires at once: an escalation is never exhausted silently.
- The incident row is locked first by everything that writes its event log or changes its escalations
  (firing, acknowledging, resolving), so those never interleave or deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role
from msp_platform.authz.service import staff_with_access
from msp_platform.escalations.repository import EscalationRepository
from msp_platform.escalations.schemas import PolicyIn, TargetIn
from msp_platform.kit import timers
from msp_platform.kit.errors import Conflict, FieldError, Forbidden, NotFound, PlatformError, ValidationFailed
from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Incident
from msp_platform.models.oncall import Escalation, EscalationLevel, EscalationPolicy, EscalationTarget, Page
from msp_platform.models.tenant import Tenant

if TYPE_CHECKING:
    from msp_platform.incidents.service import EventWriter

log = get_logger(__name__)
TIMER_KIND = "escalation.level"
ACTIVE, ACKNOWLEDGED, RESOLVED, EXHAUSTED = "active", "acknowledged", "resolved", "exhausted"
# Another escalation of the same incident paging the same person this recently is the same level round.
DEDUPE_WINDOW = timedelta(minutes=1)
# A round of a repeating ladder restarts the last level's delay after it fired, at least this much later
# (a ladder of zero delays must not spin).
MIN_ROUND = timedelta(minutes=1)
# A level fired later than this re-bases the ladder on the firing time (after an outage the next level
# still gets its full delay); below it, the next level is due its delay after this one was due, so
# ordinary lateness does not accumulate down the ladder.
REBASE_AFTER = timedelta(minutes=1)
CLOSED_STATES = ("resolved", "closed", "cancelled")


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
        schedule = None if target.schedule_id is None else await repo.schedule(target.schedule_id)
        if schedule is None:
            errors.append(FieldError(f"{where}.schedule_id", "no such schedule"))
        elif schedule.published_version is None and schedule.published_at is None:
            errors.append(
                FieldError(
                    f"{where}.schedule_id",
                    f"schedule {schedule.name!r} is not published; publish it (POST "
                    f"/api/v1/oncall/schedules/{schedule.id}/publish, which runs the gap check) first",
                )
            )
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


GRANTED_KEY = "escalations.granted_staff"


async def granted_staff(session: AsyncSession, tenant_id: uuid.UUID) -> frozenset[uuid.UUID]:
    """Staff who may be paged for the tenant (``authz.service.staff_with_access``), read once per unit of
    work: a job pages and notifies with one answer."""
    cache: dict[uuid.UUID, frozenset[uuid.UUID]] = session.info.setdefault(GRANTED_KEY, {})
    if tenant_id not in cache:
        cache[tenant_id] = frozenset(await staff_with_access(session, tenant_id))
    return cache[tenant_id]


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
    """Deactivate: the policy triggers nothing new and cannot be handed over to; escalations already running
    keep their own (frozen) ladder to the end."""
    policy.active = False
    await session.flush()


# --- ladders (frozen when an escalation starts) --------------------------------------------------------


@dataclass(frozen=True)
class LadderTarget:
    kind: str  # person | schedule | tier_group | policy
    staff_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    schedule_id: uuid.UUID | None = None
    tier: int | None = None
    policy_id: uuid.UUID | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("staff_id", "user_id", "schedule_id", "policy_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        if self.tier is not None:
            out["tier"] = self.tier
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LadderTarget:
        def uid(name: str) -> uuid.UUID | None:
            value = raw.get(name)
            return uuid.UUID(str(value)) if value else None

        tier = raw.get("tier")
        return cls(
            kind=str(raw["kind"]),
            staff_id=uid("staff_id"),
            user_id=uid("user_id"),
            schedule_id=uid("schedule_id"),
            tier=int(tier) if tier is not None else None,
            policy_id=uid("policy_id"),
        )


@dataclass(frozen=True)
class LadderLevel:
    delay_minutes: int
    targets: tuple[LadderTarget, ...]


@dataclass(frozen=True)
class Ladder:
    policy: str
    repeat_count: int
    levels: tuple[LadderLevel, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "repeat_count": self.repeat_count,
            "levels": [
                {"delay_minutes": lv.delay_minutes, "targets": [t.as_json() for t in lv.targets]}
                for lv in self.levels
            ],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Ladder:
        return cls(
            policy=str(raw.get("policy", "")),
            repeat_count=int(raw.get("repeat_count", 0)),
            levels=tuple(
                LadderLevel(
                    int(lv["delay_minutes"]), tuple(LadderTarget.from_json(t) for t in lv.get("targets", []))
                )
                for lv in raw.get("levels", [])
            ),
        )


async def policy_ladder(session: AsyncSession, policy: EscalationPolicy) -> Ladder:
    """The policy's ladder as it is now."""
    repo = EscalationRepository(session)
    levels = await repo.levels(policy.id)
    targets = await repo.targets([lv.id for lv in levels])
    return Ladder(
        policy=policy.name,
        repeat_count=policy.repeat_count,
        levels=tuple(
            LadderLevel(
                lv.delay_minutes,
                tuple(
                    LadderTarget(
                        kind=t.kind,
                        staff_id=t.staff_id,
                        user_id=t.user_id,
                        schedule_id=t.schedule_id,
                        tier=t.tier,
                        policy_id=t.target_policy_id,
                    )
                    for t in targets
                    if t.level_id == lv.id
                ),
            )
            for lv in levels
        ),
    )


async def ladder_of(session: AsyncSession, escalation: Escalation) -> Ladder:
    """The escalation's frozen ladder (an escalation from before ladders were frozen freezes its policy's
    current one now)."""
    if escalation.ladder is None:
        policy = await EscalationRepository(session).policy(escalation.policy_id)
        ladder = await policy_ladder(session, policy) if policy else Ladder("", 0, ())
        escalation.ladder = ladder.as_json()
        return ladder
    return Ladder.from_json(escalation.ladder)


# --- triggers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaAnnouncement:
    """What an ``incident.sla_warning`` / ``incident.sla_breached`` event says (the SLA engine's contract)."""

    target: str | None
    percent: int | None
    cycle: int
    late: bool

    @classmethod
    def of(cls, payload: dict[str, Any]) -> SlaAnnouncement:
        data = payload.get("data") or {}
        target = data.get("target")

        def number(value: Any) -> int | None:
            try:
                return int(value) if value is not None else None
            except (TypeError, ValueError):
                return None

        return cls(
            target=str(target) if target is not None else None,
            percent=number(data.get("percent")),
            cycle=number(data.get("cycle")) or 0,
            late=bool(data.get("late")),
        )

    def wanted_by(self, trigger: dict[str, Any]) -> bool:
        """A trigger naming a target wants that target; one naming none wants response and resolution (a
        missed public update escalates only when asked for, with ``target: update``)."""
        named = trigger.get("target")
        return self.target == named if named else self.target in ("response", "resolution")

    @property
    def round(self) -> str:
        # Each missed update (cycle) is a new miss that may escalate again.
        return f":{self.cycle}" if self.target == "update" else ""


def _matches(
    trigger: dict[str, Any], event_type: str, payload: dict[str, Any], after_hours: bool
) -> str | None:
    """The trigger key if ``trigger`` fires for this bus event (one key starts a policy once per incident)."""
    kind = trigger.get("type")
    priorities = trigger.get("priorities")
    if kind == "incident_created" and event_type == "incident.created":
        if priorities and payload.get("priority") not in priorities:
            return None
        return "created"
    if kind == "incident_created" and event_type == "incident.reopened":
        # The fix did not hold: a reopened incident is escalated again, once per reopening.
        if priorities and payload.get("priority") not in priorities:
            return None
        return f"reopened:{(payload.get('data') or {}).get('reopen_count', 0)}"
    if kind == "incident_created" and event_type == "incident.priority_changed" and priorities:
        # An incident raised into the policy's priorities later (a P3 that turns out to be the whole ED) is
        # escalated as if it had been opened at that priority: once per incident, never after "created".
        data = payload.get("data") or {}
        if data.get("to") in priorities and data.get("from") not in priorities:
            return "raised"
        return None
    if kind == "after_hours" and event_type == "incident.created" and after_hours:
        if priorities and payload.get("priority") not in priorities:
            return None
        return "after_hours"
    if kind == "sla_warning" and event_type == "incident.sla_warning":
        sla = SlaAnnouncement.of(payload)
        wanted = trigger.get("percent")
        # The first warning announced at or above the trigger's threshold starts it (the SLA policy's own
        # thresholds need not include the trigger's percent); later, higher ones find the key used. A warning
        # announced late (an outage) pages nobody: the breach, always announced, still escalates.
        if sla.late or sla.percent is None or wanted is None or sla.percent < int(wanted):
            return None
        if not sla.wanted_by(trigger):
            return None
        return f"sla_warning:{sla.target}:{wanted}{sla.round}"
    if kind == "sla_breached" and event_type == "incident.sla_breached":
        sla = SlaAnnouncement.of(payload)
        if not sla.wanted_by(trigger):
            return None
        return f"sla_breached:{sla.target}{sla.round}"
    return None


def _after_hours(tenant: Tenant, at: datetime) -> bool:
    from msp_platform.kit.calendar import parse_calendar

    hours = (tenant.business_calendar or {}).get("hours") or []
    if not hours:
        return False  # a 24x7 tenant has no "after hours"
    try:
        holidays = [
            h["date"] if isinstance(h, dict) else h
            for h in (tenant.business_calendar or {}).get("holidays") or []
        ]
        return not parse_calendar(tenant.timezone, hours, holidays).is_open(at)
    except Exception as exc:  # an unreadable calendar must not silence after-hours paging
        log.warning(
            "business calendar unreadable; treating the incident as raised after hours (paging is safer)",
            tenant_id=str(tenant.id),
            error=str(exc),
        )
        return True


async def on_incident_event(
    session: AsyncSession, event_type: str, occurred_at: datetime, payload: dict[str, Any]
) -> list[Escalation]:
    """Start the escalations this event triggers (idempotent: a trigger starts a policy once per incident)."""
    repo = EscalationRepository(session)
    incident = await repo.incident(uuid.UUID(payload["incident_id"]), for_update=True)
    if incident is None:
        return []
    if event_type == "incident.state_changed" and payload.get("data", {}).get("to") in CLOSED_STATES:
        # Jobs of one incident may run out of order: when the incident was reopened (and escalated again)
        # before this job ran, the escalations started after the resolution are not this event's to end.
        seq = payload.get("seq")
        spare = await repo.escalations_started_after(incident.id, int(seq)) if seq is not None else set()
        await resolve_for_incident(
            session, incident, actor="system:incident-" + str(payload["data"]["to"]), spare=spare
        )
        return []
    if str(getattr(incident.state, "value", incident.state)) in CLOSED_STATES:
        return []
    tenant = await session.get(Tenant, incident.tenant_id)
    assert tenant is not None
    after_hours: bool | None = None
    started: list[Escalation] = []
    for policy in await repo.active_policies():
        keys: list[str] = []
        first_type = ""
        for trigger in policy.triggers:
            if trigger.get("type") == "after_hours" and after_hours is None:
                after_hours = event_type == "incident.created" and _after_hours(tenant, occurred_at)
            key = _matches(trigger, event_type, payload, bool(after_hours))
            if key is not None and key not in keys:
                keys.append(key)
                first_type = first_type or str(trigger["type"])
        if not keys:
            continue
        used = {
            k
            for e in await repo.escalations_of(incident.id, policy_id=policy.id)
            for k in e.trigger_key.split("+")
        }
        # "raised" is "created" reached late: either one starts the policy once per incident.
        fresh = [k for k in keys if k not in used and not (k == "raised" and "created" in used)]
        if not fresh:
            continue
        started.append(
            await start(session, incident, policy, trigger=first_type, trigger_key="+".join(fresh)[:80])
        )
    return started


async def start(
    session: AsyncSession,
    incident: Incident,
    policy: EscalationPolicy,
    *,
    trigger: str,
    trigger_key: str,
    write: EventWriter | None = None,
    at: datetime | None = None,
    handover_from: uuid.UUID | None = None,
) -> Escalation:
    """Start ``policy`` for ``incident`` on its current ladder, frozen from now on. ``write``: the caller's
    event writer when it writes to the same incident's log in this unit of work (one sequence counter)."""
    from msp_platform.incidents.service import EventWriter

    ladder = await policy_ladder(session, policy)
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
        ladder=ladder.as_json(),
    )
    session.add(escalation)
    await session.flush()
    write = write or EventWriter(session, "system:escalation")
    data: dict[str, Any] = {
        "escalation_id": str(escalation.id),
        "policy": policy.name,
        "policy_id": str(policy.id),
        "trigger": trigger_key,
    }
    if handover_from is not None:
        data["handover_from"] = str(handover_from)
    await write(incident, "escalation_started", data, visibility=_internal())
    if ladder.levels:
        due = (at or now) + timedelta(minutes=ladder.levels[0].delay_minutes)
        await _schedule_level(session, escalation, 0, 0, due)
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
        payload={"level": level, "repeat": repeat, "incident_id": str(escalation.incident_id)},
    )


# --- who a level pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A target or person a level could not page, and why (recorded in the incident's log)."""

    who: str  # "staff:<id>", "user:<id>", "schedule:<id>", "tier:<n>", "policy:<id>"
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"who": self.who, "reason": self.reason}


class Resolver:
    """Resolves a level's targets to the people to page now, checking each person's access at this moment."""

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID, at: datetime) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.at = at
        self.repo = EscalationRepository(session)
        self._granted_set: frozenset[uuid.UUID] | None = session.info.get(GRANTED_KEY, {}).get(tenant_id)

    async def granted(self) -> frozenset[uuid.UUID]:
        """Everyone with access (for tier groups): read once for the unit of work."""
        self._granted_set = await granted_staff(self.session, self.tenant_id)
        return self._granted_set

    async def check(self, person: Person) -> str | None:
        """Why this person cannot be paged now (None: they can)."""
        if person.staff_id is not None:
            if self._granted_set is None:
                # One statement for this person (the row stays in the session for the notification).
                allowed = await self.repo.staff_who_may_be_paged(self.tenant_id, [person.staff_id])
                if person.staff_id not in allowed:
                    return "no longer has access to this tenant (grant revoked or staff deactivated)"
            elif person.staff_id not in self._granted_set:
                return "no longer has access to this tenant (grant revoked or staff deactivated)"
            return None
        if person.user_id is None or not await self.repo.user_active(person.user_id):
            return "the user is deactivated"
        return None

    async def resolve(self, targets: tuple[LadderTarget, ...]) -> tuple[list[Person], list[Skipped]]:
        from msp_platform.oncall import service as oncall

        candidates: list[tuple[Person, str]] = []
        skipped: list[Skipped] = []
        for target in targets:
            if target.kind == "person":
                candidates.append((Person(target.staff_id, target.user_id), ""))
            elif target.kind == "schedule" and target.schedule_id is not None:
                answer = await oncall.paging_on_call(self.session, target.schedule_id, self.at)
                if not answer.people:
                    skipped.append(
                        Skipped(f"schedule:{target.schedule_id}", answer.reason or "nobody on call")
                    )
                candidates += [
                    (Person(who.staff_id, who.user_id), f" (on call in {answer.schedule_name})")
                    for who in answer.people
                ]
            elif target.kind == "tier_group" and target.tier is not None:
                granted = await self.granted()
                tier = [s for s in await self.repo.tier_staff(target.tier) if s.id in granted]
                if not tier:
                    skipped.append(
                        Skipped(
                            f"tier:{target.tier}", f"nobody of tier {target.tier} has access to this tenant"
                        )
                    )
                candidates += [(Person(staff_id=s.id), "") for s in tier]
        people: list[Person] = []
        for person, via in candidates:
            if person in people or any(s.who == person.key for s in skipped):
                continue
            reason = await self.check(person)
            if reason is None:
                people.append(person)
            else:
                skipped.append(Skipped(person.key, reason + via))
        return people, skipped


async def resolve_targets(
    session: AsyncSession, tenant: Tenant, targets: list[EscalationTarget], at: datetime
) -> list[Person]:
    """The people a level of ``targets`` pages right now (people without access left out)."""
    ladder_targets = tuple(
        LadderTarget(t.kind, t.staff_id, t.user_id, t.schedule_id, t.tier, t.target_policy_id)
        for t in targets
    )
    people, _ = await Resolver(session, tenant.id, at).resolve(ladder_targets)
    return people


# --- firing a level --------------------------------------------------------------------------------------


@timers.timer_handler(TIMER_KIND)
async def fire_level(job: Any, timer: Any) -> None:
    session: AsyncSession = job.session
    repo = EscalationRepository(session)
    incident_id = timer.payload.get("incident_id")
    if incident_id is None:  # a timer scheduled before timers named their incident
        found = await repo.escalation(timer.subject_id)
        if found is None or found.state != ACTIVE:
            return
        incident_id = found.incident_id
    # The incident's lock serialises everything that changes its escalations (firing, acknowledging,
    # resolving), so the escalation read after it is current.
    incident = await repo.incident(uuid.UUID(str(incident_id)), for_update=True)
    escalation = await repo.escalation(timer.subject_id, fresh=True)
    if incident is None or escalation is None or escalation.state != ACTIVE:
        return
    level_no, repeat = int(timer.payload["level"]), int(timer.payload["repeat"])
    pages = await fire(session, escalation, level_no, repeat, incident=incident, due_at=timer.due_at)
    if pages:
        from msp_platform.integrations.channels import queue_page_notifications

        # In the same unit of work: the page and its queued notifications commit together.
        for page in pages:
            await queue_page_notifications(
                session, page.id, settings=job.settings, page=page, incident=incident
            )


@dataclass
class _LevelOutcome:
    pages: list[Page]
    reached: bool
    skipped: list[Skipped]


async def _page_level(
    session: AsyncSession,
    write: EventWriter,
    resolver: Resolver,
    incident: Incident,
    escalation: Escalation,
    level: LadderLevel,
    level_no: int,
    repeat: int,
    base: datetime,
) -> _LevelOutcome:
    repo = EscalationRepository(session)
    people, skipped = await resolver.resolve(level.targets)
    outcome = _LevelOutcome([], False, skipped)
    for person in people:
        earlier = await repo.earlier_page(
            incident.id,
            escalation.id,
            level_no,
            repeat,
            person.staff_id,
            person.user_id,
            since=resolver.at - DEDUPE_WINDOW,
        )
        if earlier is not None:
            outcome.reached = True
            if earlier.escalation_id != escalation.id:
                skipped.append(
                    Skipped(person.key, f"already paged for this incident (page {earlier.id}) in this round")
                )
            continue  # else this level paged them already (exactly once)
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
        outcome.pages.append(page)
        outcome.reached = True
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
    for target in level.targets:
        if target.kind != "policy" or target.policy_id is None:
            continue
        child = await repo.policy(target.policy_id)
        if child is None or not child.active:
            skipped.append(Skipped(f"policy:{target.policy_id}", "the policy was deleted (deactivated)"))
            continue
        key = f"handover:{escalation.id}:{level_no}:{repeat}"
        if await repo.existing(incident.id, child.id, key) is None:
            await start(
                session,
                incident,
                child,
                trigger="handover",
                trigger_key=key,
                write=write,
                at=base,
                handover_from=escalation.id,
            )
        outcome.reached = True
    await session.flush()
    return outcome


async def fire(
    session: AsyncSession,
    escalation: Escalation,
    level_no: int,
    repeat: int,
    *,
    incident: Incident | None = None,
    due_at: datetime | None = None,
) -> list[Page]:
    """Fire level ``level_no`` of round ``repeat``: page its people, hand over to its policies, and schedule
    what comes next. A level with nobody to page records why and the next level fires at once. The caller
    holds the incident's lock (``fire_level``)."""
    from msp_platform.incidents.service import EventWriter

    repo = EscalationRepository(session)
    incident = incident or await repo.incident(escalation.incident_id, for_update=True)
    if incident is None:
        return []
    now = utcnow()
    if str(getattr(incident.state, "value", incident.state)) in CLOSED_STATES:
        # Resolved while the timer was on its way (the resolving event's job had not run yet).
        await resolve_for_incident(session, incident, actor="system:escalation")
        return []
    ladder = await ladder_of(session, escalation)
    write = EventWriter(session, "system:escalation")
    base = due_at if due_at is not None and now - due_at <= REBASE_AFTER else now
    resolver = Resolver(session, escalation.tenant_id, now)
    pages: list[Page] = []
    outcome: _LevelOutcome | None = None
    level_no = min(level_no, len(ladder.levels))
    while level_no < len(ladder.levels):
        level = ladder.levels[level_no]
        outcome = await _page_level(
            session, write, resolver, incident, escalation, level, level_no, repeat, base
        )
        pages += outcome.pages
        last = level_no + 1 >= len(ladder.levels)
        if outcome.reached:
            if outcome.skipped:
                await write(
                    incident,
                    "pages_skipped",
                    {
                        "escalation_id": str(escalation.id),
                        "level": level_no,
                        "repeat": repeat,
                        "skipped": [s.as_json() for s in outcome.skipped],
                    },
                    visibility=_internal(),
                )
            break
        await write(
            incident,
            "escalation_level_skipped",
            {
                "escalation_id": str(escalation.id),
                "level": level_no,
                "repeat": repeat,
                "reason": "nobody to page at this level",
                "skipped": [s.as_json() for s in outcome.skipped],
                "then": "the ladder ends" if last else f"level {level_no + 2} fires now",
            },
            visibility=_internal(),
        )
        if last:
            break
        level_no += 1
    escalation.level, escalation.repeat = min(level_no, max(len(ladder.levels) - 1, 0)), repeat
    if level_no + 1 < len(ladder.levels):
        due = base + timedelta(minutes=ladder.levels[level_no + 1].delay_minutes)
        await _schedule_level(session, escalation, level_no + 1, repeat, due)
    elif repeat < ladder.repeat_count and ladder.levels:
        last_delay = timedelta(minutes=ladder.levels[-1].delay_minutes)
        await _schedule_level(session, escalation, 0, repeat + 1, base + max(last_delay, MIN_ROUND))
    else:
        escalation.state = EXHAUSTED
        total = len(pages) or await repo.page_count(escalation.id)
        await write(
            incident,
            "escalation_exhausted",
            {
                "escalation_id": str(escalation.id),
                "paged_anyone": total > 0,
                "reason": "nobody was paged: every level was skipped"
                if total == 0
                else "no page was acknowledged",
            },
            visibility=_internal(),
        )
    log.info(
        "escalation level fired",
        escalation_id=str(escalation.id),
        level=level_no,
        repeat=repeat,
        pages=len(pages),
        lateness_seconds=round((now - due_at).total_seconds(), 3) if due_at else None,
    )
    return pages


# --- acknowledging and resolving -------------------------------------------------------------------------


async def _stop_all(
    session: AsyncSession,
    incident: Incident,
    *,
    state: str,
    by: str | None,
    now: datetime,
    keep_page: uuid.UUID | None = None,
    spare: Collection[uuid.UUID] = (),
) -> list[Escalation]:
    """Stop every running escalation of the incident (all triggers, policies, handovers) but those in
    ``spare``: their pending levels are cancelled and their other unanswered pages superseded (or resolved)."""
    repo = EscalationRepository(session)
    states = (ACTIVE,) if state == ACKNOWLEDGED else (ACTIVE, ACKNOWLEDGED)
    running = await repo.escalations_of(incident.id, states=states, for_update=True)
    stopped = [e for e in running if e.id not in spare]
    for escalation in stopped:
        if state == ACKNOWLEDGED:
            escalation.state, escalation.acknowledged_at, escalation.acknowledged_by = state, now, by
        else:
            escalation.state, escalation.resolved_at = state, now
        await timers.cancel(session, kind=TIMER_KIND, subject_id=escalation.id)
    others = [
        p.id
        for p in await repo.triggered_pages_of_incident(incident.id)
        if p.id != keep_page and p.escalation_id not in spare
    ]
    await repo.supersede_pages(others, "superseded" if state == ACKNOWLEDGED else "resolved", now)
    return stopped


async def acknowledge(session: AsyncSession, principal: Principal, page: Page) -> Page:
    """The paged person (or MSP staff working the tenant) acknowledges: every escalation of the incident
    stops, so nobody else is paged for it."""
    from msp_platform.incidents.service import EventWriter

    _check_page_actor(principal, page)
    repo = EscalationRepository(session)
    incident = await repo.incident(page.incident_id, for_update=True)
    locked = await repo.page(page.id, for_update=True)
    assert locked is not None
    page = locked
    if page.state != "triggered":
        raise Conflict(f"The page is {page.state}.")
    now = utcnow()
    page.state, page.acknowledged_at = "acknowledged", now
    assert incident is not None  # a composite foreign key holds it
    stopped = await _stop_all(
        session, incident, state=ACKNOWLEDGED, by=principal.key, now=now, keep_page=page.id
    )
    await EventWriter(session, principal.key)(
        incident,
        "page_acknowledged",
        {
            "page_id": str(page.id),
            "escalation_id": str(page.escalation_id),
            "level": page.level,
            "stopped": [str(e.id) for e in stopped],
        },
        visibility=_internal(),
    )
    await _take(session, principal, incident)
    await session.flush()
    return page


async def _take(session: AsyncSession, principal: Principal, incident: Incident) -> None:
    """Acknowledging is "I have it": MSP staff acknowledging an incident nobody is assigned to become its
    assignee (a new incident moves to assigned), through the same rules as any assignment. When those rules
    say no (not a member of the incident's group, the incident is merged or closed), the acknowledgement still
    stands and the incident is left as it is."""
    from msp_platform.incidents.service import update_incident

    if principal.staff_id is None or incident.assignee_id is not None:
        return
    try:
        # Every refusal is raised before anything is written, so nothing is left half-done.
        await update_incident(session, principal, incident, {"assignee_id": principal.staff_id})
    except PlatformError as exc:
        log.info(
            "page acknowledged; the incident stays unassigned",
            incident_id=str(incident.id),
            reason=exc.detail,
        )


async def resolve_page(session: AsyncSession, principal: Principal, page: Page) -> Page:
    """Resolve a page: every escalation of the incident ends (the incident itself stays as it is)."""
    from msp_platform.incidents.service import EventWriter

    _check_page_actor(principal, page)
    repo = EscalationRepository(session)
    incident = await repo.incident(page.incident_id, for_update=True)
    locked = await repo.page(page.id, for_update=True)
    assert locked is not None
    page = locked
    if page.state == "resolved":
        raise Conflict("The page is already resolved.")
    now = utcnow()
    page.state, page.resolved_at = "resolved", now
    assert incident is not None  # a composite foreign key holds it
    stopped = await _stop_all(session, incident, state=RESOLVED, by=principal.key, now=now, keep_page=page.id)
    await EventWriter(session, principal.key)(
        incident,
        "page_resolved",
        {
            "page_id": str(page.id),
            "escalation_id": str(page.escalation_id),
            "stopped": [str(e.id) for e in stopped],
        },
        visibility=_internal(),
    )
    await session.flush()
    return page


async def resolve_for_incident(
    session: AsyncSession, incident: Incident, *, actor: str, spare: Collection[uuid.UUID] = ()
) -> None:
    """The incident is resolved: its escalations (but those in ``spare``) stop."""
    await _stop_all(session, incident, state=RESOLVED, by=actor, now=utcnow(), spare=spare)
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
