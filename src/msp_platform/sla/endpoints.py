"""/api/v1/sla: policies and recalculation; /api/v1/incidents/{ref}/sla: an incident's clocks, explained."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Role, Scope
from msp_platform.incidents.endpoints import load
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import NotFound
from msp_platform.models.sla import SlaPolicy
from msp_platform.sla import service
from msp_platform.sla.clock import ClockResult
from msp_platform.sla.repository import SlaRepository
from msp_platform.sla.schemas import (
    ClockOut,
    IncidentSlaOut,
    MissedUpdateOut,
    OutcomeOut,
    PolicyIn,
    PolicyOut,
    RecalcChange,
    RecalculateIn,
    RecalculateOut,
    SegmentOut,
    WarningOut,
)

ADMIN = protected(Scope.sla_write, roles=(Role.msp_admin,))


def policy_out(p: SlaPolicy) -> PolicyOut:
    return PolicyOut(
        version=p.version,
        name=p.name,
        calendar=p.calendar,
        custom_calendar=p.custom_calendar,
        pause_states=p.pause_states,
        pause_hold_reasons=p.pause_hold_reasons,
        warning_percents=p.warning_percents,
        targets=p.targets,
        created_at=p.created_at,
        created_by=p.created_by,
    )


def clock_out(c: ClockResult) -> ClockOut:
    return ClockOut(
        target=c.target,
        duration_seconds=int(c.duration.total_seconds()),
        status=c.status,
        elapsed_seconds=int(c.elapsed.total_seconds()),
        paused_seconds=int(c.paused.total_seconds()),
        outside_hours_seconds=int(c.outside_hours.total_seconds()),
        remaining_seconds=int(c.remaining.total_seconds()),
        due_at=c.due_at,
        breached_at=c.breached_at,
        stopped_at=c.stopped_at,
        warnings=[
            WarningOut(percent=w.percent, reached_at=w.reached_at, due_at=w.due_at) for w in c.warnings
        ],
        segments=[
            SegmentOut(
                start=s.start,
                end=s.end,
                kind=s.kind,
                state=s.state,
                seconds=int((s.end - s.start).total_seconds()),
            )
            for s in c.segments
        ],
        explanation=service.explain(c),
    )


def _outcome(c: ClockResult | None) -> OutcomeOut | None:
    return OutcomeOut(status=c.status, due_at=c.due_at, breached_at=c.breached_at) if c else None


class SlaController(Controller):
    path = "/api/v1"
    tags = ["SLA"]
    dependencies = DEPENDENCIES

    @get("/sla/policy", summary="The SLA policy in force for new incidents", **protected(Scope.sla_read))
    async def current(self, session: Session, tenant_id: TenantId) -> PolicyOut:
        policy = await SlaRepository(session).current_policy()
        if policy is None:
            raise NotFound("This tenant has no SLA policy yet.")
        return policy_out(policy)

    @get("/sla/policies", summary="Every SLA policy version, newest first", **protected(Scope.sla_read))
    async def versions(self, session: Session, tenant_id: TenantId) -> list[PolicyOut]:
        return [policy_out(p) for p in await SlaRepository(session).policies()]

    @post("/sla/policies", summary="Publish a new SLA policy version (MSP admins)", **ADMIN)
    async def publish(
        self, session: Session, principal: Caller, tenant_id: TenantId, data: JSONBody[PolicyIn]
    ) -> PolicyOut:
        return policy_out(await service.publish_policy(session, principal, data))

    @post(
        "/sla/recalculate",
        summary="Recompute incidents opened in a period under a policy version; returns the outcome diff and "
        "applies it only with apply=true",
        status_code=200,
        **ADMIN,
    )
    async def recalculate(
        self, session: Session, tenant_id: TenantId, data: JSONBody[RecalculateIn]
    ) -> RecalculateOut:
        examined, rows = await service.recalculate(
            session,
            opened_from=data.opened_from,
            opened_to=data.opened_to,
            version=data.policy_version,
            apply=data.apply,
        )
        return RecalculateOut(
            examined=examined,
            changed=len(rows),
            applied=data.apply,
            policy_version=data.policy_version,
            changes=[
                RecalcChange(
                    incident_id=r.incident.id,
                    key=r.incident.key,
                    target=r.target,
                    policy_version_before=None if data.apply else r.incident.sla_policy_version,
                    before=_outcome(r.before),
                    after=_outcome(r.after),
                )
                for r in rows
            ],
        )

    @get(
        "/incidents/{ref:str}/sla",
        summary="An incident's SLA clocks, explained segment by segment",
        **protected(Scope.incidents_read),
    )
    async def incident_sla(
        self, session: Session, principal: Caller, ctx: Ctx, ref: FromPath[str]
    ) -> IncidentSlaOut:
        incident = await load(session, principal, ref)
        evaluation = await service.evaluate(session, incident)
        return IncidentSlaOut(
            incident_id=incident.id,
            key=incident.key,
            priority=incident.priority,
            policy_version=evaluation.policy.version if evaluation.policy else None,
            calendar=evaluation.calendar_description,
            as_of=evaluation.as_of,
            clocks=[clock_out(c) for c in evaluation.clocks],
            update_cadence_minutes=evaluation.update_minutes,
            missed_updates=[
                MissedUpdateOut(due_at=m.due_at, late_until=m.late_until) for m in evaluation.missed_updates
            ],
        )
