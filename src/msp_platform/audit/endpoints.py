"""/api/v1/audit-events (a tenant's log) and /api/v1/platform/audit-events (MSP-side changes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, get
from litestar.params import FromQuery

from msp_platform.audit.repository import AuditRepository
from msp_platform.audit.schemas import AuditEventOut, ChainVerification
from msp_platform.audit.service import PLATFORM_CHAIN, verify_chain
from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Role, Scope
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.params import require_aware
from msp_platform.models.audit import AuditEvent, PlatformAuditEvent

READ = protected(Scope.audit_read, roles=(Role.tenant_admin, Role.msp_admin))
PLATFORM_READ = protected(Scope.audit_read, roles=(Role.msp_admin,))


def event_out(row: AuditEvent | PlatformAuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=row.id,
        tenant_id=getattr(row, "tenant_id", None),
        seq=row.seq,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        changes=row.changes,
        request_id=row.request_id,
        internal=row.internal,
        hash=row.hash,
        prev_hash=row.prev_hash,
    )


class AuditController(Controller):
    path = "/api/v1"
    tags = ["Audit log"]
    dependencies = DEPENDENCIES

    @get(
        "/audit-events",
        summary="A tenant's audit log, newest first",
        description="Tenant administrators read their tenant's log; MSP administrators name the tenant with "
        "`MSP-Tenant` (an offboarded tenant's log stays readable to them). Staff-only events (`internal`, e.g. "
        "about internal work notes) are listed for MSP staff only.",
        **READ,
    )
    async def list_events(
        self,
        session: Session,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = None,
        cursor: Cursor = None,
        action: FromQuery[str | None] = None,
        object_type: FromQuery[str | None] = None,
        object_id: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> Page[AuditEventOut]:
        require_aware(since=since, until=until)
        rows, next_cursor = await AuditRepository(session).page(
            limit=limit,
            cursor=cursor,
            include_internal=principal.is_staff,
            action=action,
            object_type=object_type,
            object_id=object_id,
            actor=actor,
            since=since,
            until=until,
        )
        return Page(items=[event_out(r) for r in rows], next_cursor=next_cursor)

    @get(
        "/audit-events/verify",
        summary="Recompute the tenant's hash chain (tamper check)",
        description="Recomputes every event's HMAC and checks the chain head: an altered, removed or "
        "re-hashed event, or a missing or altered head, gives `valid: false`.",
        **READ,
    )
    async def verify(self, session: Session, ctx: Ctx) -> ChainVerification:
        tenant_id = ctx.require_one_tenant()
        report = await session.run_sync(lambda s: verify_chain(s, str(tenant_id)))
        return ChainVerification(
            chain=report.chain,
            events=report.events,
            valid=report.valid,
            first_bad_seq=report.first_bad_seq,
            problem=report.problem,
        )

    @get(
        "/platform/audit-events", summary="MSP-side audit log (staff, grants), newest first", **PLATFORM_READ
    )
    async def list_platform(
        self,
        session: Session,
        limit: Limit = None,
        cursor: Cursor = None,
        action: FromQuery[str | None] = None,
        object_type: FromQuery[str | None] = None,
        object_id: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
    ) -> Page[AuditEventOut]:
        rows, next_cursor = await AuditRepository(session).platform_page(
            limit=limit,
            cursor=cursor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            actor=actor,
        )
        return Page(items=[event_out(r) for r in rows], next_cursor=next_cursor)

    @get("/platform/audit-events/verify", summary="Recompute the platform hash chain", **PLATFORM_READ)
    async def verify_platform(self, session: Session) -> ChainVerification:
        report = await session.run_sync(lambda s: verify_chain(s, PLATFORM_CHAIN))
        return ChainVerification(
            chain=report.chain,
            events=report.events,
            valid=report.valid,
            first_bad_seq=report.first_bad_seq,
            problem=report.problem,
        )


__all__ = ["Any", "AuditController"]
