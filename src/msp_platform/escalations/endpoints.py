"""/api/v1/escalation-policies, /api/v1/escalations and /api/v1/pages (acknowledge, resolve)."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Scope
from msp_platform.escalations import service
from msp_platform.escalations.repository import EscalationRepository
from msp_platform.escalations.schemas import EscalationOut, LevelOut, PageOut, PolicyIn, PolicyOut, TargetOut
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import NotFound
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.models.oncall import Escalation, EscalationPolicy
from msp_platform.models.oncall import Page as PageRow


async def policy_out(session: Session, policy: EscalationPolicy) -> PolicyOut:
    repo = EscalationRepository(session)
    levels = await repo.levels(policy.id)
    targets = await repo.targets([lv.id for lv in levels])
    return PolicyOut(
        id=policy.id,
        name=policy.name,
        active=policy.active,
        repeat_count=policy.repeat_count,
        triggers=list(policy.triggers),
        levels=[
            LevelOut(
                position=lv.position,
                delay_minutes=lv.delay_minutes,
                targets=[
                    TargetOut(
                        kind=t.kind,
                        staff_id=t.staff_id,
                        user_id=t.user_id,
                        schedule_id=t.schedule_id,
                        tier=t.tier,
                        policy_id=t.target_policy_id,
                    )
                    for t in targets
                    if t.level_id == lv.id
                ],
            )
            for lv in levels
        ],
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )


def escalation_out(e: Escalation) -> EscalationOut:
    return EscalationOut(
        id=e.id,
        incident_id=e.incident_id,
        policy_id=e.policy_id,
        trigger=e.trigger_key,
        state=e.state,
        level=e.level,
        repeat=e.repeat,
        started_at=e.started_at,
        acknowledged_at=e.acknowledged_at,
        acknowledged_by=e.acknowledged_by,
        resolved_at=e.resolved_at,
    )


def page_out(p: PageRow) -> PageOut:
    return PageOut(
        id=p.id,
        escalation_id=p.escalation_id,
        incident_id=p.incident_id,
        level=p.level,
        repeat=p.repeat,
        staff_id=p.staff_id,
        user_id=p.user_id,
        state=p.state,
        created_at=p.created_at,
        acknowledged_at=p.acknowledged_at,
        resolved_at=p.resolved_at,
    )


async def _policy(session: Session, policy_id: uuid.UUID) -> EscalationPolicy:
    policy = await EscalationRepository(session).policy(policy_id)
    if policy is None:
        raise NotFound(f"Escalation policy {policy_id} not found.")
    return policy


class EscalationPolicyController(Controller):
    path = "/api/v1/escalation-policies"
    tags = ["Escalations"]
    dependencies = DEPENDENCIES

    @post(
        "/",
        summary="Create an escalation policy (triggers, levels with delays and targets, repeats)",
        **protected(Scope.oncall_write),
    )
    async def create(self, session: Session, tenant_id: TenantId, data: JSONBody[PolicyIn]) -> PolicyOut:
        return await policy_out(session, await service.save_policy(session, tenant_id, data))

    @get("/", summary="List escalation policies", **protected(Scope.oncall_read))
    async def list_policies(
        self, session: Session, tenant_id: TenantId, limit: Limit = None, cursor: Cursor = None
    ) -> Page[PolicyOut]:
        rows, next_cursor = await EscalationRepository(session).policies_page(limit=limit, cursor=cursor)
        return Page(items=[await policy_out(session, p) for p in rows], next_cursor=next_cursor)

    @get("/{policy_id:uuid}", summary="Get an escalation policy", **protected(Scope.oncall_read))
    async def get_policy(
        self, session: Session, tenant_id: TenantId, policy_id: FromPath[uuid.UUID]
    ) -> PolicyOut:
        return await policy_out(session, await _policy(session, policy_id))

    @put(
        "/{policy_id:uuid}",
        summary="Replace an escalation policy (running escalations keep the ladder they started with)",
        **protected(Scope.oncall_write),
    )
    async def replace(
        self, session: Session, tenant_id: TenantId, policy_id: FromPath[uuid.UUID], data: JSONBody[PolicyIn]
    ) -> PolicyOut:
        policy = await _policy(session, policy_id)
        return await policy_out(session, await service.save_policy(session, tenant_id, data, existing=policy))

    @delete(
        "/{policy_id:uuid}",
        summary="Deactivate an escalation policy (it triggers nothing new; running escalations finish on their "
        "own ladder)",
        **protected(Scope.oncall_write),
    )
    async def deactivate(self, session: Session, tenant_id: TenantId, policy_id: FromPath[uuid.UUID]) -> None:
        await service.delete_policy(session, await _policy(session, policy_id))


class PageController(Controller):
    path = "/api/v1"
    tags = ["Escalations"]
    dependencies = DEPENDENCIES

    @get(
        "/escalations",
        summary="Escalations of an incident (oldest first), cursor-paginated",
        **protected(Scope.oncall_read),
    )
    async def escalations(
        self,
        session: Session,
        ctx: Ctx,
        incident_id: FromQuery[uuid.UUID],
        limit: Limit = None,
        cursor: Cursor = None,
        escalation_state: FromQuery[str | None] = None,
    ) -> Page[EscalationOut]:
        rows, next_cursor = await EscalationRepository(session).escalations_page(
            incident_id, limit=limit, cursor=cursor, state=escalation_state
        )
        return Page(items=[escalation_out(e) for e in rows], next_cursor=next_cursor)

    @get(
        "/pages",
        summary="Pages (filter by incident, state, or your own with mine=true)",
        **protected(Scope.incidents_read),
    )
    async def pages(
        self,
        session: Session,
        principal: Caller,
        ctx: Ctx,
        limit: Limit = None,
        cursor: Cursor = None,
        incident_id: FromQuery[uuid.UUID | None] = None,
        page_state: FromQuery[str | None] = None,
        mine: FromQuery[bool] = False,
    ) -> Page[PageOut]:
        staff_id = principal.staff_id if mine else None
        user_id = principal.user_id if (mine or principal.staff_id is None) else None
        rows, next_cursor = await EscalationRepository(session).pages_page(
            limit=limit,
            cursor=cursor,
            incident_id=incident_id,
            state=page_state,
            staff_id=staff_id,
            user_id=user_id,
        )
        return Page(items=[page_out(p) for p in rows], next_cursor=next_cursor)

    @post(
        "/pages/{page_id:uuid}/acknowledge",
        summary="Acknowledge a page: every escalation of its incident stops (nobody else is paged)",
        status_code=200,
        **protected(Scope.incidents_write),
    )
    async def acknowledge(
        self, session: Session, principal: Caller, tenant_id: TenantId, page_id: FromPath[uuid.UUID]
    ) -> PageOut:
        page = await service.get_page(session, page_id)
        return page_out(await service.acknowledge(session, principal, page))

    @post(
        "/pages/{page_id:uuid}/resolve",
        summary="Resolve a page: every escalation of its incident ends",
        status_code=200,
        **protected(Scope.incidents_write),
    )
    async def resolve(
        self, session: Session, principal: Caller, tenant_id: TenantId, page_id: FromPath[uuid.UUID]
    ) -> PageOut:
        page = await service.get_page(session, page_id)
        return page_out(await service.resolve_page(session, principal, page))
