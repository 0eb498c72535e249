"""All SQL of escalation policies, escalations and pages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.oncall import (
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    OncallSchedule,
    Page,
)
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.user import User

POLICY_ORDER = Ordering("name", (SortKey(EscalationPolicy.name), SortKey(EscalationPolicy.id)))
PAGE_ORDER = Ordering("newest", (SortKey(Page.created_at, True), SortKey(Page.id, True)))


class EscalationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _lockable(self, stmt: Any) -> Any:
        bind = self.session.bind
        return stmt.with_for_update() if bind is not None and bind.dialect.name == "postgresql" else stmt

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

    async def policy_in_use(self, policy_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(Escalation.id)
            .where(Escalation.policy_id == policy_id, Escalation.state == "active")
            .limit(1)
        )
        return found is not None

    # references ------------------------------------------------------------------------------------
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

    async def granted_staff_ids(self, tenant_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        rows = await self.session.scalars(
            select(StaffGrant.staff_id).where(StaffGrant.tenant_id.in_(tenant_ids))
        )
        return set(rows.all())

    # escalations and pages -------------------------------------------------------------------------
    async def escalation(self, escalation_id: uuid.UUID, *, for_update: bool = False) -> Escalation | None:
        stmt = select(Escalation).where(Escalation.id == escalation_id)
        found: Escalation | None = await self.session.scalar(self._lockable(stmt) if for_update else stmt)
        return found

    async def escalations_of(self, incident_id: uuid.UUID, *, active_only: bool = False) -> list[Escalation]:
        stmt = select(Escalation).where(Escalation.incident_id == incident_id)
        if active_only:
            stmt = stmt.where(Escalation.state == "active")
        rows = await self.session.scalars(stmt.order_by(Escalation.started_at))
        return list(rows.all())

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

    async def page(self, page_id: uuid.UUID, *, for_update: bool = False) -> Page | None:
        stmt = select(Page).where(Page.id == page_id)
        found: Page | None = await self.session.scalar(self._lockable(stmt) if for_update else stmt)
        return found

    async def pages_of(self, escalation_id: uuid.UUID) -> list[Page]:
        rows = await self.session.scalars(select(Page).where(Page.escalation_id == escalation_id))
        return list(rows.all())

    async def existing_page(
        self,
        escalation_id: uuid.UUID,
        level: int,
        repeat: int,
        staff_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
    ) -> Page | None:
        stmt = select(Page).where(
            Page.escalation_id == escalation_id, Page.level == level, Page.repeat == repeat
        )
        stmt = stmt.where(Page.staff_id == staff_id) if staff_id else stmt.where(Page.user_id == user_id)
        found: Page | None = await self.session.scalar(stmt)
        return found

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
