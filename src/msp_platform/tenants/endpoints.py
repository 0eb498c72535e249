"""/api/v1/tenants: the client organizations, their settings and lifecycle (MSP administrators), and what
each caller may see of them (tenant callers: their own tenant; agents: their granted tenants)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Response, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from msp_platform.auth.guards import BEARER, protected
from msp_platform.auth.scopes import Role, Scope
from msp_platform.kit.deps import DEPENDENCIES, Caller, Session
from msp_platform.kit.etag import IfMatch, check_if_match, headers_of
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.patch import sent_fields
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.tenants import service
from msp_platform.tenants.repository import TenantRepository
from msp_platform.tenants.schemas import StatusChange, TenantCreate, TenantOut, TenantUpdate

# The path names the tenant, so the controller does without the MSP-Tenant-based ``tenant_id`` dependency.
_DEPENDENCIES = {name: provider for name, provider in DEPENDENCIES.items() if name != "tenant_id"}

# Changing a tenant needs msp_admin and tenants:write, checked in the service *after* visibility so that a
# tenant the caller cannot see answers 404, not 403. The OpenAPI document still names the scope.
ADMIN_CHANGE: dict[str, Any] = {"guards": [], "security": [{BEARER: [Scope.tenants_write.value]}]}


def tenant_out(tenant: Tenant) -> TenantOut:
    return TenantOut(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        status=TenantStatus(tenant.status),
        status_reason=tenant.status_reason,
        parent_id=tenant.parent_id,
        ticket_prefix=tenant.ticket_prefix,
        timezone=tenant.timezone,
        business_calendar=service.calendar_out(tenant.business_calendar),
        suspended_at=tenant.suspended_at,
        offboarded_at=tenant.offboarded_at,
        manifest_version=tenant.manifest_version,
        created_at=tenant.created_at,
        updated_at=tenant.updated_at,
    )


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["Tenants"]
    dependencies = _DEPENDENCIES

    @post(
        "/",
        summary="Create a tenant (MSP administrators)",
        **protected(Scope.tenants_write, roles=(Role.msp_admin,)),
    )
    async def create(self, session: Session, principal: Caller, data: JSONBody[TenantCreate]) -> TenantOut:
        return tenant_out(await service.create_tenant(session, principal, data))

    @get(
        "/",
        summary="List the tenants the caller may see (ordered by slug)",
        description="MSP administrators see every tenant, agents the tenants granted to them (and their "
        "children where the grant says so), tenant users, administrators and integration clients their own.",
        **protected(Scope.tenants_read),
    )
    async def list_tenants(
        self,
        session: Session,
        principal: Caller,
        limit: Limit = None,
        cursor: Cursor = None,
        status: FromQuery[TenantStatus | None] = None,
        parent_id: FromQuery[uuid.UUID | None] = None,
        q: FromQuery[str | None] = None,
    ) -> Page[TenantOut]:
        rows, next_cursor = await TenantRepository(session).page(
            visible=await service.visible_tenant_ids(session, principal),
            limit=limit,
            cursor=cursor,
            status=status,
            parent_id=parent_id,
            q=q,
        )
        return Page(items=[tenant_out(t) for t in rows], next_cursor=next_cursor)

    @get("/{tenant_id:uuid}", summary="Get a tenant (with its ETag)", **protected(Scope.tenants_read))
    async def get_tenant(
        self, session: Session, principal: Caller, tenant_id: FromPath[uuid.UUID]
    ) -> Response[TenantOut]:
        tenant = await service.get_tenant(session, principal, tenant_id)
        return Response(tenant_out(tenant), headers=headers_of(tenant))

    @get(
        "/{tenant_id:uuid}/children",
        summary="List the tenants directly under a tenant (those the caller may see)",
        **protected(Scope.tenants_read),
    )
    async def list_children(
        self,
        session: Session,
        principal: Caller,
        tenant_id: FromPath[uuid.UUID],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> Page[TenantOut]:
        await service.get_tenant(session, principal, tenant_id)
        rows, next_cursor = await TenantRepository(session).page(
            visible=await service.visible_tenant_ids(session, principal),
            limit=limit,
            cursor=cursor,
            status=None,
            parent_id=tenant_id,
            q=None,
            scope=f"tenants:{tenant_id}:children",
        )
        return Page(items=[tenant_out(t) for t in rows], next_cursor=next_cursor)

    @patch(
        "/{tenant_id:uuid}",
        summary="Update a tenant (MSP administrators; only the fields sent; If-Match guards against lost "
        "updates)",
        **ADMIN_CHANGE,
    )
    async def update(
        self,
        session: Session,
        principal: Caller,
        tenant_id: FromPath[uuid.UUID],
        data: JSONBody[TenantUpdate],
        if_match: IfMatch = None,
    ) -> Response[TenantOut]:
        tenant = await service.tenant_to_change(session, principal, tenant_id)
        await check_if_match(session, tenant, if_match, f"Tenant {tenant.slug}")
        await service.update_tenant(session, tenant, sent_fields(data))
        return Response(tenant_out(tenant), headers=headers_of(tenant))

    @post(
        "/{tenant_id:uuid}/suspend",
        summary="Suspend an active tenant: its users and clients are refused (403 tenant-inactive)",
        status_code=200,
        **ADMIN_CHANGE,
    )
    async def suspend(
        self,
        session: Session,
        principal: Caller,
        tenant_id: FromPath[uuid.UUID],
        data: JSONBody[StatusChange],
    ) -> TenantOut:
        tenant = await service.tenant_to_change(session, principal, tenant_id)
        return tenant_out(await service.suspend(session, tenant, data.reason))

    @post(
        "/{tenant_id:uuid}/reactivate",
        summary="Reactivate a suspended or offboarded tenant: access opens again",
        status_code=200,
        **ADMIN_CHANGE,
    )
    async def reactivate(
        self, session: Session, principal: Caller, tenant_id: FromPath[uuid.UUID]
    ) -> TenantOut:
        tenant = await service.tenant_to_change(session, principal, tenant_id)
        return tenant_out(await service.reactivate(session, tenant))

    @post(
        "/{tenant_id:uuid}/offboard",
        summary="Offboard a tenant: its data is kept, access is closed",
        status_code=200,
        **ADMIN_CHANGE,
    )
    async def offboard(
        self,
        session: Session,
        principal: Caller,
        tenant_id: FromPath[uuid.UUID],
        data: JSONBody[StatusChange],
    ) -> TenantOut:
        tenant = await service.tenant_to_change(session, principal, tenant_id)
        return tenant_out(await service.offboard(session, tenant, data.reason))
