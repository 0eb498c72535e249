"""/api/v1/sla: policies and recalculation; /api/v1/incidents/{ref}/sla: an incident's clocks, explained."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Role, Scope
from msp_platform.incidents.endpoints import load
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import FieldError, NotFound, ValidationFailed
from msp_platform.kit.params import require_aware
from msp_platform.kit.time import utcnow
from msp_platform.models.sla import SlaPolicy
from msp_platform.sla import service
from msp_platform.sla.clock import ClockResult, UpdateCadence
from msp_platform.sla.repository import SlaRepository
from msp_platform.sla.schemas import (
    ClockOut,
    IncidentSlaOut,
    MissedUpdateOut,
    OutcomeOut,
    PolicyIn,
    PolicyOut,
    PriorityPeriodOut,
    RecalcChange,
    RecalculateIn,
    RecalculateOut,
    SegmentOut,
    UpdateCadenceOut,
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


def clock_out(c: ClockResult, priorities: Any = ()) -> ClockOut:
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
        explanation=service.explain(c, priorities),
    )


def update_out(u: UpdateCadence) -> UpdateCadenceOut:
    current = u.current
    return UpdateCadenceOut(
        cadence_seconds=int(current.clock.duration.total_seconds()),
        status=u.status,
        next_update_due_at=u.next_due_at,
        cycle=current.number,
        cycle_started_at=current.started_at,
        elapsed_seconds=int(current.clock.elapsed.total_seconds()),
        remaining_seconds=int(current.clock.remaining.total_seconds()),
        warnings=[
            WarningOut(percent=w.percent, reached_at=w.reached_at, due_at=w.due_at)
            for w in current.clock.warnings
        ],
        missed=[MissedUpdateOut(due_at=m.due_at, late_until=m.late_until, cycle=m.cycle) for m in u.missed],
    )


def _outcome(c: dict[str, Any] | None) -> OutcomeOut | None:
    if c is None:
        return None
    return OutcomeOut(
        status=c["status"], due_at=c["due_at"], breached_at=c["breached_at"], stopped_at=c["stopped_at"]
    )


def encode_cursor(after: tuple[datetime, uuid.UUID]) -> str:
    raw = msgspec.json.encode(["sla.recalculate", after[0].isoformat(), str(after[1])])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        scope, at, ident = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(at)
        if scope != "sla.recalculate" or when.tzinfo is None:
            raise ValueError("cursor")
        return when, uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, msgspec.DecodeError) as exc:
        raise ValidationFailed(
            "The cursor is not valid.", errors=[FieldError("cursor", "use next_cursor of the previous page")]
        ) from exc


AsOf = Annotated[
    datetime | None,
    QueryParameter(
        name="as_of",
        description="Evaluate as of this past instant (ISO 8601 with offset); default now. Events after it are "
        "ignored, so the result is what the clocks showed then (under the incident's policy version and pinned "
        "calendar).",
    ),
]


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
        return policy_out(await service.publish_policy(session, principal, data, tenant_id))

    @post(
        "/sla/recalculate",
        summary="Recompute incidents opened in a period under a policy version; returns the outcome diff (status, "
        "due and breach times per target) a page at a time, and applies it only with apply=true",
        description="Each call examines at most `limit` incidents (default 500, at most 2000) in (opened_at, id) "
        "order; `next_cursor` asks for the next page. `after` is the outcome under `policy_version` and the "
        "calendar in force now; `before` under the incident's own version and pinned calendar. With `apply`, the "
        "page's incidents move to `policy_version`, their calendar is re-pinned and their stored results are "
        "refreshed (also when the version is unchanged); warnings and breaches newly passed on clocks still "
        "running are announced, those of finished incidents are recorded as history.",
        status_code=200,
        **ADMIN,
    )
    async def recalculate(
        self, session: Session, tenant_id: TenantId, data: JSONBody[RecalculateIn]
    ) -> RecalculateOut:
        require_aware(opened_from=data.opened_from, opened_to=data.opened_to)
        result = await service.recalculate(
            session,
            opened_from=data.opened_from,
            opened_to=data.opened_to,
            version=data.policy_version,
            apply=data.apply,
            limit=data.limit,
            after=decode_cursor(data.cursor) if data.cursor else None,
        )
        return RecalculateOut(
            examined=result.examined,
            changed=len(result.rows),
            applied=data.apply,
            policy_version=data.policy_version,
            changes=[
                RecalcChange(
                    incident_id=r.incident.id,
                    key=r.incident.key,
                    target=r.target,
                    policy_version_before=r.version_before,
                    before=_outcome(r.before),
                    after=_outcome(r.after),
                )
                for r in result.rows
            ],
            next_cursor=encode_cursor(result.next_after) if result.next_after else None,
        )

    @get(
        "/incidents/{ref:str}/sla",
        summary="An incident's SLA clocks, explained segment by segment",
        **protected(Scope.incidents_read),
    )
    async def incident_sla(
        self, session: Session, principal: Caller, ctx: Ctx, ref: FromPath[str], as_of: AsOf = None
    ) -> IncidentSlaOut:
        require_aware(as_of=as_of)
        if as_of is not None and as_of > utcnow():
            raise ValidationFailed(
                "as_of is in the future.", errors=[FieldError("as_of", "must not be in the future")]
            )
        incident = await load(session, principal, ref)
        evaluation = await service.evaluate(session, incident, as_of=as_of)
        priorities = evaluation.priorities
        return IncidentSlaOut(
            incident_id=incident.id,
            key=incident.key,
            priority=incident.priority,
            policy_version=evaluation.policy.version if evaluation.policy else None,
            calendar=evaluation.calendar_description,
            as_of=evaluation.as_of,
            clocks=[clock_out(c, priorities) for c in evaluation.clocks],
            update_cadence_minutes=evaluation.update_minutes,
            missed_updates=[
                MissedUpdateOut(due_at=m.due_at, late_until=m.late_until, cycle=m.cycle)
                for m in evaluation.missed_updates
            ],
            next_update_due_at=evaluation.next_update_due_at,
            update_cadence=update_out(evaluation.update) if evaluation.update else None,
            calendar_definition=evaluation.calendar,
            priority_history=[
                PriorityPeriodOut(since=at, priority=p) for at, p in priorities if at <= evaluation.as_of
            ],
            rules=list(service.RULES) if evaluation.policy else [],
        )
