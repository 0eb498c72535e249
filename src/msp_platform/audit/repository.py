"""All SQL of the audit log's read side."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.audit import AuditEvent, PlatformAuditEvent

TENANT_ORDER = Ordering(
    "newest",
    (SortKey(AuditEvent.occurred_at, True), SortKey(AuditEvent.tenant_id), SortKey(AuditEvent.seq, True)),
)
PLATFORM_ORDER = Ordering("newest", (SortKey(PlatformAuditEvent.seq, True),))


def _filters(model: Any, stmt: Select[Any], **filters: Any) -> Select[Any]:
    for name in ("action", "object_type", "object_id", "actor"):
        if filters.get(name) is not None:
            stmt = stmt.where(getattr(model, name) == filters[name])
    since: datetime | None = filters.get("since")
    until: datetime | None = filters.get("until")
    if since is not None:
        stmt = stmt.where(model.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(model.occurred_at < until)
    return stmt


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self, *, limit: int | None, cursor: str | None, include_internal: bool, **filters: Any
    ) -> tuple[list[AuditEvent], str | None]:
        stmt = _filters(AuditEvent, select(AuditEvent), **filters)
        if not include_internal:
            stmt = stmt.where(AuditEvent.internal.is_(False))
        return await paginate(
            self.session, stmt, ordering=TENANT_ORDER, limit=limit, cursor=cursor, scope="audit"
        )

    async def platform_page(
        self, *, limit: int | None, cursor: str | None, **filters: Any
    ) -> tuple[list[PlatformAuditEvent], str | None]:
        stmt = _filters(PlatformAuditEvent, select(PlatformAuditEvent), **filters)
        return await paginate(
            self.session, stmt, ordering=PLATFORM_ORDER, limit=limit, cursor=cursor, scope="platform-audit"
        )
