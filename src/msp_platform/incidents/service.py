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
from msp_platform.models.incident import (
    Channel,
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
STAFF_FIELDS = frozenset({"tier", "assignment_group", "assignee_id"})
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


class InvalidTransition(Conflict):
    problem = INVALID_TRANSITION


class StaleVersion(Conflict):
    problem = STALE


def is_staff(principal: Principal) -> bool:
    return principal.role in (Role.msp_admin, Role.msp_agent)


def check_visible(principal: Principal, incident: Incident) -> None:
    """Tenant users see only incidents they raised or are the caller of; anything else is a 404."""
    if principal.role is Role.tenant_user and not (
        incident.caller_id == principal.user_id or incident.reported_by == principal.key
    ):
        raise NotFound(f"Incident {incident.id} not found.")


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

    async def __call__(
        self,
        incident: Incident,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        visibility: Visibility = Visibility.public,
        occurred_at: datetime | None = None,
        imported: bool = False,
    ) -> IncidentEvent:
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
            actor=self.actor,
            visibility=visibility,
            data=data or {},
            imported=imported,
        )
        self.session.add(event)
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


async def set_matrix(session: AsyncSession, data: MatrixIn, principal: Principal) -> PriorityMatrix:
    errors = matrix_errors(data.cells, data.patient_care_raise, data.patient_care_floor, data.vip_raise)
    if errors:
        raise ValidationFailed("The priority matrix is invalid.", errors=errors)
    current = await IncidentRepository(session).current_matrix()
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
    if values.get("assignee_id") is not None:
        staff = await repo.staff(values["assignee_id"])
        if staff is None or not staff.active:
            errors.append(FieldError("assignee_id", "no such active staff member"))
    return errors, vip


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
    errors, vip = await _check_refs(repo, sent)
    if (
        data.external_source
        and data.external_id
        and await repo.by_external(data.external_source, data.external_id)
    ):
        errors.append(
            FieldError("external_id", f"{data.external_source}/{data.external_id} was already recorded")
        )
    if not data.title.strip():
        errors.append(FieldError("title", "must not be empty"))
    if errors:
        raise ValidationFailed("The incident is invalid.", errors=errors)

    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:  # pragma: no cover - the auth layer checked it
        raise NotFound("Tenant not found.")
    matrix = await current_matrix(session)
    number = await repo.next_number(tenant_id)
    now = utcnow()
    channel = data.channel or (Channel.api if principal.kind is PrincipalKind.client else Channel.portal)
    incident = Incident(
        id=new_id(),
        tenant_id=tenant_id,
        number=number,
        key=f"{tenant.ticket_prefix}-{number:06d}",
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
        assignment_group=data.assignment_group,
        assignee_id=data.assignee_id,
        state=IncidentState.assigned if (data.assignee_id or data.assignment_group) else IncidentState.new,
        opened_at=now,
        reopen_count=0,
        first_contact_resolution=False,
        external_source=data.external_source,
        external_id=data.external_id,
        legacy_number=data.legacy_number,
        version=1,
        sla_policy_version=await sla_service.current_policy_version(session),
    )
    session.add(incident)
    await session.flush()
    write = EventWriter(session, principal.key)
    await write(
        incident,
        "created",
        {
            "state": incident.state.value,
            "priority": incident.priority,
            "impact": incident.impact,
            "urgency": incident.urgency,
            "patient_care_impact": incident.patient_care_impact,
            "tier": incident.tier,
            "channel": incident.channel.value,
            "priority_matrix_version": incident.priority_matrix_version,
        },
        occurred_at=now,
    )
    if incident.assignee_id or incident.assignment_group:
        await write(
            incident,
            "assigned",
            {"assignee_id": _s(incident.assignee_id), "assignment_group": incident.assignment_group},
            occurred_at=now,
        )
    return incident


