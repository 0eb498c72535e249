"""All SQL of escalation policies, escalations and pages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.incident import Incident, IncidentEvent
from msp_platform.models.oncall import (
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    OncallSchedule,
    Page,
)
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User

POLICY_ORDER = Ordering("name", (SortKey(EscalationPolicy.name), SortKey(EscalationPolicy.id)))
PAGE_ORDER = Ordering("newest", (SortKey(Page.created_at, True), SortKey(Page.id, True)))
ESCALATION_ORDER = Ordering("started", (SortKey(Escalation.started_at), SortKey(Escalation.id)))


class EscalationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    def _lockable(self, stmt: Any) -> Any:
        """FOR UPDATE on PostgreSQL (SQLite writers are serialised by BEGIN IMMEDIATE), re-reading the row
        so a state another transaction committed while we waited is what we see."""
        stmt = stmt.execution_options(populate_existing=True)
        return stmt.with_for_update() if self._postgres else stmt

    async def incident(self, incident_id: uuid.UUID, *, for_update: bool = False) -> Incident | None:
        """The incident, locked first by everything that writes its event log (the sequence numbers) or
        changes its escalations, so those never interleave or deadlock."""
        found: Incident | None = await self.session.scalar(
            _incident_statement(locked=for_update and self._postgres, fresh=for_update),
            {"incident_id": incident_id},
        )
        return found

    # policies --------------------------------------------------------------------------------------
    async def policy(self, policy_id: uuid.UUID) -> EscalationPolicy | None:
        found: EscalationPolicy | None = await self.session.scalar(
            select(EscalationPolicy).where(EscalationPolicy.id == policy_id)
        )
        return found

    async def policy_by_name(self, name: str) -> EscalationPolicy | None:
        found: EscalationPolicy | None = await self.session.scalar(
            select(EscalationPolicy).where(EscalationPolicy.name == name)
        )
        return found

    async def policies_page(
        self, *, limit: int | None, cursor: str | None
    ) -> tuple[list[EscalationPolicy], str | None]:
        stmt: Select[Any] = select(EscalationPolicy)
        return await paginate(
            self.session, stmt, ordering=POLICY_ORDER, limit=limit, cursor=cursor, scope="escalation-policies"
        )

    async def active_policies(self) -> list[EscalationPolicy]:
        rows = await self.session.scalars(select(EscalationPolicy).where(EscalationPolicy.active.is_(True)))
        return list(rows.all())

    async def levels(self, policy_id: uuid.UUID) -> list[EscalationLevel]:
        rows = await self.session.scalars(
            select(EscalationLevel)
            .where(EscalationLevel.policy_id == policy_id)
            .order_by(EscalationLevel.position)
        )
        return list(rows.all())

    async def targets(self, level_ids: Sequence[uuid.UUID]) -> list[EscalationTarget]:
        if not level_ids:
            return []
        rows = await self.session.scalars(
            select(EscalationTarget)
            .where(EscalationTarget.level_id.in_(level_ids))
            .order_by(EscalationTarget.created_at)
        )
        return list(rows.all())

    async def policy_edges(self) -> dict[uuid.UUID, set[uuid.UUID]]:
        """policy -> policies its levels hand over to (for cycle checks)."""
        rows = await self.session.execute(
            select(EscalationLevel.policy_id, EscalationTarget.target_policy_id)
            .join(EscalationTarget, EscalationTarget.level_id == EscalationLevel.id)
            .where(EscalationTarget.kind == "policy")
        )
        edges: dict[uuid.UUID, set[uuid.UUID]] = {}
        for source, target in rows:
            if target is not None:
                edges.setdefault(source, set()).add(target)
        return edges

    async def delete_levels(self, policy_id: uuid.UUID) -> None:
        level_ids = [lv.id for lv in await self.levels(policy_id)]
        if level_ids:
            await self.session.execute(
                delete(EscalationTarget)
                .where(EscalationTarget.level_id.in_(level_ids))
                .execution_options(synchronize_session=False)
            )
            await self.session.execute(
                delete(EscalationLevel)
                .where(EscalationLevel.id.in_(level_ids))
                .execution_options(synchronize_session=False)
            )

    async def schedule(self, schedule_id: uuid.UUID) -> OncallSchedule | None:
        found: OncallSchedule | None = await self.session.scalar(
            select(OncallSchedule).where(OncallSchedule.id == schedule_id)
        )
        return found

    async def user(self, user_id: uuid.UUID) -> User | None:
        found: User | None = await self.session.scalar(select(User).where(User.id == user_id))
        return found

    async def staff(self, staff_id: uuid.UUID) -> StaffMember | None:
        found: StaffMember | None = await self.session.get(StaffMember, staff_id)
        return found

    async def tier_staff(self, tier: int) -> list[StaffMember]:
        rows = await self.session.scalars(
            select(StaffMember)
            .where(StaffMember.tier == tier, StaffMember.active.is_(True))
            .order_by(StaffMember.email)
        )
        return list(rows.all())

    async def staff_who_may_be_paged(
        self, tenant_id: uuid.UUID, staff_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, StaffMember]:
        """Of ``staff_ids``, the staff who may act on (and be paged for) the tenant, in one statement: active,
        and an MSP admin or granted the tenant (or, with ``include_children``, one of its ancestors). The
        rule of ``authz.service.staff_with_access`` for a few people, without reading every tenant and
        staff member (a test keeps the two in agreement)."""
        # Read once per unit of work: a job pages and then notifies with one answer.
        memo: dict[tuple[uuid.UUID, uuid.UUID], StaffMember | None] = self.session.info.setdefault(
            "escalations.may_be_paged", {}
        )
        missing = [sid for sid in staff_ids if (tenant_id, sid) not in memo]
        if missing:
            found = await self._may_be_paged(tenant_id, missing)
            for sid in missing:
                memo[(tenant_id, sid)] = found.get(sid)
        return {sid: member for sid in staff_ids if (member := memo[(tenant_id, sid)]) is not None}

    async def _may_be_paged(
        self, tenant_id: uuid.UUID, staff_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, StaffMember]:
        rows = await self.session.scalars(
            _may_be_paged_statement(), {"tenant_id": tenant_id, "staff_ids": list(staff_ids)}
        )
        return {s.id: s for s in rows}

    async def escalation(
        self, escalation_id: uuid.UUID, *, for_update: bool = False, fresh: bool = False
    ) -> Escalation | None:
        found: Escalation | None = await self.session.scalar(
            _escalation_statement(locked=for_update and self._postgres, fresh=for_update or fresh),
            {"escalation_id": escalation_id},
        )
        return found

    async def escalations_of(
        self,
        incident_id: uuid.UUID,
        *,
        active_only: bool = False,
        states: Sequence[str] | None = None,
        policy_id: uuid.UUID | None = None,
        for_update: bool = False,
    ) -> list[Escalation]:
        stmt = select(Escalation).where(Escalation.incident_id == incident_id)
        if active_only:
            stmt = stmt.where(Escalation.state == "active")
        if states is not None:
            stmt = stmt.where(Escalation.state.in_(list(states)))
        if policy_id is not None:
            stmt = stmt.where(Escalation.policy_id == policy_id)
        stmt = stmt.order_by(Escalation.started_at, Escalation.id)
        rows = await self.session.scalars(self._lockable(stmt) if for_update else stmt)
        return list(rows.all())

    async def escalations_page(
        self, incident_id: uuid.UUID, *, limit: int | None, cursor: str | None, state: str | None
    ) -> tuple[list[Escalation], str | None]:
        stmt: Select[Any] = select(Escalation).where(Escalation.incident_id == incident_id)
        if state is not None:
            stmt = stmt.where(Escalation.state == state)
        return await paginate(
            self.session,
            stmt,
            ordering=ESCALATION_ORDER,
            limit=limit,
            cursor=cursor,
            scope=f"escalations:{incident_id}",
        )

    async def escalations_started_after(self, incident_id: uuid.UUID, seq: int) -> set[uuid.UUID]:
        """The escalations whose ``escalation_started`` event comes after event ``seq`` in the incident's log
        (one sequence per incident, written under the incident's lock, so the order is exact)."""
        rows = await self.session.scalars(
            select(IncidentEvent.data).where(
                IncidentEvent.incident_id == incident_id,
                IncidentEvent.type == "escalation_started",
                IncidentEvent.seq > seq,
            )
        )
        return {uuid.UUID(data["escalation_id"]) for data in rows.all() if data.get("escalation_id")}

    async def triggered_pages_of_incident(self, incident_id: uuid.UUID) -> list[Page]:
        stmt = select(Page).where(Page.incident_id == incident_id, Page.state == "triggered")
        rows = await self.session.scalars(self._lockable(stmt.order_by(Page.id)))
        return list(rows.all())

    async def earlier_page(
        self,
        incident_id: uuid.UUID,
        escalation_id: uuid.UUID,
        level: int,
        repeat: int,
        staff_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
        *,
        since: datetime,
    ) -> Page | None:
        """This person's page for this (escalation, level, repeat), or else one for this incident from another
        escalation created since ``since`` (one statement, our own level's page first)."""
        found: Page | None = await self.session.scalar(
            _earlier_page_statement(staff=staff_id is not None),
            {
                "incident_id": incident_id,
                "escalation_id": escalation_id,
                "level": level,
                "repeat": repeat,
                "person": staff_id if staff_id is not None else user_id,
                "since": since,
            },
        )
        return found

    async def page_count(self, escalation_id: uuid.UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).select_from(Page).where(Page.escalation_id == escalation_id)
            )
            or 0
        )

    async def supersede_pages(self, page_ids: Sequence[uuid.UUID], state: str, at: datetime) -> None:
        if not page_ids:
            return
        values: dict[str, Any] = {"state": state, "updated_at": at}
        if state == "resolved":
            values["resolved_at"] = at
        await self.session.execute(
            update(Page)
            .where(Page.id.in_(list(page_ids)), Page.state == "triggered")
            .values(**values)
            .execution_options(synchronize_session="fetch")
        )

    async def existing(
        self, incident_id: uuid.UUID, policy_id: uuid.UUID, trigger_key: str
    ) -> Escalation | None:
        found: Escalation | None = await self.session.scalar(
            select(Escalation).where(
                Escalation.incident_id == incident_id,
                Escalation.policy_id == policy_id,
                Escalation.trigger_key == trigger_key,
            )
        )
        return found

    async def user_active(self, user_id: uuid.UUID) -> bool:
        """An active user of the session's tenant (another tenant's user is invisible: not active here)."""
        found = await self.session.scalar(select(User.active).where(User.id == user_id))
        return bool(found)

    async def page(self, page_id: uuid.UUID, *, for_update: bool = False) -> Page | None:
        stmt = select(Page).where(Page.id == page_id)
        found: Page | None = await self.session.scalar(self._lockable(stmt) if for_update else stmt)
        return found

    async def pages_of(self, escalation_id: uuid.UUID) -> list[Page]:
        rows = await self.session.scalars(select(Page).where(Page.escalation_id == escalation_id))
        return list(rows.all())

    async def pages_page(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        incident_id: uuid.UUID | None,
        state: str | None,
        staff_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
    ) -> tuple[list[Page], str | None]:
        stmt: Select[Any] = select(Page)
        if incident_id is not None:
            stmt = stmt.where(Page.incident_id == incident_id)
        if state is not None:
            stmt = stmt.where(Page.state == state)
        if staff_id is not None:
            stmt = stmt.where(Page.staff_id == staff_id)
        if user_id is not None:
            stmt = stmt.where(Page.user_id == user_id)
        return await paginate(
            self.session, stmt, ordering=PAGE_ORDER, limit=limit, cursor=cursor, scope="pages"
        )


