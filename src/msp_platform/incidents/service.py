"""Incident rules: creation and numbering, priority, the state machine, comments, merge, the event log.

Every change appends to the incident's event log and publishes the event on the internal bus (SLA clocks,
escalations and webhooks subscribe there). Services flush; the request's unit of work commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label
from msp_platform.auth.principal import Principal, PrincipalKind
from msp_platform.auth.scopes import Role
from msp_platform.authz.types import AccessibleTenantId
from msp_platform.incidents import state as sm
from msp_platform.incidents.priority import DEFAULT_MATRIX, Matrix, matrix_errors
from msp_platform.incidents.repository import IncidentRepository
from msp_platform.incidents.schemas import IncidentCreate, MatrixIn, TransitionIn
from msp_platform.kit import events as bus
from msp_platform.kit.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed, problem_type
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.assignment_group import AssignmentGroup
from msp_platform.models.incident import (
    Channel,
    HoldReason,
    Incident,
    IncidentComment,
    IncidentEvent,
    IncidentState,
    PriorityMatrix,
    ResolutionCode,
    Visibility,
)
from msp_platform.models.tenant import Tenant
from msp_platform.sla import service as sla_service

# Resolved by L1 within this long of opening, never escalated, held, reassigned or reopened: first contact.
FCR_WINDOW = timedelta(minutes=30)
STAFF_FIELDS = frozenset({"tier", "assignment_group", "assignment_group_id", "assignee_id"})
RECORD_FIELDS = frozenset({"external_source", "external_id", "legacy_number"})

INVALID_TRANSITION = problem_type(
    "invalid-transition",
    409,
    "Transition not allowed",
    "The incident's state machine does not allow this change from its current state; `allowed` lists the "
    "states it can move to.",
)
STALE = problem_type(
    "precondition-failed",
    412,
    "The resource changed",
    "If-Match named a version that is no longer current; reload the resource and retry.",
)


ALREADY_RECORDED = problem_type(
    "already-recorded",
    409,
    "Already recorded",
    "An incident with this external reference (source system and id) or legacy number is already recorded; "
    "`existing` names it.",
)
MERGED = problem_type(
    "incident-merged",
    409,
    "The incident was merged",
    "This incident was merged into another one, which carries the work now; `merged_into_id` and "
    "`merged_into_key` name it.",
)
AMBIGUOUS = problem_type(
    "ambiguous-reference",
    409,
    "Several incidents match",
    "The number matches several incidents (legacy numbers of different source systems, or keys of several "
    "tenants); `candidates` lists them: ask again by id.",
)


class InvalidTransition(Conflict):
    problem = INVALID_TRANSITION


class StaleVersion(Conflict):
    problem = STALE


class AlreadyRecorded(Conflict):
    problem = ALREADY_RECORDED


class IncidentMerged(Conflict):
    problem = MERGED


class AmbiguousReference(Conflict):
    problem = AMBIGUOUS


def is_staff(principal: Principal) -> bool:
    return principal.role in (Role.msp_admin, Role.msp_agent)


def _own(principal: Principal, incident: Incident) -> bool:
    return incident.caller_id == principal.user_id or incident.reported_by == principal.key


async def visible(session: AsyncSession, principal: Principal, incident: Incident) -> bool:
    """Tenant users see the incidents they raised or are the caller of, and those such an incident was merged
    into (a merged duplicate's caller follows ``merged_into_id`` to the incident that carries the work)."""
    if principal.role is not Role.tenant_user or _own(principal, incident):
        return True
    sources = await IncidentRepository(session).merged_sources(incident.id)
    return any(_own(principal, source) for source in sources)


def check_own(principal: Principal, incident: Incident) -> None:
    """Changing an incident (its fields, its state) is for its own caller or reporter among tenant users; the
    caller of a duplicate merged into it follows it and may comment, nothing more."""
    if principal.role is Role.tenant_user and not _own(principal, incident):
        raise Forbidden(
            f"You follow {incident.key} through a duplicate merged into it: comment on it, or ask the service "
            "desk to change it."
        )


async def check_visible(session: AsyncSession, principal: Principal, incident: Incident) -> None:
    if not await visible(session, principal, incident):
        raise NotFound(f"Incident {incident.id} not found.")


async def find(session: AsyncSession, principal: Principal, ref: str) -> Incident:
    """An incident by id, key (``SMH-000123``) or legacy number (any case), visible to the caller."""
    repo = IncidentRepository(session)
    try:
        incident_id = uuid.UUID(ref)
    except ValueError:
        candidates = [i for i in await repo.by_number(ref) if await visible(session, principal, i)]
        if len(candidates) > 1:
            raise AmbiguousReference(
                f"{ref} matches {len(candidates)} incidents; ask for one by id.",
                extra={
                    "candidates": [
                        {
                            "id": str(i.id),
                            "key": i.key,
                            "tenant_id": str(i.tenant_id),
                            "external_source": i.external_source,
                            "legacy_number": i.legacy_number,
                        }
                        for i in candidates
                    ]
                },
            ) from None
        found = candidates[0] if candidates else None
    else:
        found = await repo.get(incident_id)
        if found is not None and not await visible(session, principal, found):
            found = None
    if found is None:
        raise NotFound(f"Incident {ref} not found.")
    return found


def check_version(incident: Incident, if_match: str | None) -> None:
    if if_match is None:
        return
    wanted = if_match.strip().removeprefix("W/").strip('"')
    if wanted != str(incident.version):
        raise StaleVersion(
            f"Incident {incident.key} is at version {incident.version}, not {wanted}; reload it and retry."
        )


# --- the event log ---------------------------------------------------------------------------------------


@dataclass
class EventWriter:
    """Appends to incidents' event logs within one unit of work (the incident row is locked first, so
    sequence numbers cannot collide) and publishes each event on the bus."""

    session: AsyncSession
    actor: str
    _seq: dict[uuid.UUID, int] | None = None

    def new_log(self, incident: Incident) -> None:
        """The incident is being created in this unit of work: its log starts at 1 (no lookup, no lock)."""
        if self._seq is None:
            self._seq = {}
        self._seq[incident.id] = 0

    async def __call__(
        self,
        incident: Incident,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        visibility: Visibility = Visibility.public,
        occurred_at: datetime | None = None,
        imported: bool = False,
        actor: str | None = None,
        publish: bool = True,
    ) -> IncidentEvent:
        """Append one event. Imported history passes its original time, ``imported=True``, the source's actor
        and ``publish=False``: it already happened, so nothing (SLA warnings, escalations, webhooks) reacts to
        it event by event."""
        if self._seq is None:
            self._seq = {}
        if incident.id not in self._seq:
            self._seq[incident.id] = await IncidentRepository(self.session).last_event_seq(incident.id)
        self._seq[incident.id] += 1
        event = IncidentEvent(
            id=new_id(),
            tenant_id=incident.tenant_id,
            incident_id=incident.id,
            seq=self._seq[incident.id],
            type=type_,
            occurred_at=occurred_at or utcnow(),
            actor=actor or self.actor,
            visibility=visibility,
            data=data or {},
            imported=imported,
        )
        self.session.add(event)
        if not publish:
            return event
        bus.publish(
            self.session,
            tenant_id=incident.tenant_id,
            type=f"incident.{type_}",
            event_id=event.id,
            occurred_at=event.occurred_at,
            payload={
                "incident_id": str(incident.id),
                "key": incident.key,
                "seq": event.seq,
                "visibility": visibility.value,
                "data": event.data,
                "state": incident.state.value
                if isinstance(incident.state, IncidentState)
                else str(incident.state),
                "priority": incident.priority,
                "tier": incident.tier,
            },
        )
        return event


# --- priority ------------------------------------------------------------------------------------------


def _matrix(row: PriorityMatrix | None) -> Matrix:
    if row is None:
        return DEFAULT_MATRIX
    return Matrix(
        version=row.version,
        cells=row.cells,
        patient_care_raise=row.patient_care_raise,
        patient_care_floor=row.patient_care_floor,
        vip_raise=row.vip_raise,
    )


async def current_matrix(session: AsyncSession) -> Matrix:
    return _matrix(await IncidentRepository(session).current_matrix())


async def set_matrix(
    session: AsyncSession, tenant_id: AccessibleTenantId, data: MatrixIn, principal: Principal
) -> PriorityMatrix:
    errors = matrix_errors(data.cells, data.patient_care_raise, data.patient_care_floor, data.vip_raise)
    if errors:
        raise ValidationFailed("The priority matrix is invalid.", errors=errors)
    repo = IncidentRepository(session)
    await repo.lock_matrix(tenant_id)
    current = await repo.current_matrix()
    row = PriorityMatrix(
        version=(current.version if current else 0) + 1,
        cells=data.cells,
        patient_care_raise=data.patient_care_raise,
        patient_care_floor=data.patient_care_floor,
        vip_raise=data.vip_raise,
        created_by=principal.key,
    )
    session.add(row)
    await session.flush()
    return row


# --- references ----------------------------------------------------------------------------------------


async def _check_refs(repo: IncidentRepository, values: dict[str, Any]) -> tuple[list[FieldError], bool]:
    """Validate referenced ids (another tenant's ids are invisible, so they read as unknown). Returns the
    errors and whether the caller is a VIP."""
    errors: list[FieldError] = []
    vip = False
    if values.get("caller_id") is not None:
        caller = await repo.user(values["caller_id"])
        if caller is None:
            errors.append(FieldError("caller_id", "no such user"))
        elif not caller.active:
            errors.append(FieldError("caller_id", "this user is deactivated"))
        else:
            vip = caller.vip
    if (
        values.get("affected_device_id") is not None
        and await repo.device(values["affected_device_id"]) is None
    ):
        errors.append(FieldError("affected_device_id", "no such device"))
    if values.get("site_id") is not None and await repo.site(values["site_id"]) is None:
        errors.append(FieldError("site_id", "no such site"))
    return errors, vip


async def _group_by_name(repo: IncidentRepository, values: dict[str, Any]) -> list[FieldError]:
    """Turn the deprecated ``assignment_group`` (a group's name) into ``assignment_group_id``, in place."""
    if "assignment_group" not in values:
        return []
    name = values.pop("assignment_group")
    given_id = values.get("assignment_group_id")
    if name is None:
        if given_id is not None:
            return [FieldError("assignment_group", "contradicts assignment_group_id")]
        values["assignment_group_id"] = None
        return []
    group = await repo.group_by_name(str(name))
    if group is None:
        return [FieldError("assignment_group", f"no assignment group is called {name!r}")]
    if "assignment_group_id" in values and given_id != group.id:
        return [FieldError("assignment_group", "names another group than assignment_group_id")]
    values["assignment_group_id"] = group.id
    return []


async def _check_assignment(
    repo: IncidentRepository,
    tenant_id: uuid.UUID,
    values: dict[str, Any],
    *,
    current_group: uuid.UUID | None = None,
    current_assignee: uuid.UUID | None = None,
) -> tuple[list[FieldError], AssignmentGroup | None]:
    """The group must exist, be active and work for the tenant; the assignee must be an active staff member
    granted the tenant and, when the incident has a group, a member of it. Only what changes is checked (a
    group deactivated later does not block other edits). Returns the errors and the incident's group."""
    errors: list[FieldError] = []
    group_id = values.get("assignment_group_id", current_group)
    assignee_id = values.get("assignee_id", current_assignee)
    group = await repo.group(group_id) if group_id is not None else None
    if values.get("assignment_group_id") is not None:
        if group is None or not group.active:
            errors.append(FieldError("assignment_group_id", "no such assignment group"))
        elif not group.serves(tenant_id):
            errors.append(FieldError("assignment_group_id", f"{group.name} does not work for this tenant"))
    if values.get("assignee_id") is not None:
        staff = await repo.staff(values["assignee_id"])
        if staff is None or not staff.active:
            errors.append(FieldError("assignee_id", "no such active staff member"))
        elif not await repo.staff_granted([staff], tenant_id):
            errors.append(FieldError("assignee_id", f"{staff.name} is not granted this tenant"))
    changed = "assignment_group_id" in values or "assignee_id" in values
    if (
        changed
        and not errors
        and group is not None
        and assignee_id is not None
        and await repo.membership(group.id, assignee_id) is None
    ):
        errors.append(FieldError("assignee_id", f"is not a member of {group.name}"))
    return errors, group


def _assignment_data(incident: Incident, group: AssignmentGroup | None) -> dict[str, Any]:
    return {
        "assignee_id": _s(incident.assignee_id),
        "assignment_group_id": _s(incident.assignment_group_id),
        "assignment_group": group.name if group is not None else None,
    }


# --- create --------------------------------------------------------------------------------------------


async def create_incident(
    session: AsyncSession, principal: Principal, tenant_id: AccessibleTenantId, data: IncidentCreate
) -> Incident:
    repo = IncidentRepository(session)
    sent = {name: getattr(data, name) for name in data.__struct_fields__}
    if not is_staff(principal):
        forbidden = [name for name in STAFF_FIELDS if sent.get(name) is not None]
        if forbidden:
            raise Forbidden(f"Only MSP staff set {', '.join(sorted(forbidden))}.")
    if principal.kind is PrincipalKind.user and principal.role is Role.tenant_user:
        if data.caller_id not in (None, principal.user_id):
            raise Forbidden(
                "Tenant users raise incidents for themselves; ask your administrator to raise it for someone else."
            )
        if any(sent.get(name) for name in RECORD_FIELDS):
            raise Forbidden("Only staff and integrations set external references.")
        sent["caller_id"] = principal.user_id
    if bool(data.external_source) != bool(data.external_id):
        raise ValidationFailed(
            "external_source and external_id go together.",
            errors=[FieldError("external_id" if data.external_source else "external_source", "is required")],
        )
    if sent.get("assignment_group") is None:
        sent.pop("assignment_group")
    if sent.get("assignment_group_id") is None:
        sent.pop("assignment_group_id")
    errors = await _group_by_name(repo, sent)
    ref_errors, vip = await _check_refs(repo, sent)
    errors += ref_errors
    group: AssignmentGroup | None = None
    if not errors:
        assignment_errors, group = await _check_assignment(repo, tenant_id, sent)
        errors += assignment_errors
    if not data.title.strip():
        errors.append(FieldError("title", "must not be empty"))
    if errors:
        raise ValidationFailed("The incident is invalid.", errors=errors)
    await _refuse_recorded(repo, data.external_source, data.external_id, data.legacy_number)

    # Everything that only reads comes first: the tenant's number is taken last, just before the insert,
    # because its counter row stays locked (serialising this tenant's creates) until the commit.
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:  # pragma: no cover - the auth layer checked it
        raise NotFound("Tenant not found.")
    matrix = await current_matrix(session)
    sla_version = await sla_service.current_policy_version(session)
    now = utcnow()
    channel = data.channel or (Channel.api if principal.kind is PrincipalKind.client else Channel.portal)
    group_id = sent.get("assignment_group_id")
    incident = Incident(
        id=new_id(),
        tenant_id=tenant_id,
        title=data.title.strip(),
        description=data.description,
        caller_id=sent.get("caller_id"),
        reported_by=principal.key,
        affected_device_id=data.affected_device_id,
        site_id=data.site_id,
        category=data.category,
        subcategory=data.subcategory,
        channel=channel,
        impact=data.impact,
        urgency=data.urgency,
        patient_care_impact=data.patient_care_impact,
        priority=matrix.priority(data.impact, data.urgency, patient_care=data.patient_care_impact, vip=vip),
        priority_matrix_version=matrix.version,
        tier=data.tier or 1,
        assignment_group_id=group_id,
        assignee_id=data.assignee_id,
        state=IncidentState.assigned if (data.assignee_id or group_id) else IncidentState.new,
        opened_at=now,
        reopen_count=0,
        first_contact_resolution=False,
        external_source=data.external_source,
        external_id=data.external_id,
        legacy_number=data.legacy_number,
        version=1,
        sla_policy_version=sla_version,
    )
    number = await repo.next_number(tenant_id)
    incident.number = number
    incident.key = f"{tenant.ticket_prefix}-{number:06d}"
    session.add(incident)
    await session.flush()
    write = EventWriter(session, principal.key)
    write.new_log(incident)
    await write(incident, "created", _created_data(incident), occurred_at=now)
    if incident.assignee_id or incident.assignment_group_id:
        await write(incident, "assigned", _assignment_data(incident, group), occurred_at=now)
    return incident


def _created_data(incident: Incident) -> dict[str, Any]:
    return {
        "state": incident.state.value,
        "priority": incident.priority,
        "impact": incident.impact,
        "urgency": incident.urgency,
        "patient_care_impact": incident.patient_care_impact,
        "tier": incident.tier,
        "channel": incident.channel.value,
        "priority_matrix_version": incident.priority_matrix_version,
    }


async def _refuse_recorded(
    repo: IncidentRepository, source: str | None, external_id: str | None, legacy_number: str | None
) -> None:
    """409 when the external reference or the legacy number is taken. (Two concurrent creates both pass this
    check; the unique indexes then turn the second into a 409 as well.)"""
    existing: Incident | None = None
    what = ""
    if source and external_id:
        existing = await repo.by_external(source, external_id)
        what = f"{source}/{external_id}"
    if existing is None and legacy_number:
        existing = (await repo.by_legacy(source, [legacy_number])).get(legacy_number.lower())
        what = f"legacy number {legacy_number}" + (f" of {source}" if source else "")
    if existing is not None:
        raise AlreadyRecorded(
            f"{what} is already recorded as {existing.key}.",
            extra={"existing": {"id": str(existing.id), "key": existing.key}},
        )


def _s(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def refuse_merged(incident: Incident, target: Incident | None, action: str) -> None:
    if incident.merged_into_id is None:
        return
    into = target.key if target is not None else str(incident.merged_into_id)
    raise IncidentMerged(
        f"Incident {incident.key} was merged into {into}; {action} there.",
        extra={
            "merged_into_id": str(incident.merged_into_id),
            "merged_into_key": target.key if target else None,
        },
    )


# --- update --------------------------------------------------------------------------------------------


async def update_incident(
    session: AsyncSession, principal: Principal, incident: Incident, values: dict[str, Any]
) -> Incident:
    repo = IncidentRepository(session)
    if incident.merged_into_id is not None:
        refuse_merged(incident, await repo.get(incident.merged_into_id), "change")
    if incident.state in sm.FINAL_STATES:
        raise Conflict(f"Incident {incident.key} is {incident.state.value}; it can no longer change.")
    check_own(principal, incident)
    if not is_staff(principal):
        forbidden = sorted(set(values) & STAFF_FIELDS)
        if forbidden:
            raise Forbidden(f"Only MSP staff change {', '.join(forbidden)}.")
        if principal.role is Role.tenant_user:
            allowed_for_users = {
                "title",
                "description",
                "affected_device_id",
                "site_id",
                "category",
                "subcategory",
            }
            extra = sorted(set(values) - allowed_for_users)
            if extra:
                raise Forbidden(f"Tenant users cannot change {', '.join(extra)}.")
    values = dict(values)
    errors = await _group_by_name(repo, values)
    ref_errors, vip = await _check_refs(repo, values)
    errors += ref_errors
    group: AssignmentGroup | None = None
    if not errors:
        assignment_errors, group = await _check_assignment(
            repo,
            incident.tenant_id,
            values,
            current_group=incident.assignment_group_id,
            current_assignee=incident.assignee_id,
        )
        errors += assignment_errors
    if "title" in values and not str(values["title"]).strip():
        errors.append(FieldError("title", "must not be empty"))
    if errors:
        raise ValidationFailed("The change is invalid.", errors=errors)
    if "caller_id" not in values and incident.caller_id is not None:
        caller = await repo.user(incident.caller_id)
        vip = bool(caller and caller.vip)

    write = EventWriter(session, principal.key)
    changed: dict[str, list[Any]] = {}
    for name, value in values.items():
        before = getattr(incident, name)
        if before != value:
            changed[name] = [_s(before), _s(value)]
            setattr(incident, name, value)
    if not changed:
        return incident

    priority_inputs = {"impact", "urgency", "patient_care_impact", "caller_id"}
    if priority_inputs & set(changed):
        matrix = await current_matrix(session)
        new_priority = matrix.priority(
            incident.impact, incident.urgency, patient_care=incident.patient_care_impact, vip=vip
        )
        if new_priority != incident.priority:
            await write(
                incident,
                "priority_changed",
                {"from": incident.priority, "to": new_priority, "matrix_version": matrix.version},
            )
            incident.priority = new_priority
            incident.priority_matrix_version = matrix.version
    if "tier" in changed:
        before_tier, after_tier = changed.pop("tier")
        await write(
            incident,
            "tier_escalated" if after_tier > before_tier else "tier_deescalated",
            {"from": before_tier, "to": after_tier},
        )
    assignment = {k: changed.pop(k) for k in ("assignee_id", "assignment_group_id") if k in changed}
    if assignment:
        await write(
            incident,
            "assigned",
            _assignment_data(incident, group) | {"previous": {k: v[0] for k, v in assignment.items()}},
        )
        if incident.state is IncidentState.new and (incident.assignee_id or incident.assignment_group_id):
            await _set_state(write, incident, IncidentState.assigned, {})
    if changed:
        await write(incident, "updated", {"changes": changed})
    incident.version += 1
    await session.flush()
    return incident


# --- transitions ---------------------------------------------------------------------------------------

# What tenant principals may do (staff may make every transition the state machine allows). Tenant users
# only reach their own incidents (see ``visible``); tenant admins and integration clients every incident of
# their tenant. Withdraw an incident nobody works on yet; confirm a resolution (close) or reject it (reopen).
TENANT_TRANSITIONS = frozenset(
    {
        (IncidentState.new, IncidentState.cancelled),
        (IncidentState.assigned, IncidentState.cancelled),
        (IncidentState.resolved, IncidentState.closed),
        (IncidentState.resolved, IncidentState.in_progress),
    }
)


async def _set_state(
    write: EventWriter, incident: Incident, target: IncidentState, data: dict[str, Any]
) -> None:
    previous = incident.state
    incident.state = target
    await write(incident, "state_changed", {"from": previous.value, "to": target.value, **data})


async def transition(
    session: AsyncSession, principal: Principal, incident: Incident, data: TransitionIn
) -> Incident:
    current, target = incident.state, data.to
    if not sm.can(current, target):
        raise InvalidTransition(
            f"Incident {incident.key} cannot go from {current.value} to {target.value}.",
            extra={
                "from": current.value,
                "to": target.value,
                "allowed": sorted(s.value for s in sm.allowed(current)),
            },
        )
    check_own(principal, incident)
    if not is_staff(principal) and (current, target) not in TENANT_TRANSITIONS:
        raise Forbidden(f"Only MSP staff move an incident from {current.value} to {target.value}.")
    errors = transition_errors(incident, data)
    if errors:
        raise ValidationFailed("The transition is missing information.", errors=errors)

    write = EventWriter(session, principal.key)
    now = utcnow()
    extra = apply_move(incident, data, now)
    if target is IncidentState.resolved:
        incident.first_contact_resolution = await _first_contact(session, principal, incident, now)
        extra["first_contact_resolution"] = incident.first_contact_resolution
    if sm.is_reopen(current, target):
        await _set_state(write, incident, target, extra)
        await write(incident, "reopened", reopen(incident) | extra)
        label(session, incident, "reopened")
    else:
        await _set_state(write, incident, target, extra)
    if (
        is_staff(principal)
        and incident.first_response_at is None
        and target in (IncidentState.in_progress, IncidentState.resolved)
    ):
        await _responded(write, incident, now, via=f"state:{target.value}")
    incident.version += 1
    await session.flush()
    return incident


def apply_move(incident: Incident, move: TransitionIn, at: datetime) -> dict[str, Any]:
    """The fields a move from the incident's current state to ``move.to`` sets (hold reason, resolution,
    closing time), and what the ``state_changed`` event records of them. The state itself is the caller's
    to set. Shared by live transitions and imported history."""
    current, target = incident.state, move.to
    extra: dict[str, Any] = {}
    if move.reason:
        extra["reason"] = move.reason
    if target is IncidentState.on_hold:
        incident.on_hold_reason = move.on_hold_reason
        extra["on_hold_reason"] = move.on_hold_reason.value if move.on_hold_reason else None
    elif current is IncidentState.on_hold:
        incident.on_hold_reason = None
    if target is IncidentState.resolved:
        incident.resolution_code = move.resolution_code
        incident.resolution_notes = move.resolution_notes
        incident.resolved_at = at
        extra["resolution_code"] = move.resolution_code.value if move.resolution_code else None
    if target in (IncidentState.closed, IncidentState.cancelled):
        incident.closed_at = at
    return extra


def transition_errors(incident: Incident, data: TransitionIn) -> list[FieldError]:
    """What a move to ``data.to`` needs (shared by live transitions and imported history)."""
    target = data.to
    errors: list[FieldError] = []
    if target is IncidentState.on_hold and data.on_hold_reason is None:
        errors.append(FieldError("on_hold_reason", "is required to put an incident on hold"))
    if target is IncidentState.resolved:
        if data.resolution_code is None:
            errors.append(FieldError("resolution_code", "is required to resolve"))
        if not (data.resolution_notes or "").strip():
            errors.append(FieldError("resolution_notes", "are required to resolve"))
    if target is IncidentState.cancelled and not (data.reason or "").strip():
        errors.append(FieldError("reason", "is required to cancel"))
    if target is IncidentState.assigned and not (incident.assignee_id or incident.assignment_group_id):
        errors.append(FieldError("to", "assign someone (PATCH assignee_id or assignment_group_id) first"))
    return errors


def reopen(incident: Incident) -> dict[str, Any]:
    """Reopening undoes the resolution on the incident; the event log keeps what it was."""
    previous = {
        "previous_resolution_code": incident.resolution_code.value if incident.resolution_code else None,
        "previous_resolution_notes": incident.resolution_notes,
    }
    incident.reopen_count += 1
    incident.resolved_at = None
    incident.resolution_code = None
    incident.resolution_notes = None
    incident.first_contact_resolution = False
    return {"reopen_count": incident.reopen_count, **previous}


async def _first_contact(
    session: AsyncSession, principal: Principal, incident: Incident, now: datetime
) -> bool:
    if not is_staff(principal) or (principal.tier or 0) != 1 or incident.tier != 1 or incident.reopen_count:
        return False
    if now - incident.opened_at > FCR_WINDOW:
        return False
    history = await IncidentRepository(session).events([incident.id], public_only=False)
    disqualifying = {"tier_escalated", "tier_deescalated", "reopened"}
    assignments = 0
    for event in history:
        if event.type in disqualifying:
            return False
        if event.type == "state_changed" and event.data.get("to") == IncidentState.on_hold.value:
            return False
        if event.type == "assigned":
            assignments += 1
    return assignments <= 1


async def _responded(write: EventWriter, incident: Incident, at: datetime, *, via: str) -> None:
    incident.first_response_at = at
    await write(incident, "responded", {"via": via}, occurred_at=at)


# --- comments ------------------------------------------------------------------------------------------


async def add_comment(
    session: AsyncSession,
    principal: Principal,
    incident: Incident,
    body: str,
    visibility: Visibility,
    author_name: str | None,
) -> IncidentComment:
    """A public comment (the tenant sees it) or an internal work note (MSP staff only).

    An internal note leaves the incident row alone: its version, ETag and ``updated_at`` are what the tenant
    sees, and a note changes none of the incident's fields, so there is no update for If-Match to guard
    (the note itself is in the event log, whose row lock orders concurrent appends)."""
    if visibility is Visibility.internal and not is_staff(principal):
        raise Forbidden("Internal work notes are for MSP staff.")
    if not body.strip():
        raise ValidationFailed("A comment needs text.", errors=[FieldError("body", "must not be empty")])
    if incident.merged_into_id is not None:
        refuse_merged(incident, await IncidentRepository(session).get(incident.merged_into_id), "comment")
    if incident.state in sm.FINAL_STATES and not is_staff(principal):
        raise Conflict(f"Incident {incident.key} is {incident.state.value}; raise a new incident instead.")
    comment = IncidentComment(
        id=new_id(),
        tenant_id=incident.tenant_id,
        incident_id=incident.id,
        author=principal.key,
        author_name=author_name,
        body=body,
        visibility=visibility,
    )
    session.add(comment)
    if visibility is Visibility.internal:
        # The audit log's tenant-level readers (tenant admins) never see that a note was written.
        label(session, comment, "created", internal=True)
    write = EventWriter(session, principal.key)
    await write(
        incident,
        "commented",
        {"comment_id": str(comment.id), "visibility": visibility.value},
        visibility=visibility,
    )
    if visibility is Visibility.public:
        if is_staff(principal) and incident.first_response_at is None:
            await _responded(write, incident, utcnow(), via="comment")
        incident.version += 1
    await session.flush()
    return comment


# --- merge ---------------------------------------------------------------------------------------------


async def merge(
    session: AsyncSession, principal: Principal, target: Incident, source_ids: list[uuid.UUID]
) -> list[Incident]:
    """Merge duplicates into ``target``: each source is cancelled as a duplicate and points at the target,
    whose history and comments then include the sources' (and whose page the sources' callers may read).
    Undone by ``unmerge``. Every row is locked in id order first and checked afresh, so concurrent merges
    (A into B and B into A) queue up and the second one is refused instead of deadlocking."""
    if not is_staff(principal):
        raise Forbidden("Only MSP staff merge incidents.")
    repo = IncidentRepository(session)
    wanted = list(dict.fromkeys(source_ids))
    locked: dict[uuid.UUID, Incident] = {}
    for incident_id in sorted({target.id, *wanted}):
        row = await repo.get(incident_id, for_update=True)
        if row is not None:
            locked[incident_id] = row
    if target.id not in locked:  # pragma: no cover - loaded by the caller in this transaction
        raise NotFound(f"Incident {target.key} not found.")
    if target.state in sm.FINAL_STATES or target.merged_into_id is not None:
        raise Conflict(f"Incident {target.key} is {target.state.value}; merge into an open incident.")
    sources: list[Incident] = []
    errors: list[FieldError] = []
    for i, source_id in enumerate(wanted):
        source = locked.get(source_id)
        if source is None:
            errors.append(FieldError(f"source_ids[{i}]", "no such incident"))
        elif source.id == target.id:
            errors.append(FieldError(f"source_ids[{i}]", "an incident cannot be merged into itself"))
        elif source.merged_into_id is not None:
            errors.append(FieldError(f"source_ids[{i}]", f"{source.key} is already merged"))
        elif source.state in sm.FINAL_STATES:
            errors.append(FieldError(f"source_ids[{i}]", f"{source.key} is {source.state.value}"))
        elif await repo.merged_sources(source.id):
            errors.append(
                FieldError(
                    f"source_ids[{i}]", f"{source.key} has incidents merged into it; unmerge them first"
                )
            )
        else:
            sources.append(source)
    if errors:
        raise ValidationFailed("These incidents cannot be merged.", errors=errors)
    write = EventWriter(session, principal.key)
    for source in sources:
        previous = {
            "previous_state": source.state.value,
            "previous_on_hold_reason": source.on_hold_reason.value if source.on_hold_reason else None,
            "previous_resolution_code": source.resolution_code.value if source.resolution_code else None,
        }
        source.merged_into_id = target.id
        source.resolution_code = ResolutionCode.duplicate
        source.on_hold_reason = None
        source.closed_at = utcnow()
        label(session, source, "merged")
        await _set_state(write, source, IncidentState.cancelled, {"reason": f"duplicate of {target.key}"})
        await write(source, "merged", {"into": str(target.id), "into_key": target.key, **previous})
        await write(target, "merged_in", {"source": str(source.id), "source_key": source.key})
        source.version += 1
    target.version += 1
    await session.flush()
    return sources


async def unmerge(session: AsyncSession, principal: Principal, source: Incident) -> Incident:
    """Undo a merge: the source gets back the state (with its hold reason or resolution) it had."""
    if not is_staff(principal):
        raise Forbidden("Only MSP staff undo a merge.")
    if source.merged_into_id is None:
        raise Conflict(f"Incident {source.key} is not merged.")
    repo = IncidentRepository(session)
    target_id = source.merged_into_id
    locked = {i: await repo.get(i, for_update=True) for i in sorted({source.id, target_id})}
    if source.merged_into_id != target_id:
        raise Conflict(f"Incident {source.key} changed meanwhile; reload it and retry.")
    target = locked.get(target_id)
    history = await repo.events([source.id], public_only=False)
    merged = [e for e in history if e.type == "merged"]
    data = merged[-1].data if merged else {}
    previous = IncidentState(data.get("previous_state", IncidentState.new.value))
    write = EventWriter(session, principal.key)
    source.merged_into_id = None
    code = data.get("previous_resolution_code")
    source.resolution_code = ResolutionCode(code) if code else None
    source.closed_at = None
    restored: dict[str, Any] = {"reason": "merge undone"}
    if previous is IncidentState.on_hold:
        reason = HoldReason(data.get("previous_on_hold_reason") or HoldReason.other.value)
        source.on_hold_reason = reason
        # The SLA clock reads the hold reason from the state change (some reasons pause it).
        restored["on_hold_reason"] = reason.value
    label(session, source, "unmerged")
    await _set_state(write, source, previous, restored)
    await write(source, "unmerged", {"from": str(target_id)})
    if target is not None:
        await write(target, "merged_out", {"source": str(source.id), "source_key": source.key})
        target.version += 1
    source.version += 1
    await session.flush()
    return source


__all__ = ["Channel", "EventWriter", "InvalidTransition", "is_staff"]