def _s(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


# --- update --------------------------------------------------------------------------------------------


async def update_incident(
    session: AsyncSession, principal: Principal, incident: Incident, values: dict[str, Any]
) -> Incident:
    if incident.state in sm.FINAL_STATES:
        raise Conflict(f"Incident {incident.key} is {incident.state.value}; it can no longer change.")
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
    repo = IncidentRepository(session)
    errors, vip = await _check_refs(repo, values)
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
    assignment = {k: changed.pop(k) for k in ("assignee_id", "assignment_group") if k in changed}
    if assignment:
        await write(
            incident,
            "assigned",
            {k: v[1] for k, v in assignment.items()} | {"previous": {k: v[0] for k, v in assignment.items()}},
        )
        if incident.state is IncidentState.new and (incident.assignee_id or incident.assignment_group):
            await _set_state(write, incident, IncidentState.assigned, {})
    if changed:
        await write(incident, "updated", {"changes": changed})
    incident.version += 1
    await session.flush()
    return incident


# --- transitions ---------------------------------------------------------------------------------------

_TENANT_TRANSITIONS = {
    # (from, to) a tenant may make on its own incidents: withdraw it, confirm or reject a resolution.
    (IncidentState.new, IncidentState.cancelled),
    (IncidentState.assigned, IncidentState.cancelled),
    (IncidentState.resolved, IncidentState.closed),
    (IncidentState.resolved, IncidentState.in_progress),
}


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
    if not is_staff(principal) and (current, target) not in _TENANT_TRANSITIONS:
        raise Forbidden(f"Only MSP staff move an incident from {current.value} to {target.value}.")
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
    if target is IncidentState.assigned and not (incident.assignee_id or incident.assignment_group):
        errors.append(FieldError("to", "assign someone (PATCH assignee_id or assignment_group) first"))
    if errors:
        raise ValidationFailed("The transition is missing information.", errors=errors)

    write = EventWriter(session, principal.key)
    now = utcnow()
    extra: dict[str, Any] = {}
    if data.reason:
        extra["reason"] = data.reason
    if target is IncidentState.on_hold:
        incident.on_hold_reason = data.on_hold_reason
        extra["on_hold_reason"] = data.on_hold_reason.value if data.on_hold_reason else None
    elif current is IncidentState.on_hold:
        incident.on_hold_reason = None
    if target is IncidentState.resolved:
        incident.resolution_code = data.resolution_code
        incident.resolution_notes = data.resolution_notes
        incident.resolved_at = now
        extra["resolution_code"] = data.resolution_code.value if data.resolution_code else None
        incident.first_contact_resolution = await _first_contact(session, principal, incident, now)
        extra["first_contact_resolution"] = incident.first_contact_resolution
    if target is IncidentState.closed:
        incident.closed_at = now
    if target is IncidentState.cancelled:
        incident.closed_at = now
    if sm.is_reopen(current, target):
        incident.reopen_count += 1
        incident.resolved_at = None
        incident.resolution_code = None
        incident.first_contact_resolution = False
        label(session, incident, "reopened")
        await _set_state(write, incident, target, extra)
        await write(incident, "reopened", {"reopen_count": incident.reopen_count, **extra})
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
    if visibility is Visibility.internal and not is_staff(principal):
        raise Forbidden("Internal work notes are for MSP staff.")
    if not body.strip():
        raise ValidationFailed("A comment needs text.", errors=[FieldError("body", "must not be empty")])
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
    write = EventWriter(session, principal.key)
    await write(
        incident,
        "commented",
        {"comment_id": str(comment.id), "visibility": visibility.value},
        visibility=visibility,
    )
    if is_staff(principal) and visibility is Visibility.public and incident.first_response_at is None:
        await _responded(write, incident, utcnow(), via="comment")
    incident.version += 1
    await session.flush()
    return comment


# --- merge ---------------------------------------------------------------------------------------------


async def merge(
    session: AsyncSession, principal: Principal, target: Incident, source_ids: list[uuid.UUID]
) -> list[Incident]:
    """Merge duplicates into ``target``: each source is cancelled as a duplicate and points at the target,
    whose history and comments then include the sources'. Undone by ``unmerge``."""
    if not is_staff(principal):
        raise Forbidden("Only MSP staff merge incidents.")
    if target.state in sm.FINAL_STATES or target.merged_into_id is not None:
        raise Conflict(f"Incident {target.key} is {target.state.value}; merge into an open incident.")
    repo = IncidentRepository(session)
    sources: list[Incident] = []
    errors: list[FieldError] = []
    for i, source_id in enumerate(dict.fromkeys(source_ids)):
        source = await repo.get(source_id, for_update=True)
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
        previous = source.state
        source.merged_into_id = target.id
        source.resolution_code = ResolutionCode.duplicate
        source.closed_at = utcnow()
        label(session, source, "merged")
        await _set_state(write, source, IncidentState.cancelled, {"reason": f"duplicate of {target.key}"})
        await write(
            source,
            "merged",
            {"into": str(target.id), "into_key": target.key, "previous_state": previous.value},
        )
        await write(target, "merged_in", {"source": str(source.id), "source_key": source.key})
        source.version += 1
    target.version += 1
    await session.flush()
    return sources


async def unmerge(session: AsyncSession, principal: Principal, source: Incident) -> Incident:
    if not is_staff(principal):
        raise Forbidden("Only MSP staff undo a merge.")
    if source.merged_into_id is None:
        raise Conflict(f"Incident {source.key} is not merged.")
    repo = IncidentRepository(session)
    target = await repo.get(source.merged_into_id, for_update=True)
    history = await repo.events([source.id], public_only=False)
    merged = [e for e in history if e.type == "merged"]
    previous = IncidentState(merged[-1].data.get("previous_state", "new")) if merged else IncidentState.new
    write = EventWriter(session, principal.key)
    source.merged_into_id = None
    source.resolution_code = None
    source.closed_at = None
    label(session, source, "unmerged")
    await _set_state(write, source, previous, {"reason": "merge undone"})
    await write(source, "unmerged", {"from": str(target.id) if target else None})
    if target is not None:
        await write(target, "merged_out", {"source": str(source.id), "source_key": source.key})
        target.version += 1
    source.version += 1
    await session.flush()
    return source


__all__ = ["Channel", "EventWriter", "InvalidTransition", "is_staff"]
