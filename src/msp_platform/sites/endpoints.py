"""/api/v1/sites: a tenant's hospitals, clinics and departments."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Scope
from msp_platform.kit.deps import DEPENDENCIES, Ctx, Session, TenantId
from msp_platform.kit.etag import IfMatch, check_if_match, headers_of
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.patch import sent_fields
from msp_platform.models.site import Site, SiteKind
from msp_platform.sites import service
from msp_platform.sites.repository import SiteRepository
from msp_platform.sites.schemas import SiteCreate, SiteOut, SiteUpdate


def site_out(site: Site) -> SiteOut:
    return SiteOut(
        id=site.id,
        tenant_id=site.tenant_id,
        code=site.code,
        name=site.name,
        kind=site.kind,
        parent_id=site.parent_id,
        address=site.address,
        timezone=site.timezone,
        active=site.active,
        created_at=site.created_at,
        updated_at=site.updated_at,
    )


class SiteController(Controller):
    path = "/api/v1/sites"
    tags = ["Sites"]
    dependencies = DEPENDENCIES

    @post("/", summary="Create a site", **protected(Scope.sites_write))
    async def create(self, session: Session, tenant_id: TenantId, data: JSONBody[SiteCreate]) -> SiteOut:
        return site_out(await service.create_site(session, data))

    @get("/", summary="List sites (ordered by code)", **protected(Scope.sites_read))
    async def list_sites(
        self,
        session: Session,
        ctx: Ctx,
        limit: Limit = None,
        cursor: Cursor = None,
        kind: FromQuery[SiteKind | None] = None,
        active: FromQuery[bool | None] = None,
        parent_id: FromQuery[uuid.UUID | None] = None,
        q: FromQuery[str | None] = None,
    ) -> Page[SiteOut]:
        rows, next_cursor = await SiteRepository(session).page(
            limit=limit, cursor=cursor, kind=kind, active=active, parent_id=parent_id, q=q
        )
        return Page(items=[site_out(s) for s in rows], next_cursor=next_cursor)

    @get("/{site_id:uuid}", summary="Get a site (with its ETag)", **protected(Scope.sites_read))
    async def get_site(self, session: Session, ctx: Ctx, site_id: FromPath[uuid.UUID]) -> Response[SiteOut]:
        site = await service.get_site(session, site_id)
        return Response(site_out(site), headers=headers_of(site))

    @patch(
        "/{site_id:uuid}",
        summary="Update a site (only the fields sent; If-Match guards against lost updates)",
        **protected(Scope.sites_write),
    )
    async def update(
        self,
        session: Session,
        tenant_id: TenantId,
        site_id: FromPath[uuid.UUID],
        data: JSONBody[SiteUpdate],
        if_match: IfMatch = None,
    ) -> Response[SiteOut]:
        site = await service.get_site(session, site_id)
        await check_if_match(session, site, if_match, f"Site {site.code}")
        await service.update_site(session, site, sent_fields(data))
        return Response(site_out(site), headers=headers_of(site))

    @delete("/{site_id:uuid}", summary="Delete an unused site", **protected(Scope.sites_write))
    async def remove(self, session: Session, tenant_id: TenantId, site_id: FromPath[uuid.UUID]) -> None:
        await service.delete_site(session, await service.get_site(session, site_id))
