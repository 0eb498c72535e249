"""/api/v1/incidents: raise, read, work, merge and import incidents; queues; the priority matrix; the MSP's
assignment groups."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from litestar import Controller, Response, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from msp_platform.auth.guards import protected
from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role, Scope
from msp_platform.incidents import groups, importing, service
from msp_platform.incidents.priority import DEFAULT_MATRIX, label
from msp_platform.incidents.repository import IncidentRepository, QueueFilter
from msp_platform.incidents.schemas import (
    CommentIn,
    CommentOut,
    EventOut,
    GroupCreate,
    GroupOut,
    GroupUpdate,
    IncidentCreate,
    IncidentImportBatch,
    IncidentImportReport,
    IncidentOut,
    IncidentUpdate,
    MatrixIn,
    MatrixOut,
    MemberIn,
    MemberOut,
    MergeIn,
    TransitionIn,
)
from msp_platform.kit.bulk import IMPORT_MAX_BODY_BYTES, ImportMode
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import BadRequest, FieldError, ValidationFailed
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.params import require_aware
from msp_platform.kit.patch import sent_fields
from msp_platform.models.assignment_group import AssignmentGroup
from msp_platform.models.incident import (
    Channel,
    Incident,
    IncidentComment,
    IncidentEvent,
    IncidentState,
    PriorityMatrix,
    Visibility,
)
from msp_platform.models.staff import StaffMember

IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match", description="The incident's version (ETag) to guard against lost updates."
    ),
]
Sort = Literal["priority", "opened_at", "-opened_at", "-updated_at", "number"]
IMPORT_DESCRIPTION = """\
Imports incidents from another ticket system with their original opening time and history, so SLA clocks
are computed from what really happened. MSP admins (naming the tenant with `MSP-Tenant`), tenant admins and
integration clients.

Each incident names its `external_source` and `external_id` (the import is idempotent on them: a known one
is reported as `skipped` with the incident it already is), optionally its `legacy_number` (unique per tenant
and source, looked up in any case), its fields, `opened_at` and its `events` in time order: `assigned`,
`state_changed`, `priority_changed`, `tier_changed`, `commented` (public or internal) and `responded`, each
with its original `at` (with a UTC offset, not in the future) and its actor (`staff_id`, `user_id`, or the
`actor` name in the source system). The history is replayed through the incident state machine.

