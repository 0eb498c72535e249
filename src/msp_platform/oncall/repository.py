"""All SQL of on-call schedules. Tenant-owned queries are filtered by the session; nothing here names a tenant
except the platform-table reads (tenants, staff) and the feed-token revocation list."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.oauth import RevokedAccessToken
from msp_platform.models.oncall import (
    EscalationTarget,
    OncallLayer,
    OncallLayerMember,
    OncallOverride,
    OncallSchedule,
)
from msp_platform.models.staff import StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User

SCHEDULE_ORDER = Ordering(
    "name", (SortKey(OncallSchedule.name), SortKey(OncallSchedule.tenant_id), SortKey(OncallSchedule.id))
)
OVERRIDE_ORDER = Ordering("start_at", (SortKey(OncallOverride.start_at), SortKey(OncallOverride.id)))


class OncallRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _locks(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    # --- schedules ---------------------------------------------------------------------------------------

    async def get(self, schedule_id: uuid.UUID, *, for_update: bool = False) -> OncallSchedule | None:
        stmt = select(OncallSchedule).where(OncallSchedule.id == schedule_id)
        if for_update and self._locks:
            stmt = stmt.with_for_update()
        found: OncallSchedule | None = await self.session.scalar(
            stmt.execution_options(populate_existing=for_update)
        )
        return found

    async def by_name(self, name: str) -> OncallSchedule | None:
        found: OncallSchedule | None = await self.session.scalar(
            select(OncallSchedule).where(OncallSchedule.name == name)
        )
        return found

    async def page(
        self, *, limit: int | None, cursor: str | None, published: bool | None
    ) -> tuple[list[OncallSchedule], str | None]:
        stmt: Select[Any] = select(OncallSchedule)
        if published is True:
            stmt = stmt.where(OncallSchedule.published_at.is_not(None))
        elif published is False:
            stmt = stmt.where(OncallSchedule.published_at.is_(None))
        return await paginate(
            self.session, stmt, ordering=SCHEDULE_ORDER, limit=limit, cursor=cursor, scope="oncall-schedules"
        )

    async def in_force(self) -> list[OncallSchedule]:
        """Schedules with a published version (published now, or published and edited since), in every
        readable tenant, ordered by tenant and name."""
        rows = await self.session.scalars(
            select(OncallSchedule)
            .where(
                or_(OncallSchedule.published_at.is_not(None), OncallSchedule.published_version.is_not(None))
            )
            .order_by(OncallSchedule.tenant_id, OncallSchedule.name, OncallSchedule.id)
        )
        return list(rows)

    async def used_by_escalations(self, schedule_id: uuid.UUID) -> bool:
        used = await self.session.scalar(select(exists().where(EscalationTarget.schedule_id == schedule_id)))
        return bool(used)

    # --- layers ------------------------------------------------------------------------------------------

    async def layers(self, schedule_ids: Sequence[uuid.UUID]) -> list[OncallLayer]:
        if not schedule_ids:
            return []
        rows = await self.session.scalars(
            select(OncallLayer)
            .where(OncallLayer.schedule_id.in_(schedule_ids))
            .order_by(OncallLayer.schedule_id, OncallLayer.position)
        )
        return list(rows)

    async def members(self, layer_ids: Sequence[uuid.UUID]) -> list[OncallLayerMember]:
        if not layer_ids:
            return []
        rows = await self.session.scalars(
            select(OncallLayerMember)
            .where(OncallLayerMember.layer_id.in_(layer_ids))
            .order_by(OncallLayerMember.layer_id, OncallLayerMember.position)
        )
        return list(rows)

    # --- overrides ---------------------------------------------------------------------------------------

    async def override(self, schedule_id: uuid.UUID, override_id: uuid.UUID) -> OncallOverride | None:
        found: OncallOverride | None = await self.session.scalar(
            select(OncallOverride).where(
                OncallOverride.schedule_id == schedule_id, OncallOverride.id == override_id
            )
        )
        return found

    async def overrides_between(
        self, schedule_id: uuid.UUID, start: datetime | None, end: datetime | None
    ) -> list[OncallOverride]:
        """Overrides overlapping ``[start, end)``, in creation order (later ones win)."""
        stmt = select(OncallOverride).where(OncallOverride.schedule_id == schedule_id)
        if start is not None:
            stmt = stmt.where(OncallOverride.end_at > start)
        if end is not None:
            stmt = stmt.where(OncallOverride.start_at < end)
        rows = await self.session.scalars(stmt.order_by(OncallOverride.created_at, OncallOverride.id))
        return list(rows)

    async def overrides_of(
        self, schedule_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> list[OncallOverride]:
        """Overrides of these schedules overlapping ``[start, end)``, per schedule in creation order."""
        if not schedule_ids:
            return []
        rows = await self.session.scalars(
            select(OncallOverride)
            .where(
                OncallOverride.schedule_id.in_(schedule_ids),
                OncallOverride.end_at > start,
                OncallOverride.start_at < end,
            )
            .order_by(OncallOverride.schedule_id, OncallOverride.created_at, OncallOverride.id)
        )
        return list(rows)

    async def all_overrides(self, schedule_id: uuid.UUID) -> list[OncallOverride]:
        return await self.overrides_between(schedule_id, None, None)

    async def person_overlaps(
        self,
        schedule_id: uuid.UUID,
        *,
        staff_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
        start: datetime,
        end: datetime,
    ) -> list[OncallOverride]:
        person = (
            OncallOverride.staff_id == staff_id if staff_id is not None else OncallOverride.user_id == user_id
        )
        rows = await self.session.scalars(
            select(OncallOverride)
            .where(
                OncallOverride.schedule_id == schedule_id,
                person,
                OncallOverride.start_at < end,
                OncallOverride.end_at > start,
            )
            .order_by(OncallOverride.start_at, OncallOverride.id)
        )
        return list(rows)

    async def page_overrides(
        self,
        schedule_id: uuid.UUID,
        *,
        limit: int | None,
        cursor: str | None,
        start: datetime | None,
        end: datetime | None,
        staff_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
    ) -> tuple[list[OncallOverride], str | None]:
        stmt: Select[Any] = select(OncallOverride).where(OncallOverride.schedule_id == schedule_id)
        if start is not None:
            stmt = stmt.where(OncallOverride.end_at > start)
        if end is not None:
            stmt = stmt.where(OncallOverride.start_at < end)
        if staff_id is not None:
            stmt = stmt.where(OncallOverride.staff_id == staff_id)
        if user_id is not None:
            stmt = stmt.where(OncallOverride.user_id == user_id)
        return await paginate(
            self.session,
            stmt,
            ordering=OVERRIDE_ORDER,
            limit=limit,
            cursor=cursor,
            scope=f"oncall-overrides:{schedule_id}",
        )

    # --- people ------------------------------------------------------------------------------------------

    async def users(self, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, User]:
        wanted = set(user_ids)
        if not wanted:
            return {}
        rows = await self.session.scalars(select(User).where(User.id.in_(wanted)))
        return {u.id: u for u in rows}

    async def staff(self, staff_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, StaffMember]:
        wanted = set(staff_ids)
        if not wanted:
            return {}
        rows = await self.session.scalars(select(StaffMember).where(StaffMember.id.in_(wanted)))
        return {s.id: s for s in rows}

    async def tenants(self, tenant_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Tenant]:
        wanted = set(tenant_ids)
        if not wanted:
            return {}
        rows = await self.session.scalars(select(Tenant).where(Tenant.id.in_(wanted)))
        return {t.id: t for t in rows}

    async def tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        found: Tenant | None = await self.session.scalar(select(Tenant).where(Tenant.id == tenant_id))
        return found

    # --- feed-token revocations --------------------------------------------------------------------------
    # Feed tokens are self-contained (HMAC-signed); revoking one stores a deny entry until it would have
    # expired anyway, in the platform's list of revoked self-contained credentials (purged by housekeeping
    # once expired). Entries carry an "oncall-feed" prefix, so they can never match an access token's jti.

    async def deny(self, key: str, expires_at: datetime) -> None:
        if await self.session.get(RevokedAccessToken, key) is None:
            self.session.add(RevokedAccessToken(jti=key, expires_at=expires_at))
            await self.session.flush()

    async def denied(self, keys: Sequence[str], prefix: str) -> list[str]:
        """Which of ``keys`` are denied, plus every entry starting with ``prefix``."""
        rows = await self.session.scalars(
            select(RevokedAccessToken.jti).where(
                or_(RevokedAccessToken.jti.in_(list(keys)), RevokedAccessToken.jti.startswith(prefix))
            )
        )
        return list(rows)
