"""All SQL of incidents: numbering, loading with row locks, queues, history, comments, matrices, assignment
groups."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from msp_platform.authz.types import AccessibleTenantId
from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.assignment_group import AssignmentGroup, AssignmentGroupMember
from msp_platform.models.device import Device
from msp_platform.models.incident import (
    Incident,
    IncidentComment,
    IncidentCounter,
    IncidentEvent,
    PriorityMatrix,
)
from msp_platform.models.site import Site
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User

# The history reads in the order things happened; (incident, seq) is unique, so the order is total.
EVENT_ORDER = Ordering(
    "occurred_at",
    (SortKey(IncidentEvent.occurred_at), SortKey(IncidentEvent.incident_id), SortKey(IncidentEvent.seq)),
)
COMMENT_ORDER = Ordering("created_at", (SortKey(IncidentComment.created_at), SortKey(IncidentComment.id)))
GROUP_ORDER = Ordering("name", (SortKey(AssignmentGroup.name), SortKey(AssignmentGroup.id)))
MEMBER_ORDER = Ordering("email", (SortKey(StaffMember.email), SortKey(StaffMember.id)))
# pg_advisory_xact_lock(class, object): the class number of "a tenant's priority matrix".
MATRIX_LOCK_CLASS = 0x1C1D

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
    assignment_group_id: uuid.UUID | None = None
    caller_id: uuid.UUID | None = None
    caller_q: str | None = None
    site_id: uuid.UUID | None = None
    channel: str | None = None
    category: str | None = None
    q: str | None = None
    number: str | None = None
    opened_after: datetime | None = None
    opened_before: datetime | None = None
    # Tenant users see the incidents they raised or are the caller of (or that such an incident was merged into).
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

    async def next_number(self, tenant_id: AccessibleTenantId, count: int = 1) -> int:
        """Take ``count`` numbers; returns the last one (the first is ``last - count + 1``). Gap-free: the
        increment is part of the creating transaction (rolled back with it), and the counter row's lock orders
        concurrent creates of one tenant until the commit, so callers take it as late as they can."""
        values = {"tenant_id": tenant_id, "last_number": count}
        if self._locks:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(IncidentCounter).values(values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(IncidentCounter).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[IncidentCounter.tenant_id],
            set_={"last_number": IncidentCounter.last_number + count},
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

    async def by_number(self, ref: str, *, limit: int = 20) -> list[Incident]:
        """Incidents whose key or legacy number is ``ref`` (any case). A key is unique per tenant and a legacy
        number per tenant and source system; across sources or a staff member's tenants several may match."""
        stmt = select(Incident).where(
            or_(Incident.key == ref.upper(), func.lower(Incident.legacy_number) == ref.lower())
        )
        rows = await self.session.scalars(stmt.order_by(Incident.tenant_id, Incident.number).limit(limit))
        return list(rows.all())

    async def by_external(self, source: str, external_id: str) -> Incident | None:
        found: Incident | None = await self.session.scalar(
            select(Incident).where(Incident.external_source == source, Incident.external_id == external_id)
        )
        return found

    async def by_externals(self, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Incident]:
        """Already recorded incidents among (source, external id) pairs."""
        found: dict[tuple[str, str], Incident] = {}
        wanted = list(dict.fromkeys(refs))
        for start in range(0, len(wanted), 200):
            chunk = wanted[start : start + 200]
            rows = await self.session.scalars(
                select(Incident).where(
                    or_(*(and_(Incident.external_source == s, Incident.external_id == e) for s, e in chunk))
                )
            )
            for row in rows:
                found[(str(row.external_source), str(row.external_id))] = row
        return found

    async def by_legacy(self, source: str | None, legacy_numbers: Sequence[str]) -> dict[str, Incident]:
        """Incidents of one source system (None: no source) holding these legacy numbers, by lower-cased number."""
        lowered = sorted({n.lower() for n in legacy_numbers})
        if not lowered:
            return {}
        found: dict[str, Incident] = {}
        for start in range(0, len(lowered), 500):
            rows = await self.session.scalars(
                select(Incident).where(
                    func.coalesce(Incident.external_source, "") == (source or ""),
                    func.lower(Incident.legacy_number).in_(lowered[start : start + 500]),
                )
            )
            for row in rows:
                found[str(row.legacy_number).lower()] = row
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
        if f.assignment_group_id is not None:
            stmt = stmt.where(Incident.assignment_group_id == f.assignment_group_id)
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
            stmt = stmt.where(
                or_(Incident.key == f.number.upper(), func.lower(Incident.legacy_number) == f.number.lower())
            )
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
            source = aliased(Incident)
            merged_own = exists(
                select(source.id).where(
                    source.tenant_id == Incident.tenant_id,
                    source.merged_into_id == Incident.id,
                    or_(source.caller_id == f.own_user_id, source.reported_by == f.own_reporter),
                )
            )
            stmt = stmt.where(
                or_(Incident.caller_id == f.own_user_id, Incident.reported_by == f.own_reporter, merged_own)
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

    async def events_page(
        self, incident_ids: Sequence[uuid.UUID], *, public_only: bool, limit: int | None, cursor: str | None
    ) -> tuple[list[IncidentEvent], str | None]:
        stmt = select(IncidentEvent).where(IncidentEvent.incident_id.in_(incident_ids))
        if public_only:
            stmt = stmt.where(IncidentEvent.visibility == "public")
        # The scope names the incident: a cursor of another incident's history is refused.
        scope = f"incident-events:{incident_ids[0]}:{'public' if public_only else 'all'}"
        return await paginate(
            self.session, stmt, ordering=EVENT_ORDER, limit=limit, cursor=cursor, scope=scope
        )

    async def comments_page(
        self, incident_ids: Sequence[uuid.UUID], *, public_only: bool, limit: int | None, cursor: str | None
    ) -> tuple[list[IncidentComment], str | None]:
        stmt = select(IncidentComment).where(IncidentComment.incident_id.in_(incident_ids))
        if public_only:
            stmt = stmt.where(IncidentComment.visibility == "public")
        scope = f"incident-comments:{incident_ids[0]}:{'public' if public_only else 'all'}"
        return await paginate(
            self.session, stmt, ordering=COMMENT_ORDER, limit=limit, cursor=cursor, scope=scope
        )

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

    async def users_by_id(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, User]:
        if not ids:
            return {}
        rows = await self.session.scalars(select(User).where(User.id.in_(set(ids))))
        return {r.id: r for r in rows}

    async def device_ids(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        return set((await self.session.scalars(select(Device.id).where(Device.id.in_(set(ids))))).all())

    async def site_ids(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        return set((await self.session.scalars(select(Site.id).where(Site.id.in_(set(ids))))).all())

    async def staff_by_id(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StaffMember]:
        if not ids:
            return {}
        rows = await self.session.scalars(select(StaffMember).where(StaffMember.id.in_(set(ids))))
        return {r.id: r for r in rows}

    async def staff_granted(self, staff: Sequence[StaffMember], tenant_id: uuid.UUID) -> set[uuid.UUID]:
        """Which of these staff members may act on the tenant: MSP admins on every tenant, agents through a
        grant on the tenant or on an ancestor whose grant includes its children (as ``authz`` decides)."""
        granted = {s.id for s in staff if s.role == StaffRole.msp_admin}
        agents = [s.id for s in staff if s.id not in granted]
        if not agents:
            return granted
        ancestors: list[uuid.UUID] = []
        current: uuid.UUID | None = tenant_id
        while current is not None and current not in ancestors and len(ancestors) < 32:
            ancestors.append(current)
            current = await self.session.scalar(select(Tenant.parent_id).where(Tenant.id == current))
        rows = await self.session.execute(
            select(StaffGrant.staff_id, StaffGrant.tenant_id, StaffGrant.include_children).where(
                StaffGrant.staff_id.in_(agents), StaffGrant.tenant_id.in_(ancestors)
            )
        )
        for staff_id, granted_tenant, include_children in rows:
            if granted_tenant == tenant_id or include_children:
                granted.add(staff_id)
        return granted

    async def existing_tenants(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        return set((await self.session.scalars(select(Tenant.id).where(Tenant.id.in_(set(ids))))).all())

    # --- assignment groups -------------------------------------------------------------------------

    async def group(self, group_id: uuid.UUID) -> AssignmentGroup | None:
        found: AssignmentGroup | None = await self.session.get(AssignmentGroup, group_id)
        return found

    async def group_by_name(self, name: str) -> AssignmentGroup | None:
        found: AssignmentGroup | None = await self.session.scalar(
            select(AssignmentGroup).where(func.lower(AssignmentGroup.name) == name.strip().lower())
        )
        return found

    async def groups_by_id(self, ids: Sequence[uuid.UUID | None]) -> dict[uuid.UUID, AssignmentGroup]:
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        rows = await self.session.scalars(select(AssignmentGroup).where(AssignmentGroup.id.in_(wanted)))
        return {r.id: r for r in rows}

    async def groups_page(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        active: bool | None,
        tier: int | None,
        member_id: uuid.UUID | None,
        q: str | None,
    ) -> tuple[list[AssignmentGroup], str | None]:
        stmt: Select[Any] = select(AssignmentGroup)
        if active is not None:
            stmt = stmt.where(AssignmentGroup.active.is_(active))
        if tier is not None:
            stmt = stmt.where(AssignmentGroup.tier == tier)
        if member_id is not None:
            stmt = stmt.where(
                AssignmentGroup.id.in_(
                    select(AssignmentGroupMember.group_id).where(AssignmentGroupMember.staff_id == member_id)
                )
            )
        if q:
            stmt = stmt.where(func.lower(AssignmentGroup.name).like(_like(q), escape="\\"))
        return await paginate(
            self.session, stmt, ordering=GROUP_ORDER, limit=limit, cursor=cursor, scope="assignment-groups"
        )

    async def members_page(
        self, group_id: uuid.UUID, *, limit: int | None, cursor: str | None
    ) -> tuple[list[StaffMember], str | None]:
        stmt: Select[Any] = (
            select(StaffMember)
            .join(AssignmentGroupMember, AssignmentGroupMember.staff_id == StaffMember.id)
            .where(AssignmentGroupMember.group_id == group_id)
        )
        return await paginate(
            self.session,
            stmt,
            ordering=MEMBER_ORDER,
            limit=limit,
            cursor=cursor,
            scope=f"assignment-group-members:{group_id}",
        )

    async def membership(self, group_id: uuid.UUID, staff_id: uuid.UUID) -> AssignmentGroupMember | None:
        found: AssignmentGroupMember | None = await self.session.scalar(
            select(AssignmentGroupMember).where(
                AssignmentGroupMember.group_id == group_id, AssignmentGroupMember.staff_id == staff_id
            )
        )
        return found

    # --- priority matrices -------------------------------------------------------------------------

    async def lock_matrix(self, tenant_id: uuid.UUID) -> None:
        """Serialise publications of one tenant's matrix (each gets the next version instead of a conflict).
        SQLite writers are serialised already."""
        if self._locks:
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:cls, :obj)"),
                {"cls": MATRIX_LOCK_CLASS, "obj": int.from_bytes(tenant_id.bytes[:4], "big", signed=True)},
            )

    async def current_matrix(self) -> PriorityMatrix | None:
        found: PriorityMatrix | None = await self.session.scalar(
            select(PriorityMatrix).order_by(PriorityMatrix.version.desc()).limit(1)
        )
        return found

    async def matrix_versions(self) -> list[PriorityMatrix]:
        rows = await self.session.scalars(select(PriorityMatrix).order_by(PriorityMatrix.version.desc()))
        return list(rows.all())