`mode=atomic` (default) stores nothing if any incident is invalid: 422 `import-failed` with `report.rows`
naming each problem (`events[3].to`). `mode=partial` stores the valid incidents and reports the others.
Imported incidents get numbers from the tenant's own sequence; their events are marked `imported`.
"""


def incident_out(i: Incident, group_name: str | None = None) -> IncidentOut:
    return IncidentOut(
        id=i.id,
        tenant_id=i.tenant_id,
        key=i.key,
        number=i.number,
        title=i.title,
        description=i.description,
        caller_id=i.caller_id,
        reported_by=i.reported_by,
        affected_device_id=i.affected_device_id,
        site_id=i.site_id,
        category=i.category,
        subcategory=i.subcategory,
        channel=i.channel,
        impact=i.impact,
        urgency=i.urgency,
        patient_care_impact=i.patient_care_impact,
        priority=i.priority,
        priority_label=label(i.priority),
        priority_matrix_version=i.priority_matrix_version,
        tier=i.tier,
        assignment_group_id=i.assignment_group_id,
        assignment_group=group_name,
        assignee_id=i.assignee_id,
        state=i.state,
        on_hold_reason=i.on_hold_reason,
        resolution_code=i.resolution_code,
        resolution_notes=i.resolution_notes,
        opened_at=i.opened_at,
        first_response_at=i.first_response_at,
        resolved_at=i.resolved_at,
        closed_at=i.closed_at,
        reopen_count=i.reopen_count,
        first_contact_resolution=i.first_contact_resolution,
        external_source=i.external_source,
        external_id=i.external_id,
        legacy_number=i.legacy_number,
        merged_into_id=i.merged_into_id,
        version=i.version,
        created_at=i.created_at,
        updated_at=i.updated_at,
    )


async def incidents_out(session: Session, incidents: list[Incident]) -> list[IncidentOut]:
    names = await IncidentRepository(session).groups_by_id([i.assignment_group_id for i in incidents])
    return [
        incident_out(i, names[i.assignment_group_id].name if i.assignment_group_id in names else None)
        for i in incidents
    ]


async def _with_etag(session: Session, incident: Incident, status_code: int = 200) -> Response[IncidentOut]:
    (body,) = await incidents_out(session, [incident])
    return Response(body, status_code=status_code, headers={"ETag": f'"{incident.version}"'})


def event_out(e: IncidentEvent) -> EventOut:
    return EventOut(
        id=e.id,
        incident_id=e.incident_id,
        seq=e.seq,
        type=e.type,
        occurred_at=e.occurred_at,
        actor=e.actor,
        visibility=e.visibility,
        data=e.data,
        imported=e.imported,
    )


def comment_out(c: IncidentComment) -> CommentOut:
    return CommentOut(
        id=c.id,
        incident_id=c.incident_id,
        author=c.author,
        author_name=c.author_name,
        body=c.body,
        visibility=c.visibility,
        created_at=c.created_at,
    )


async def load(session: Session, principal: Principal, ref: str, *, for_update: bool = False) -> Incident:
    """An incident by id or by key (``SMH-000123``, or a legacy number in any case), visible to the caller;
    ``for_update`` locks its row (and re-reads it)."""
    repo = IncidentRepository(session)
    if for_update:
        try:
            locked = await repo.get(uuid.UUID(ref), for_update=True)
        except ValueError:
            locked = None
        if locked is not None:
            await service.check_visible(session, principal, locked)
            return locked
    incident = await service.find(session, principal, ref)
    if for_update:
        await repo.get(incident.id, for_update=True)
    return incident


async def _family(session: Session, incident: Incident) -> list[uuid.UUID]:
    """The incident and those merged into it: their history and comments show on it."""
    sources = await IncidentRepository(session).merged_sources(incident.id)
    return [incident.id, *(s.id for s in sources)]


class IncidentController(Controller):
    path = "/api/v1/incidents"
    tags = ["Incidents"]
    dependencies = DEPENDENCIES

    @post("/", summary="Raise an incident", **protected(Scope.incidents_write))
    async def create(
        self, session: Session, principal: Caller, tenant_id: TenantId, data: JSONBody[IncidentCreate]
    ) -> Response[IncidentOut]:
        incident = await service.create_incident(session, principal, tenant_id, data)
        return await _with_etag(session, incident, 201)

    @get(
        "/",
        summary="Incident queue: tenant users see their own, tenant admins their tenant's, staff every tenant they are granted",
        **protected(Scope.incidents_read),
    )
    async def queue(
        self,
        session: Session,
        principal: Caller,
        ctx: Ctx,
        limit: Limit = None,
        cursor: Cursor = None,
        sort: FromQuery[Sort] = "priority",
        states_in: Annotated[list[IncidentState] | None, QueryParameter(name="state")] = None,
        open_only: Annotated[
            bool | None, QueryParameter(name="open", description="only open incidents")
        ] = None,
        priority: FromQuery[list[int] | None] = None,
        tier: FromQuery[list[int] | None] = None,
        tenant: FromQuery[list[uuid.UUID] | None] = None,
        assignee: FromQuery[str | None] = None,
        assignment_group_id: FromQuery[uuid.UUID | None] = None,
        caller_id: FromQuery[uuid.UUID | None] = None,
        caller: FromQuery[str | None] = None,
        site_id: FromQuery[uuid.UUID | None] = None,
        channel: FromQuery[Channel | None] = None,
        category: FromQuery[str | None] = None,
        number: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        opened_after: FromQuery[datetime | None] = None,
        opened_before: FromQuery[datetime | None] = None,
    ) -> Page[IncidentOut]:
        require_aware(opened_after=opened_after, opened_before=opened_before)
        ranges = [FieldError("priority", "priorities are 1..5") for p in priority or [] if not 1 <= p <= 5][
            :1
        ]
        ranges += [FieldError("tier", "tiers are 1..3") for t in tier or [] if not 1 <= t <= 3][:1]
        if ranges:
            raise ValidationFailed("A filter is out of range.", errors=ranges)
        states: list[str] = [s.value for s in states_in or []]
        if open_only is True:
            states = states or [
                s.value
                for s in (
                    IncidentState.new,
                    IncidentState.assigned,
                    IncidentState.in_progress,
                    IncidentState.on_hold,
                )
            ]
        filters = QueueFilter(
            states=states,
            priorities=priority or [],
            tiers=tier or [],
            tenant_ids=tenant or [],
            assignment_group_id=assignment_group_id,
            caller_id=caller_id,
            caller_q=caller,
            site_id=site_id,
            channel=channel.value if channel else None,
            category=category,
            number=number,
            q=q,
            opened_after=opened_after,
            opened_before=opened_before,
        )
        if assignee == "me":
            if principal.staff_id is None:
                raise BadRequest("assignee=me is for MSP staff.")
            filters.assignee_id = principal.staff_id
        elif assignee == "none":
            filters.unassigned = True
        elif assignee:
            try:
                filters.assignee_id = uuid.UUID(assignee)
            except ValueError as exc:
                raise BadRequest("assignee is a staff id, 'me' or 'none'.") from exc
        if principal.role is Role.tenant_user:
            filters.own_user_id = principal.user_id
            filters.own_reporter = principal.key
        rows, next_cursor = await IncidentRepository(session).queue(
            filters, sort=sort, limit=limit, cursor=cursor
        )
        return Page(items=await incidents_out(session, rows), next_cursor=next_cursor)

    @post(
        "/import",
        status_code=200,
        summary="Import incidents with their history from another ticket system (up to 500 per request)",
        description=IMPORT_DESCRIPTION,
        request_max_body_size=IMPORT_MAX_BODY_BYTES,
        **protected(Scope.incidents_write, roles=(Role.msp_admin, Role.tenant_admin)),
    )
    async def import_history(
        self,
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        data: JSONBody[IncidentImportBatch],
        mode: FromQuery[ImportMode] = ImportMode.atomic,
    ) -> IncidentImportReport:
        return await importing.import_incidents(session, principal, tenant_id, data.incidents, mode=mode)

    @get(
        "/{ref:str}",
        summary="Get an incident by id or number (also legacy numbers)",
        **protected(Scope.incidents_read),
    )
    async def get_incident(
        self, session: Session, principal: Caller, ctx: Ctx, ref: FromPath[str]
    ) -> Response[IncidentOut]:
        return await _with_etag(session, await load(session, principal, ref))

    @patch(
        "/{ref:str}", summary="Update an incident (only the fields sent)", **protected(Scope.incidents_write)
    )
    async def update(
        self,
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        ref: FromPath[str],
        data: JSONBody[IncidentUpdate],
        if_match: IfMatch = None,
    ) -> Response[IncidentOut]:
        incident = await load(session, principal, ref, for_update=True)
        service.check_version(incident, if_match)
        await service.update_incident(session, principal, incident, sent_fields(data))
        return await _with_etag(session, incident)

    @post(
        "/{ref:str}/transitions",
        summary="Move an incident through its lifecycle",
        status_code=200,
        **protected(Scope.incidents_write),
    )
    async def move(
        self,
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        ref: FromPath[str],
        data: JSONBody[TransitionIn],
        if_match: IfMatch = None,
    ) -> Response[IncidentOut]:
        incident = await load(session, principal, ref, for_update=True)
        service.check_version(incident, if_match)
        await service.transition(session, principal, incident, data)
        return await _with_etag(session, incident)

    @post(
        "/{ref:str}/comments",
        summary="Add a public comment or an internal work note",
        **protected(Scope.incidents_write),
    )
    async def comment(
        self,
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        ref: FromPath[str],
        data: JSONBody[CommentIn],
    ) -> CommentOut:
        incident = await load(session, principal, ref, for_update=True)
        return comment_out(
            await service.add_comment(session, principal, incident, data.body, data.visibility, None)
        )

    @get(
        "/{ref:str}/comments",
        summary="Comments (with those of merged duplicates)",
        **protected(Scope.incidents_read),
    )
    async def comments(
        self,
        session: Session,
        principal: Caller,
        ctx: Ctx,
        ref: FromPath[str],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> Page[CommentOut]:
        incident = await load(session, principal, ref)
        rows, next_cursor = await IncidentRepository(session).comments_page(
            await _family(session, incident),
            public_only=not service.is_staff(principal),
            limit=limit,
            cursor=cursor,
        )
        return Page(items=[comment_out(c) for c in rows], next_cursor=next_cursor)

    @get(
        "/{ref:str}/events",
        summary="The incident's history (with that of merged duplicates)",
        description="Oldest first. `seq` is the event's position in the incident's whole log, which also "
        "holds staff-only entries (internal work notes, escalations and pages): tenant users and clients "
        "do not see those, so the numbers they read may skip. Nothing is ever removed from the log.",
        **protected(Scope.incidents_read),
    )
    async def history(
        self,
        session: Session,
        principal: Caller,
        ctx: Ctx,
        ref: FromPath[str],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> Page[EventOut]:
        incident = await load(session, principal, ref)
        rows, next_cursor = await IncidentRepository(session).events_page(
            await _family(session, incident),
            public_only=not service.is_staff(principal),
            limit=limit,
            cursor=cursor,
        )
        return Page(items=[event_out(e) for e in rows], next_cursor=next_cursor)

    @post(
        "/{ref:str}/merge",
        summary="Merge duplicates into this incident",
        status_code=200,
        **protected(Scope.incidents_write),
    )
    async def merge(
        self,
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        ref: FromPath[str],
        data: JSONBody[MergeIn],
    ) -> Response[IncidentOut]:
        # Not locked here: the service locks the target with the sources, in id order.
        target = await load(session, principal, ref)
        await service.merge(session, principal, target, data.source_ids)
        return await _with_etag(session, target)

    @post(
        "/{ref:str}/unmerge",
        summary="Undo the merge of this (source) incident",
        status_code=200,
        **protected(Scope.incidents_write),
    )
    async def unmerge(
        self, session: Session, principal: Caller, tenant_id: TenantId, ref: FromPath[str]
    ) -> Response[IncidentOut]:
        source = await load(session, principal, ref)
        await service.unmerge(session, principal, source)
        return await _with_etag(session, source)


class PriorityMatrixController(Controller):
    path = "/api/v1/priority-matrix"
    tags = ["Incidents"]
    dependencies = DEPENDENCIES

    @get("/", summary="The tenant's current impact x urgency matrix", **protected(Scope.incidents_read))
    async def current(self, session: Session, tenant_id: TenantId) -> MatrixOut:
        row = await IncidentRepository(session).current_matrix()
        if row is None:
            m = DEFAULT_MATRIX
            return MatrixOut(
                version=m.version,
                cells=m.cells,
                patient_care_raise=m.patient_care_raise,
                patient_care_floor=m.patient_care_floor,
                vip_raise=m.vip_raise,
                created_at=None,
                created_by=None,
            )
        return _matrix_out(row)

    @get("/versions", summary="Every version of the matrix, newest first", **protected(Scope.incidents_read))
    async def versions(self, session: Session, tenant_id: TenantId) -> list[MatrixOut]:
        return [_matrix_out(r) for r in await IncidentRepository(session).matrix_versions()]

    @put(
        "/",
        summary="Publish a new matrix version (incidents keep the version they were prioritised with)",
        **protected(Scope.sla_write, roles=(Role.msp_admin,)),
    )
    async def replace(
        self, session: Session, principal: Caller, tenant_id: TenantId, data: JSONBody[MatrixIn]
    ) -> MatrixOut:
        return _matrix_out(await service.set_matrix(session, tenant_id, data, principal))


def _matrix_out(row: PriorityMatrix) -> MatrixOut:
    return MatrixOut(
        version=row.version,
        cells=row.cells,
        patient_care_raise=row.patient_care_raise,
        patient_care_floor=row.patient_care_floor,
        vip_raise=row.vip_raise,
        created_at=row.created_at,
        created_by=row.created_by,
    )


STAFF = protected(Scope.staff_read, roles=(Role.msp_admin, Role.msp_agent))
GROUPS_ADMIN = protected(Scope.staff_write, roles=(Role.msp_admin,))


def group_out(g: AssignmentGroup) -> GroupOut:
    return GroupOut(
        id=g.id,
        name=g.name,
        tier=g.tier,
        description=g.description,
        active=g.active,
        tenant_ids=[uuid.UUID(str(t)) for t in g.tenant_ids] if g.tenant_ids is not None else None,
        created_at=g.created_at,
        updated_at=g.updated_at,
    )


def member_out(m: StaffMember) -> MemberOut:
    return MemberOut(
        staff_id=m.id, name=m.name, email=m.email, role=m.role.value, tier=m.tier, active=m.active
    )


class AssignmentGroupController(Controller):
    """The MSP's teams. Not tenant data: staff read them, MSP admins manage them."""

    path = "/api/v1/assignment-groups"
    tags = ["Incidents"]
    dependencies = DEPENDENCIES

    @get("/", summary="List assignment groups", **STAFF)
    async def list_groups(
        self,
        session: Session,
        limit: Limit = None,
        cursor: Cursor = None,
        active: FromQuery[bool | None] = None,
        tier: Annotated[int | None, QueryParameter(ge=1, le=3)] = None,
        member: Annotated[
            uuid.UUID | None, QueryParameter(description="groups this staff member belongs to")
        ] = None,
        q: Annotated[str | None, QueryParameter(max_length=80, description="part of the name")] = None,
    ) -> Page[GroupOut]:
        rows, next_cursor = await IncidentRepository(session).groups_page(
            limit=limit, cursor=cursor, active=active, tier=tier, member_id=member, q=q
        )
        return Page(items=[group_out(g) for g in rows], next_cursor=next_cursor)

    @post("/", summary="Create an assignment group", **GROUPS_ADMIN)
    async def create_group(self, session: Session, data: JSONBody[GroupCreate]) -> GroupOut:
        return group_out(await groups.create_group(session, data))

    @get("/{group_id:uuid}", summary="Get an assignment group", **STAFF)
    async def get_group(self, session: Session, group_id: FromPath[uuid.UUID]) -> GroupOut:
        return group_out(await groups.get_group(session, group_id))

    @patch("/{group_id:uuid}", summary="Update an assignment group (only the fields sent)", **GROUPS_ADMIN)
    async def update_group(
        self, session: Session, group_id: FromPath[uuid.UUID], data: JSONBody[GroupUpdate]
    ) -> GroupOut:
        group = await groups.get_group(session, group_id)
        return group_out(await groups.update_group(session, group, sent_fields(data)))

    @delete(
        "/{group_id:uuid}",
        summary="Delete an assignment group no incident names (otherwise deactivate it)",
        **GROUPS_ADMIN,
    )
    async def delete_group(self, session: Session, group_id: FromPath[uuid.UUID]) -> None:
        await groups.delete_group(session, await groups.get_group(session, group_id))

    @get("/{group_id:uuid}/members", summary="The group's members", **STAFF)
    async def list_members(
        self, session: Session, group_id: FromPath[uuid.UUID], limit: Limit = None, cursor: Cursor = None
    ) -> Page[MemberOut]:
        await groups.get_group(session, group_id)
        rows, next_cursor = await IncidentRepository(session).members_page(
            group_id, limit=limit, cursor=cursor
        )
        return Page(items=[member_out(m) for m in rows], next_cursor=next_cursor)

    @post("/{group_id:uuid}/members", summary="Add a staff member to the group", **GROUPS_ADMIN)
    async def add_member(
        self, session: Session, group_id: FromPath[uuid.UUID], data: JSONBody[MemberIn]
    ) -> MemberOut:
        group = await groups.get_group(session, group_id)
        await groups.add_member(session, group, data.staff_id)
        member = await IncidentRepository(session).staff(data.staff_id)
        assert member is not None
        return member_out(member)

    @delete(
        "/{group_id:uuid}/members/{staff_id:uuid}", summary="Remove a member from the group", **GROUPS_ADMIN
    )
    async def remove_member(
        self, session: Session, group_id: FromPath[uuid.UUID], staff_id: FromPath[uuid.UUID]
    ) -> None:
        await groups.remove_member(session, await groups.get_group(session, group_id), staff_id)


__all__ = ["AssignmentGroupController", "IncidentController", "PriorityMatrixController", "Visibility"]
