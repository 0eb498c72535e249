"""All SQL of sites. Queries are tenant-filtered by the session; nothing here names a tenant."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.device import Device
from msp_platform.models.incident import Incident
from msp_platform.models.site import Site
from msp_platform.models.user import User

SITE_ORDER = Ordering("code", (SortKey(Site.code), SortKey(Site.tenant_id), SortKey(Site.id)))


class SiteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, site_id: uuid.UUID) -> Site | None:
        found: Site | None = await self.session.scalar(select(Site).where(Site.id == site_id))
        return found

    async def by_code(self, code: str) -> Site | None:
        found: Site | None = await self.session.scalar(select(Site).where(Site.code == code.upper()))
        return found

    async def by_codes(self, codes: Iterable[str]) -> dict[str, Site]:
        wanted = {c.upper() for c in codes}
        if not wanted:
            return {}
        rows = await self.session.scalars(select(Site).where(Site.code.in_(wanted)))
        return {s.code: s for s in rows}

    async def page(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        kind: str | None,
        active: bool | None,
        parent_id: uuid.UUID | None,
        q: str | None,
    ) -> tuple[list[Site], str | None]:
        stmt: Select[Any] = select(Site)
        if kind is not None:
            stmt = stmt.where(Site.kind == kind)
        if active is not None:
            stmt = stmt.where(Site.active.is_(active))
        if parent_id is not None:
            stmt = stmt.where(Site.parent_id == parent_id)
        if q:
            pattern = _contains(q)
            stmt = stmt.where(
                or_(
                    func.lower(Site.name).like(pattern, escape="\\"),
                    func.lower(Site.code).like(pattern, escape="\\"),
                )
            )
        return await paginate(
            self.session, stmt, ordering=SITE_ORDER, limit=limit, cursor=cursor, scope="sites"
        )

    async def ancestors(self, site_id: uuid.UUID) -> list[uuid.UUID]:
        chain: list[uuid.UUID] = []
        current: uuid.UUID | None = site_id
        while current is not None and current not in chain and len(chain) < 64:
            chain.append(current)
            current = await self.session.scalar(select(Site.parent_id).where(Site.id == current))
        return chain

    async def usage(self, site_id: uuid.UUID) -> dict[str, int]:
        """What still refers to a site: {"users": n, "devices": n, "incidents": n, "sub-sites": n} (non-zero
        counts only). Every table with a foreign key to sites belongs here."""
        counts = {
            "users": select(func.count()).where(User.site_id == site_id).scalar_subquery(),
            "devices": select(func.count()).where(Device.site_id == site_id).scalar_subquery(),
            "incidents": select(func.count()).where(Incident.site_id == site_id).scalar_subquery(),
            "sub-sites": select(func.count()).where(Site.parent_id == site_id).scalar_subquery(),
        }
        row = (await self.session.execute(select(*counts.values()))).one()
        return {name: int(n) for name, n in zip(counts, row, strict=True) if n}

    async def in_use(self, site_id: uuid.UUID) -> bool:
        return bool(await self.usage(site_id))


def _contains(text: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching ``text`` anywhere, case-insensitively: ``%``, ``_`` and
    ``\\`` in the search are literal characters, not wildcards."""
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
