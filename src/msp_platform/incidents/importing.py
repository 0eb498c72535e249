"""Imported history: incidents from another ticket system, each with its original opening time and its events
at their original times, so SLA clocks computed from the log measure what really happened.

Every incident of a batch is checked before anything is stored: the references (callers, devices, sites of
this tenant; staff; assignment groups), the timestamps (with a UTC offset, in time order, not in the future)
and the history itself, replayed through the same state machine and transition rules as live work. Then the
good ones get numbers from the tenant's gap-free counter and are stored in one flush: ``mode=atomic`` stores
nothing if any incident is invalid (422 with a per-event report), ``mode=partial`` stores the valid ones.

Re-importing is idempotent on (source system, external id): a known incident is reported as ``skipped``
with the incident it already is. Imported events are marked ``imported`` and are not published one by one
(they happened long ago: no escalation, SLA warning or webhook should react to them); each incident gets one
live ``imported`` event on the bus, and its SLA clocks are computed at once.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label
from msp_platform.auth.principal import Principal
from msp_platform.authz.types import AccessibleTenantId
from msp_platform.incidents import state as sm
from msp_platform.incidents.priority import Matrix
from msp_platform.incidents.repository import IncidentRepository
from msp_platform.incidents.schemas import (
    ImportedEventIn,
    ImportRowError,
    ImportRowOut,
    IncidentImportIn,
    IncidentImportReport,
    TransitionIn,
)
from msp_platform.incidents.service import (
    EventWriter,
    apply_move,
    current_matrix,
    reopen,
    transition_errors,
)
from msp_platform.kit.bulk import IMPORT_FAILED, ImportMode
from msp_platform.kit.errors import NotFound, ValidationFailed
from msp_platform.kit.ids import new_id
from msp_platform.kit.params import EARLIEST
from msp_platform.kit.time import utcnow
from msp_platform.models.assignment_group import AssignmentGroup
from msp_platform.models.incident import (
    Incident,
    IncidentComment,
    IncidentState,
    Visibility,
)
from msp_platform.models.staff import StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User
from msp_platform.sla import service as sla_service

MAX_INCIDENTS = 500

# The fields each kind of imported event may carry (any other one is refused, not silently ignored).
EVENT_FIELDS: dict[str, frozenset[str]] = {
    "assigned": frozenset({"assignee_id", "assignment_group_id"}),
    "state_changed": frozenset({"to", "reason", "on_hold_reason", "resolution_code", "resolution_notes"}),
    "priority_changed": frozenset({"impact", "urgency", "patient_care_impact"}),
    "tier_changed": frozenset({"tier"}),
    "commented": frozenset({"body", "visibility"}),
    "responded": frozenset(),
}
_TYPED_FIELDS = frozenset().union(*EVENT_FIELDS.values())


class IncidentImportFailed(ValidationFailed):
    problem = IMPORT_FAILED

    def __init__(self, report: IncidentImportReport) -> None:
        super().__init__(
            f"{report.failed} of {report.total} incidents are invalid; nothing was stored (mode=atomic).",
            extra={"report": msgspec.to_builtins(report)},
        )


@dataclass
class _Step:
    type: str
    at: datetime
    actor: str
    data: dict[str, Any]
    visibility: Visibility = Visibility.public
    comment: IncidentComment | None = None


@dataclass
class _Plan:
    row: int
    item: IncidentImportIn
    incident: Incident
    steps: list[_Step] = field(default_factory=list)


@dataclass
class _Known:
    """What the batch refers to, looked up once for the whole batch."""

    tenant_id: uuid.UUID
    users: dict[uuid.UUID, User]
    devices: set[uuid.UUID]
    sites: set[uuid.UUID]
    staff: dict[uuid.UUID, StaffMember]
    granted: set[uuid.UUID]
    groups: dict[uuid.UUID, AssignmentGroup]
    matrix: Matrix
    sla_version: int | None
    now: datetime


def _actor(source: str, staff_id: uuid.UUID | None, user_id: uuid.UUID | None, name: str | None) -> str:
    if staff_id is not None:
        return f"staff:{staff_id}"
    if user_id is not None:
        return f"user:{user_id}"
    return (f"import:{source}:{name}" if name else f"import:{source}")[:160]


def _s(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _sent(value: Any) -> bool:
    return value is not None and value is not msgspec.UNSET


class _Replay:
    """Replays one imported incident's history on a new (not yet stored) Incident, collecting the events to
    write and every problem found, named by field (``events[3].to``)."""

    def __init__(self, row: int, item: IncidentImportIn, known: _Known) -> None:
        self.item = item
        self.known = known
        self.errors: list[ImportRowError] = []
        self.plan: _Plan | None = None
        self.row = row

    def error(self, name: str, message: str) -> None:
        self.errors.append(ImportRowError(name, message))

    def instant(self, name: str, value: datetime) -> bool:
        if value.tzinfo is None or value.utcoffset() is None:
            self.error(name, "must carry a UTC offset, e.g. 2019-03-01T08:00:00Z")
        elif value < EARLIEST:
            self.error(name, "must not be before 1900")
        elif value > self.known.now:
            self.error(name, "lies in the future")
        else:
            return True
        return False

    def who(self, prefix: str, staff_id: uuid.UUID | None, user_id: uuid.UUID | None) -> None:
        """The actor: one of our staff, a user of this tenant, or (neither) a name in the source system."""
        if staff_id is not None and user_id is not None:
            self.error(f"{prefix}user_id", "name the actor as a staff member or as a user, not both")
        if staff_id is not None and staff_id not in self.known.staff:
            self.error(f"{prefix}staff_id", "no such staff member")
        if user_id is not None and user_id not in self.known.users:
            self.error(f"{prefix}user_id", "no such user")

    def run(self) -> _Plan | None:
        item, known = self.item, self.known
        if not item.title.strip():
            self.error("title", "must not be empty")
        caller = known.users.get(item.caller_id) if item.caller_id is not None else None
        if item.caller_id is not None and caller is None:
            self.error("caller_id", "no such user")
        if item.affected_device_id is not None and item.affected_device_id not in known.devices:
            self.error("affected_device_id", "no such device")
        if item.site_id is not None and item.site_id not in known.sites:
            self.error("site_id", "no such site")
        self.who("opened_by_", item.opened_by_staff_id, item.opened_by_user_id)
        opened_ok = self.instant("opened_at", item.opened_at)
        vip = bool(caller and caller.vip)
        incident = Incident(
            id=new_id(),
            tenant_id=known.tenant_id,
            title=item.title.strip(),
            description=item.description,
            caller_id=item.caller_id,
            reported_by=_actor(
                item.external_source, item.opened_by_staff_id, item.opened_by_user_id, item.opened_by
            ),
            affected_device_id=item.affected_device_id,
            site_id=item.site_id,
            category=item.category,
            subcategory=item.subcategory,
            channel=item.channel,
            impact=item.impact,
            urgency=item.urgency,
            patient_care_impact=item.patient_care_impact,
            priority=known.matrix.priority(
                item.impact, item.urgency, patient_care=item.patient_care_impact, vip=vip
            ),
            priority_matrix_version=known.matrix.version,
            tier=item.tier,
            state=IncidentState.new,
            opened_at=item.opened_at,
            reopen_count=0,
            first_contact_resolution=False,
            external_source=item.external_source,
            external_id=item.external_id,
            legacy_number=item.legacy_number,
            version=1,
            sla_policy_version=known.sla_version,
        )
        plan = _Plan(self.row, item, incident)
        plan.steps.append(
            _Step(
                "created",
                item.opened_at,
                incident.reported_by,
                {
                    "state": IncidentState.new.value,
                    "priority": incident.priority,
                    "impact": incident.impact,
                    "urgency": incident.urgency,
                    "patient_care_impact": incident.patient_care_impact,
                    "tier": incident.tier,
                    "channel": incident.channel.value,
                    "priority_matrix_version": incident.priority_matrix_version,
                    "external_source": item.external_source,
                    "external_id": item.external_id,
                    "legacy_number": item.legacy_number,
                },
            )
        )
        explicit_response = any(e.type == "responded" for e in item.events)
        last = item.opened_at if opened_ok else None
        for j, event in enumerate(item.events):
            name = f"events[{j}]"
            if self.instant(f"{name}.at", event.at):
                if last is not None and event.at < last:
                    self.error(
                        f"{name}.at", f"is before the previous event or the opening ({last.isoformat()})"
                    )
                else:
                    last = event.at
            self.who(f"{name}.", event.staff_id, event.user_id)
            unexpected = sorted(
                n for n in _TYPED_FIELDS - EVENT_FIELDS[event.type] if _sent(getattr(event, n))
            )
            for extra in unexpected:
                self.error(f"{name}.{extra}", f"does not apply to a {event.type} event")
            if unexpected:
                continue
            actor = _actor(item.external_source, event.staff_id, event.user_id, event.actor)
            getattr(self, f"_{event.type}")(plan, name, event, actor, explicit_response)
        if self.errors:
            return None
        return plan

    def _open(self, plan: _Plan, name: str) -> bool:
        if plan.incident.state in sm.FINAL_STATES:
            self.error(name, f"the incident is {plan.incident.state.value} by then; only comments may follow")
            return False
        return True

    def _assigned(self, plan: _Plan, name: str, e: ImportedEventIn, actor: str, _: bool) -> None:
        incident, known = plan.incident, self.known
        if e.assignee_id is msgspec.UNSET and e.assignment_group_id is msgspec.UNSET:
            self.error(name, "an assigned event names assignee_id and/or assignment_group_id")
            return
        if not self._open(plan, name):
            return
        group: AssignmentGroup | None = None
        if isinstance(e.assignment_group_id, uuid.UUID):
            group = known.groups.get(e.assignment_group_id)
            if group is None:
                self.error(f"{name}.assignment_group_id", "no such assignment group")
            elif not group.serves(known.tenant_id):
                self.error(f"{name}.assignment_group_id", f"{group.name} does not work for this tenant")
        if isinstance(e.assignee_id, uuid.UUID):
            if e.assignee_id not in known.staff:
                self.error(f"{name}.assignee_id", "no such staff member")
            elif e.assignee_id not in known.granted:
                self.error(f"{name}.assignee_id", "is not granted this tenant")
        previous = {
            "assignee_id": _s(incident.assignee_id),
            "assignment_group_id": _s(incident.assignment_group_id),
        }
        if e.assignee_id is not msgspec.UNSET:
            incident.assignee_id = e.assignee_id
        if e.assignment_group_id is not msgspec.UNSET:
            incident.assignment_group_id = e.assignment_group_id
        if group is None and incident.assignment_group_id is not None:
            group = known.groups.get(incident.assignment_group_id)
        plan.steps.append(
            _Step(
                "assigned",
                e.at,
                actor,
                {
                    "assignee_id": _s(incident.assignee_id),
                    "assignment_group_id": _s(incident.assignment_group_id),
                    "assignment_group": group.name if group else None,
                    "previous": previous,
                },
            )
        )

    def _state_changed(self, plan: _Plan, name: str, e: ImportedEventIn, actor: str, explicit: bool) -> None:
        incident = plan.incident
        if e.to is None:
            self.error(f"{name}.to", "is required for a state_changed event")
            return
        current, target = incident.state, e.to
        if not sm.can(current, target):
            allowed = ", ".join(sorted(s.value for s in sm.allowed(current))) or "none"
            self.error(f"{name}.to", f"{current.value} -> {target.value} is not allowed (allowed: {allowed})")
            return
        move = TransitionIn(
            to=target,
            reason=e.reason,
            on_hold_reason=e.on_hold_reason,
            resolution_code=e.resolution_code,
            resolution_notes=e.resolution_notes,
        )
        problems = transition_errors(incident, move)
        for problem in problems:
            self.error(f"{name}.{problem.field}", problem.message)
        if problems:
            return
        extra = apply_move(incident, move, e.at)
        reopened = reopen(incident) if sm.is_reopen(current, target) else None
        incident.state = target
        plan.steps.append(
            _Step("state_changed", e.at, actor, {"from": current.value, "to": target.value, **extra})
        )
        if reopened is not None:
            plan.steps.append(_Step("reopened", e.at, actor, reopened | extra))
        if (
            not explicit
            and incident.first_response_at is None
            and target in (IncidentState.in_progress, IncidentState.resolved)
        ):
            incident.first_response_at = e.at
            plan.steps.append(_Step("responded", e.at, actor, {"via": f"state:{target.value}"}))

    def _priority_changed(self, plan: _Plan, name: str, e: ImportedEventIn, actor: str, _: bool) -> None:
        incident, known = plan.incident, self.known
        if e.impact is None and e.urgency is None and e.patient_care_impact is None:
            self.error(name, "a priority_changed event names impact, urgency and/or patient_care_impact")
            return
        if not self._open(plan, name):
            return
        incident.impact = e.impact or incident.impact
        incident.urgency = e.urgency or incident.urgency
        if e.patient_care_impact is not None:
            incident.patient_care_impact = e.patient_care_impact
        caller = known.users.get(incident.caller_id) if incident.caller_id else None
        before = incident.priority
        incident.priority = known.matrix.priority(
            incident.impact,
            incident.urgency,
            patient_care=incident.patient_care_impact,
            vip=bool(caller and caller.vip),
        )
        plan.steps.append(
            _Step(
                "priority_changed",
                e.at,
                actor,
                {
                    "from": before,
                    "to": incident.priority,
                    "matrix_version": known.matrix.version,
                    "impact": incident.impact,
                    "urgency": incident.urgency,
                    "patient_care_impact": incident.patient_care_impact,
                },
            )
        )

    def _tier_changed(self, plan: _Plan, name: str, e: ImportedEventIn, actor: str, _: bool) -> None:
        incident = plan.incident
        if e.tier is None:
            self.error(f"{name}.tier", "is required for a tier_changed event")
            return
        if e.tier == incident.tier:
            self.error(f"{name}.tier", f"the incident is at tier {e.tier} already")
            return
        if not self._open(plan, name):
            return
        kind = "tier_escalated" if e.tier > incident.tier else "tier_deescalated"
        plan.steps.append(_Step(kind, e.at, actor, {"from": incident.tier, "to": e.tier}))
        incident.tier = e.tier

    def _commented(self, plan: _Plan, name: str, e: ImportedEventIn, actor: str, explicit: bool) -> None:
        incident = plan.incident
        if not (e.body or "").strip():
            self.error(f"{name}.body", "a commented event needs the comment's text")
            return
        visibility = e.visibility or Visibility.public
        comment = IncidentComment(
            id=new_id(),
            tenant_id=incident.tenant_id,
            incident_id=incident.id,
            author=actor,
            author_name=e.actor,
            body=e.body,
            visibility=visibility,
            created_at=e.at,
            updated_at=e.at,
        )
        plan.steps.append(
            _Step(
                "commented",
                e.at,
                actor,
                {"comment_id": str(comment.id), "visibility": visibility.value},
                visibility=visibility,
                comment=comment,
            )
        )
        if (
            not explicit
            and visibility is Visibility.public
            and e.staff_id is not None
            and incident.first_response_at is None
        ):
            incident.first_response_at = e.at
            plan.steps.append(_Step("responded", e.at, actor, {"via": "comment"}))

    def _responded(self, plan: _Plan, name: str, e: ImportedEventIn, actor: str, _: bool) -> None:
        incident = plan.incident
        if incident.first_response_at is not None:
            self.error(name, "the first response is recorded already")
            return
        incident.first_response_at = e.at
        plan.steps.append(_Step("responded", e.at, actor, {"via": "import"}))


async def _known(
    session: AsyncSession, repo: IncidentRepository, tenant_id: uuid.UUID, items: list[IncidentImportIn]
) -> _Known:
    users: set[uuid.UUID] = set()
    devices: set[uuid.UUID] = set()
    sites: set[uuid.UUID] = set()
    staff: set[uuid.UUID] = set()
    assignees: set[uuid.UUID] = set()
    groups: set[uuid.UUID] = set()
    for item in items:
        users |= {i for i in (item.caller_id, item.opened_by_user_id) if i is not None}
        devices |= {item.affected_device_id} if item.affected_device_id else set()
        sites |= {item.site_id} if item.site_id else set()
        staff |= {item.opened_by_staff_id} if item.opened_by_staff_id else set()
        for e in item.events:
            users |= {e.user_id} if e.user_id else set()
            staff |= {e.staff_id} if e.staff_id else set()
            if isinstance(e.assignee_id, uuid.UUID):
                assignees.add(e.assignee_id)
            if isinstance(e.assignment_group_id, uuid.UUID):
                groups.add(e.assignment_group_id)
    staff_rows = await repo.staff_by_id(sorted(staff | assignees))
    granted = await repo.staff_granted([staff_rows[i] for i in assignees if i in staff_rows], tenant_id)
    return _Known(
        tenant_id=tenant_id,
        users=await repo.users_by_id(sorted(users)),
        devices=await repo.device_ids(sorted(devices)),
        sites=await repo.site_ids(sorted(sites)),
        staff=staff_rows,
        granted=granted,
        groups=await repo.groups_by_id(sorted(groups)),
        matrix=await current_matrix(session),
        sla_version=await sla_service.current_policy_version(session),
        now=utcnow(),
    )


async def import_incidents(
    session: AsyncSession,
    principal: Principal,
    tenant_id: AccessibleTenantId,
    items: list[IncidentImportIn],
    *,
    mode: ImportMode,
) -> IncidentImportReport:
    repo = IncidentRepository(session)
    rows: dict[int, ImportRowOut] = {}

    def outcome(row: int, item: IncidentImportIn, status: str, **values: Any) -> None:
        rows[row] = ImportRowOut(
            row=row,
            status=status,
            external_source=item.external_source,
            external_id=item.external_id,
            **values,
        )

    # Duplicates within the batch, then against what is stored.
    pairs = Counter((i.external_source, i.external_id) for i in items)
    legacy_in_batch = Counter(
        (i.external_source, i.legacy_number.lower()) for i in items if i.legacy_number is not None
    )
    recorded = await repo.by_externals([(i.external_source, i.external_id) for i in items])
    numbers_by_source: dict[str, list[str]] = defaultdict(list)
    for item in items:
        if item.legacy_number is not None:
            numbers_by_source[item.external_source].append(item.legacy_number)
    legacy_taken = {
        source: await repo.by_legacy(source, numbers) for source, numbers in numbers_by_source.items()
    }
    known = await _known(session, repo, tenant_id, items)

    plans: list[_Plan] = []
    for row, item in enumerate(items, start=1):
        existing = recorded.get((item.external_source, item.external_id))
        if existing is not None:
            outcome(
                row,
                item,
                "skipped",
                id=existing.id,
                key=existing.key,
                detail=f"{item.external_source}/{item.external_id} is already recorded as {existing.key}",
            )
            continue
        replay = _Replay(row, item, known)
        if pairs[(item.external_source, item.external_id)] > 1:
            replay.error("external_id", "appears more than once in this import")
        if item.legacy_number is not None:
            if legacy_in_batch[(item.external_source, item.legacy_number.lower())] > 1:
                replay.error("legacy_number", "appears more than once in this import for this source")
            taken = legacy_taken[item.external_source].get(item.legacy_number.lower())
            if taken is not None:
                replay.error("legacy_number", f"is already used by {taken.key}")
        plan = replay.run()
        if plan is None or replay.errors:
            outcome(row, item, "error", errors=replay.errors)
        else:
            plans.append(plan)
            outcome(row, item, "valid")

    failed = sum(1 for r in rows.values() if r.status == "error")
    if mode is ImportMode.atomic and failed:
        raise IncidentImportFailed(_report(mode, rows, committed=False))
    if plans:
        await _store(session, repo, principal, tenant_id, plans)
        for plan in plans:
            outcome(plan.row, plan.item, "created", id=plan.incident.id, key=plan.incident.key)
    return _report(mode, rows, committed=True)


async def _store(
    session: AsyncSession,
    repo: IncidentRepository,
    principal: Principal,
    tenant_id: AccessibleTenantId,
    plans: list[_Plan],
) -> None:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:  # pragma: no cover - the auth layer checked it
        raise NotFound("Tenant not found.")
    # The same gap-free counter as live incidents, taken last (its row stays locked until the commit).
    last = await repo.next_number(tenant_id, len(plans))
    for offset, plan in enumerate(plans):
        number = last - len(plans) + 1 + offset
        plan.incident.number = number
        plan.incident.key = f"{tenant.ticket_prefix}-{number:06d}"
        session.add(plan.incident)
        label(session, plan.incident, "imported")
    await session.flush()
    write = EventWriter(session, principal.key)
    for plan in plans:
        incident = plan.incident
        write.new_log(incident)
        for step in plan.steps:
            if step.comment is not None:
                session.add(step.comment)
                if step.comment.visibility is Visibility.internal:
                    label(session, step.comment, "created", internal=True)
            await write(
                incident,
                step.type,
                step.data,
                visibility=step.visibility,
                occurred_at=step.at,
                imported=True,
                actor=step.actor,
                publish=False,
            )
        await write(
            incident,
            "imported",
            {
                "external_source": incident.external_source,
                "external_id": incident.external_id,
                "legacy_number": incident.legacy_number,
                "events": len(plan.steps),
            },
        )
    await session.flush()
    for plan in plans:
        await sla_service.sync(session, plan.incident)


def _report(mode: ImportMode, rows: dict[int, ImportRowOut], *, committed: bool) -> IncidentImportReport:
    ordered = [rows[k] for k in sorted(rows)]
    return IncidentImportReport(
        mode=mode.value,
        committed=committed,
        total=len(ordered),
        created=sum(1 for r in ordered if r.status == "created"),
        skipped=sum(1 for r in ordered if r.status == "skipped"),
        failed=sum(1 for r in ordered if r.status == "error"),
        rows=ordered,
    )


__all__ = ["MAX_INCIDENTS", "IncidentImportFailed", "import_incidents"]
