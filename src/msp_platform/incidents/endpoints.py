"""/api/v1/incidents: raise, read, work and merge incidents; queues; the priority matrix."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from litestar import Controller, Response, get, patch, post, put
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from msp_platform.auth.guards import protected
from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role, Scope
from msp_platform.incidents import service
from msp_platform.incidents.priority import DEFAULT_MATRIX, label
from msp_platform.incidents.repository import IncidentRepository, QueueFilter
from msp_platform.incidents.schemas import (
    CommentIn,
    CommentOut,
    EventOut,
    IncidentCreate,
    IncidentOut,
    IncidentUpdate,
    MatrixIn,
    MatrixOut,
    MergeIn,
    TransitionIn,
)
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import BadRequest, NotFound
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.patch import sent_fields
from msp_platform.models.incident import (
    Incident,
    IncidentComment,
    IncidentEvent,
    IncidentState,
    PriorityMatrix,
    Visibility,
)

IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match", description="The incident's version (ETag) to guard against lost updates."
    ),
]
Sort = Literal["priority", "opened_at", "-opened_at", "-updated_at", "number"]


def incident_out(i: Incident) -> IncidentOut:
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
        assignment_group=i.assignment_group,
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


def _with_etag(incident: Incident, status_code: int = 200) -> Response[IncidentOut]:
    return Response(
        incident_out(incident), status_code=status_code, headers={"ETag": f'"{incident.version}"'}
    )


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
    """An incident by id or by key (``SMH-000123``, or a legacy number), visible to the caller."""
    repo = IncidentRepository(session)
    try:
        incident = await repo.get(uuid.UUID(ref), for_update=for_update)
    except ValueError:
        incident = await repo.get_by_key(ref, for_update=for_update)
    if incident is None:
        raise NotFound(f"Incident {ref} not found.")
    service.check_visible(principal, incident)
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
        return _with_etag(incident, 201)

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
        assignment_group: FromQuery[str | None] = None,
        caller_id: FromQuery[uuid.UUID | None] = None,
        caller: FromQuery[str | None] = None,
        site_id: FromQuery[uuid.UUID | None] = None,
        channel: FromQuery[str | None] = None,
        category: FromQuery[str | None] = None,
        number: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        opened_after: FromQuery[datetime | None] = None,
        opened_before: FromQuery[datetime | None] = None,
    ) -> Page[IncidentOut]:
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
            assignment_group=assignment_group,
            caller_id=caller_id,
            caller_q=caller,
            site_id=site_id,
            channel=channel,
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
        return Page(items=[incident_out(i) for i in rows], next_cursor=next_cursor)

    @get(
        "/{ref:str}",
        summary="Get an incident by id or number (also legacy numbers)",
        **protected(Scope.incidents_read),
    )
    async def get_incident(
        self, session: Session, principal: Caller, ctx: Ctx, ref: FromPath[str]
    ) -> Response[IncidentOut]:
        return _with_etag(await load(session, principal, ref))

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
        return _with_etag(incident)

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
        return _with_etag(incident)

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
        self, session: Session, principal: Caller, ctx: Ctx, ref: FromPath[str]
    ) -> list[CommentOut]:
        incident = await load(session, principal, ref)
        rows = await IncidentRepository(session).comments(
            await _family(session, incident), public_only=not service.is_staff(principal)
        )
        return [comment_out(c) for c in rows]

    @get(
        "/{ref:str}/events",
        summary="The incident's history (with that of merged duplicates)",
        **protected(Scope.incidents_read),
    )
    async def history(
        self, session: Session, principal: Caller, ctx: Ctx, ref: FromPath[str]
    ) -> list[EventOut]:
        incident = await load(session, principal, ref)
        rows = await IncidentRepository(session).events(
            await _family(session, incident), public_only=not service.is_staff(principal)
        )
        return [event_out(e) for e in rows]

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
        target = await load(session, principal, ref, for_update=True)
        await service.merge(session, principal, target, data.source_ids)
        return _with_etag(target)

    @post(
        "/{ref:str}/unmerge",
        summary="Undo the merge of this (source) incident",
        status_code=200,
        **protected(Scope.incidents_write),
    )
    async def unmerge(
        self, session: Session, principal: Caller, tenant_id: TenantId, ref: FromPath[str]
    ) -> Response[IncidentOut]:
        source = await load(session, principal, ref, for_update=True)
        await service.unmerge(session, principal, source)
        return _with_etag(source)


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
        return _matrix_out(await service.set_matrix(session, data, principal))


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


__all__ = ["IncidentController", "PriorityMatrixController", "Visibility"]