# Statements of the firing path, built once (building them is a good share of a level's CPU time).


@cache
def _may_be_paged_statement() -> Select[Any]:
    lineage = (
        select(Tenant.id, Tenant.parent_id, literal(0).label("depth"))
        .where(Tenant.id == bindparam("tenant_id"))
        .cte("lineage", recursive=True)
    )
    ancestor = aliased(Tenant)
    lineage = lineage.union_all(
        select(ancestor.id, ancestor.parent_id, lineage.c.depth + 1)
        .join(lineage, ancestor.id == lineage.c.parent_id)
        .where(lineage.c.depth < 64)
    )
    granted = (
        select(StaffGrant.staff_id)
        .join(lineage, StaffGrant.tenant_id == lineage.c.id)
        .where(or_(lineage.c.depth == 0, StaffGrant.include_children.is_(True)))
    )
    return select(StaffMember).where(
        StaffMember.id.in_(bindparam("staff_ids", expanding=True)),
        StaffMember.active.is_(True),
        or_(StaffMember.role == StaffRole.msp_admin, StaffMember.id.in_(granted)),
    )


@cache
def _earlier_page_statement(*, staff: bool) -> Select[Any]:
    escalation_id: Any = bindparam("escalation_id")
    person = Page.staff_id if staff else Page.user_id
    return (
        select(Page)
        .where(
            Page.incident_id == bindparam("incident_id"),
            person == bindparam("person"),
            or_(
                and_(
                    Page.escalation_id == escalation_id,
                    Page.level == bindparam("level"),
                    Page.repeat == bindparam("repeat"),
                ),
                and_(Page.escalation_id != escalation_id, Page.created_at >= bindparam("since")),
            ),
        )
        .order_by(case((Page.escalation_id == escalation_id, 0), else_=1), Page.created_at.desc())
        .limit(1)
    )


@cache
def _incident_statement(*, locked: bool, fresh: bool) -> Select[Any]:
    stmt = select(Incident).where(Incident.id == bindparam("incident_id"))
    if fresh:
        stmt = stmt.execution_options(populate_existing=True)
    return stmt.with_for_update() if locked else stmt


@cache
def _escalation_statement(*, locked: bool, fresh: bool) -> Select[Any]:
    stmt = select(Escalation).where(Escalation.id == bindparam("escalation_id"))
    if fresh:
        stmt = stmt.execution_options(populate_existing=True)
    return stmt.with_for_update() if locked else stmt
