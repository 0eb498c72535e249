"""All SQL of the identity domain (staff, grants, integration clients)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.authz.types import AccessibleTenantId
from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffGrant, StaffMember

CLIENT_ORDER = Ordering("created", (SortKey(OAuthClient.created_at), SortKey(OAuthClient.id)))
STAFF_ORDER = Ordering("email", (SortKey(StaffMember.email), SortKey(StaffMember.id)))


class ClientRepository:
    """Integration clients live in a platform table (the token endpoint finds them before it knows the
    tenant), so every query here takes the caller's AccessibleTenantId explicitly."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _of(self, tenant_id: AccessibleTenantId) -> Select[OAuthClient]:
        return select(OAuthClient).where(OAuthClient.tenant_id == tenant_id)

    async def page(
        self, tenant_id: AccessibleTenantId, *, limit: int | None, cursor: str | None, include_revoked: bool
    ) -> tuple[list[OAuthClient], str | None]:
        stmt = self._of(tenant_id)
        if not include_revoked:
            stmt = stmt.where(OAuthClient.revoked_at.is_(None))
        return await paginate(
            self.session,
            stmt,
            ordering=CLIENT_ORDER,
            limit=limit,
            cursor=cursor,
            scope=f"clients:{tenant_id}",
        )

    async def get(self, tenant_id: AccessibleTenantId, client_id: str) -> OAuthClient | None:
        found: OAuthClient | None = await self.session.scalar(
            self._of(tenant_id).where(OAuthClient.client_id == client_id)
        )
        return found


class StaffRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self, *, limit: int | None, cursor: str | None, role: str | None, active: bool | None
    ) -> tuple[list[StaffMember], str | None]:
        stmt: Select[Any] = select(StaffMember)
        if role is not None:
            stmt = stmt.where(StaffMember.role == role)
        if active is not None:
            stmt = stmt.where(StaffMember.active.is_(active))
        return await paginate(
            self.session, stmt, ordering=STAFF_ORDER, limit=limit, cursor=cursor, scope="staff"
        )

    async def get(self, staff_id: uuid.UUID) -> StaffMember | None:
        found: StaffMember | None = await self.session.get(StaffMember, staff_id)
        return found

    async def grants(self, staff_id: uuid.UUID) -> list[StaffGrant]:
        rows = await self.session.scalars(
            select(StaffGrant).where(StaffGrant.staff_id == staff_id).order_by(StaffGrant.created_at)
        )
        return list(rows.all())

    async def grant(self, staff_id: uuid.UUID, tenant_id: uuid.UUID) -> StaffGrant | None:
        found: StaffGrant | None = await self.session.scalar(
            select(StaffGrant).where(StaffGrant.staff_id == staff_id, StaffGrant.tenant_id == tenant_id)
        )
        return found
