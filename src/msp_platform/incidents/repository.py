"""All SQL of incidents: numbering, loading with row locks, queues, history, comments, matrices."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.authz.types import AccessibleTenantId
from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.device import Device
from msp_platform.models.incident import (
    Incident,
    IncidentComment,
    IncidentCounter,
    IncidentEvent,
    PriorityMatrix,
)
from msp_platform.models.site import Site
from msp_platform.models.staff import StaffMember
from msp_platform.models.user import User

ORDERINGS: dict[str, Ordering] = {
    # The queue: most urgent first, oldest first within a priority.
    "priority": Ordering(
        "priority",
        (
            SortKey(Incident.priority),
            SortKey(Incident.opened_at),
            SortKey(Incident.tenant_id),
            SortKey(Incident.id),
        ),
    ),
    "opened_at": Ordering(
        "opened_at", (SortKey(Incident.opened_at), SortKey(Incident.tenant_id), SortKey(Incident.id))
    ),
    "-opened_at": Ordering(
        "-opened_at",
        (SortKey(Incident.opened_at, True), SortKey(Incident.tenant_id, True), SortKey(Incident.id, True)),
    ),
    "-updated_at": Ordering(
        "-updated_at",
        (SortKey(Incident.updated_at, True), SortKey(Incident.tenant_id, True), SortKey(Incident.id, True)),
    ),
    "number": Ordering(
        "number", (SortKey(Incident.tenant_id), SortKey(Incident.number), SortKey(Incident.id))
    ),
}


@dataclass
class QueueFilter:
    states: Sequence[str] = ()
    priorities: Sequence[int] = ()
    tiers: Sequence[int] = ()
    tenant_ids: Sequence[uuid.UUID] = ()
    assignee_id: uuid.UUID | None = None
    unassigned: bool = False
    assignment_group: str | None = None
    caller_id: uuid.UUID | None = None
    caller_q: str | None = None
    site_id: uuid.UUID | None = None
    channel: str | None = None
    category: str | None = None
    q: str | None = None
    number: str | None = None
    opened_after: datetime | None = None
    opened_before: datetime | None = None
    # Tenant users see the incidents they raised or are the caller of.
    own_user_id: uuid.UUID | None = None
    own_reporter: str | None = None


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class IncidentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _locks(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    async def next_number(self, tenant_id: AccessibleTenantId) -> int:
        """Gap-free: the increment is part of the creating transaction (rolled back with it), and the counter
        row's lock orders concurrent creates of one tenant."""
        values = {"tenant_id": tenant_id, "last_number": 1}
        if self._locks:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(IncidentCounter).values(values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(IncidentCounter).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[IncidentCounter.tenant_id],
            set_={"last_number": IncidentCounter.last_number + 1},
        ).returning(IncidentCounter.last_number)
        number: int = (await self.session.execute(stmt)).scalar_one()
        return number

    async def get(self, incident_id: uuid.UUID, *, for_update: bool = False) -> Incident | None:
        stmt = select(Incident).where(Incident.id == incident_id)
        if for_update and self._locks:
            stmt = stmt.with_for_update()
        found: Incident | None = await self.session.scalar(
            stmt.execution_options(populate_existing=for_update)
        )
        return found

    async def get_by_key(self, key: str, *, for_update: bool = False) -> Incident | None:
        stmt = select(Incident).where(or_(Incident.key == key.upper(), Incident.legacy_number == key))
        if for_update and self._locks:
            stmt = stmt.with_for_update()
        rows = list((await self.session.scalars(stmt.limit(2))).all())
        # A key is unique per tenant; across a staff member's tenants it may not be, so only a unique hit counts.
        return rows[0] if len(rows) == 1 else None

    async def by_external(self, source: str, external_id: str) -> Incident | None:
        found: Incident | None = await self.session.scalar(
            select(Incident).where(Incident.external_source == source, Incident.external_id == external_id)
        )
        return found

    async def queue(
        self, f: QueueFilter, *, sort: str, limit: int | None, cursor: str | None
    ) -> tuple[list[Incident], str | None]:
        stmt: Select[Any] = select(Incident)
        if f.states:
            stmt = stmt.where(Incident.state.in_(f.states))
        if f.priorities:
            stmt = stmt.where(Incident.priority.in_(f.priorities))
        if f.tiers:
            stmt = stmt.where(Incident.tier.in_(f.tiers))
        if f.tenant_ids:
            stmt = stmt.where(Incident.tenant_id.in_(f.tenant_ids))
        if f.assignee_id is not None:
            stmt = stmt.where(Incident.assignee_id == f.assignee_id)
        if f.unassigned:
            stmt = stmt.where(Incident.assignee_id.is_(None))
        if f.assignment_group is not None:
            stmt = stmt.where(Incident.assignment_group == f.assignment_group)
        if f.caller_id is not None:
            stmt = stmt.where(Incident.caller_id == f.caller_id)
        if f.caller_q:
            pattern = _like(f.caller_q)
            callers = select(User.id).where(
                or_(
                    func.lower(User.name).like(pattern, escape="\\"),
                    func.lower(User.email).like(pattern, escape="\\"),
                )
            )
            stmt = stmt.where(Incident.caller_id.in_(callers))
        if f.site_id is not None:
            stmt = stmt.where(Incident.site_id == f.site_id)
        if f.channel is not None:
            stmt = stmt.where(Incident.channel == f.channel)
        if f.category is not None:
            stmt = stmt.where(Incident.category == f.category)
        if f.number:
            stmt = stmt.where(or_(Incident.key == f.number.upper(), Incident.legacy_number == f.number))
        if f.q:
            pattern = _like(f.q)
            stmt = stmt.where(
                or_(
                    func.lower(Incident.title).like(pattern, escape="\\"),
                    func.lower(Incident.description).like(pattern, escape="\\"),
                    func.lower(Incident.key).like(pattern, escape="\\"),
                    func.lower(func.coalesce(Incident.legacy_number, "")).like(pattern, escape="\\"),
                )
            )
        if f.opened_after is not None:
            stmt = stmt.where(Incident.opened_at >= f.opened_after)
        if f.opened_before is not None:
            stmt = stmt.where(Incident.opened_at < f.opened_before)
        if f.own_user_id is not None or f.own_reporter is not None:
            stmt = stmt.where(
                or_(Incident.caller_id == f.own_user_id, Incident.reported_by == f.own_reporter)
            )
        return await paginate(
            self.session,
            stmt,
            ordering=ORDERINGS[sort],
            limit=limit,
            cursor=cursor,
            scope=f"incidents:{sort}",
        )

    async def merged_sources(self, target_id: uuid.UUID) -> list[Incident]:
        rows = await self.session.scalars(select(Incident).where(Incident.merged_into_id == target_id))
        return list(rows.all())

    async def last_event_seq(self, incident_id: uuid.UUID) -> int:
        """The incident's last event number, with the incident row locked (PostgreSQL) so that two
        transactions appending to one incident's log take turns instead of colliding on a number."""
        if self._locks:
            await self.session.execute(
                select(Incident.id).where(Incident.id == incident_id).with_for_update()
            )
        found = await self.session.scalar(
            select(func.max(IncidentEvent.seq)).where(IncidentEvent.incident_id == incident_id)
        )
        return int(found or 0)

    async def events(self, incident_ids: Sequence[uuid.UUID], *, public_only: bool) -> list[IncidentEvent]:
        stmt = select(IncidentEvent).where(IncidentEvent.incident_id.in_(incident_ids))
        if public_only:
            stmt = stmt.where(IncidentEvent.visibility == "public")
        rows = await self.session.scalars(
            stmt.order_by(IncidentEvent.occurred_at, IncidentEvent.incident_id, IncidentEvent.seq)
        )
        return list(rows.all())

    async def comments(
        self, incident_ids: Sequence[uuid.UUID], *, public_only: bool
    ) -> list[IncidentComment]:
        stmt = select(IncidentComment).where(IncidentComment.incident_id.in_(incident_ids))
        if public_only:
            stmt = stmt.where(IncidentComment.visibility == "public")
        rows = await self.session.scalars(stmt.order_by(IncidentComment.created_at, IncidentComment.id))
        return list(rows.all())

    async def has_staff_public_comment(self, incident_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(func.count())
            .select_from(IncidentComment)
            .where(
                IncidentComment.incident_id == incident_id,
                IncidentComment.visibility == "public",
                IncidentComment.author.like("staff:%"),
            )
        )
        return bool(found)

    # --- references --------------------------------------------------------------------------------

    async def user(self, user_id: uuid.UUID) -> User | None:
        found: User | None = await self.session.scalar(select(User).where(User.id == user_id))
        return found

    async def device(self, device_id: uuid.UUID) -> Device | None:
        found: Device | None = await self.session.scalar(select(Device).where(Device.id == device_id))
        return found

    async def site(self, site_id: uuid.UUID) -> Site | None:
        found: Site | None = await self.session.scalar(select(Site).where(Site.id == site_id))
        return found

    async def staff(self, staff_id: uuid.UUID) -> StaffMember | None:
        found: StaffMember | None = await self.session.get(StaffMember, staff_id)
        return found

    # --- priority matrices -------------------------------------------------------------------------

    async def current_matrix(self) -> PriorityMatrix | None:
        found: PriorityMatrix | None = await self.session.scalar(
            select(PriorityMatrix).order_by(PriorityMatrix.version.desc()).limit(1)
        )
        return found

    async def matrix_versions(self) -> list[PriorityMatrix]:
        rows = await self.session.scalars(select(PriorityMatrix).order_by(PriorityMatrix.version.desc()))
        return list(rows.all())
