"""All SQL of tenants (and of the sites and users a tenant manifest upserts).

The ``tenants`` table is a platform table (the root of tenancy), so visibility is applied here from the ids
``authz`` computed; site and user queries are tenant-filtered by the session like everywhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.site import Site
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User


def _contains(text: str) -> str:
    """A LIKE pattern (escape ``\\``) for ``text`` anywhere, lower-cased: ``%``, ``_`` and ``\\`` are literal."""
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


TENANT_ORDER = Ordering("slug", (SortKey(Tenant.slug), SortKey(Tenant.id)))
MAX_DEPTH = 64


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        found: Tenant | None = await self.session.scalar(select(Tenant).where(Tenant.id == tenant_id))
        return found

    async def by_slug(self, slug: str) -> Tenant | None:
        found: Tenant | None = await self.session.scalar(select(Tenant).where(Tenant.slug == slug))
        return found

    async def by_slugs(self, slugs: Iterable[str]) -> dict[str, Tenant]:
        wanted = set(slugs)
        if not wanted:
            return {}
        rows = await self.session.scalars(select(Tenant).where(Tenant.slug.in_(wanted)))
        return {t.slug: t for t in rows}

    async def by_prefix(self, prefix: str) -> Tenant | None:
        found: Tenant | None = await self.session.scalar(select(Tenant).where(Tenant.ticket_prefix == prefix))
        return found

    async def by_prefixes(self, prefixes: Iterable[str]) -> dict[str, Tenant]:
        wanted = set(prefixes)
        if not wanted:
            return {}
        rows = await self.session.scalars(select(Tenant).where(Tenant.ticket_prefix.in_(wanted)))
        return {t.ticket_prefix: t for t in rows}

    async def page(
        self,
        *,
        visible: Collection[uuid.UUID] | None,
        limit: int | None,
        cursor: str | None,
        status: str | None,
        parent_id: uuid.UUID | None,
        q: str | None,
        scope: str = "tenants",
    ) -> tuple[list[Tenant], str | None]:
        """One page of tenants; ``visible`` None means every tenant (MSP admins)."""
        stmt: Select[Any] = select(Tenant)
        if visible is not None:
            stmt = stmt.where(Tenant.id.in_(list(visible)))
        if status is not None:
            stmt = stmt.where(Tenant.status == status)
        if parent_id is not None:
            stmt = stmt.where(Tenant.parent_id == parent_id)
        if q:
            pattern = _contains(q)
            stmt = stmt.where(
                or_(
                    func.lower(Tenant.name).like(pattern, escape="\\"),
                    Tenant.slug.like(pattern, escape="\\"),
                )
            )
        return await paginate(
            self.session, stmt, ordering=TENANT_ORDER, limit=limit, cursor=cursor, scope=scope
        )

    async def ancestors(self, tenant_id: uuid.UUID) -> list[uuid.UUID]:
        """``tenant_id`` and its parents, nearest first (stops at a loop or ``MAX_DEPTH``)."""
        chain: list[uuid.UUID] = []
        current: uuid.UUID | None = tenant_id
        while current is not None and current not in chain and len(chain) < MAX_DEPTH:
            chain.append(current)
            current = await self.session.scalar(select(Tenant.parent_id).where(Tenant.id == current))
        return chain

    async def has_children_not_offboarded(self, tenant_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(exists().where(Tenant.parent_id == tenant_id, Tenant.status != TenantStatus.offboarded))
        )
        return bool(found)

    async def tree(self) -> list[tuple[uuid.UUID, str, uuid.UUID | None, str]]:
        """Every tenant as (id, slug, parent_id, status)."""
        rows = await self.session.execute(select(Tenant.id, Tenant.slug, Tenant.parent_id, Tenant.status))
        return [(r[0], r[1], r[2], r[3]) for r in rows]


class TenantContentsRepository:
    """Sites and users of the tenant the session is bound to (tenant manifests)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def sites(self) -> list[Site]:
        return list((await self.session.scalars(select(Site).order_by(Site.code))).all())

    async def users_by_email(self, emails: Iterable[str]) -> dict[str, User]:
        wanted = set(emails)
        if not wanted:
            return {}
        rows = await self.session.scalars(select(User).where(User.email.in_(wanted)))
        return {u.email: u for u in rows}

    async def user_by_email(self, email: str) -> User | None:
        found: User | None = await self.session.scalar(select(User).where(User.email == email))
        return found
