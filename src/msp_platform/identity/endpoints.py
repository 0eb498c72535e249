"""/api/v1/clients (a tenant's integration clients) and /api/v1/staff (MSP staff and their tenant grants)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Role, Scope, parse_scope
from msp_platform.identity import service
from msp_platform.identity.repository import ClientRepository, StaffRepository
from msp_platform.identity.schemas import (
    ClientCreate,
    ClientCreated,
    ClientOut,
    GrantCreate,
    GrantOut,
    StaffCreate,
    StaffOut,
    StaffUpdate,
)
from msp_platform.kit.deps import DEPENDENCIES, Caller, Session, TenantId
from msp_platform.kit.errors import Conflict, NotFound
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant


def client_out(row: OAuthClient) -> ClientOut:
    return ClientOut(
        client_id=row.client_id,
        name=row.name,
        scopes=sorted(parse_scope(row.scopes)),
        tenant_id=row.tenant_id,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def staff_out(row: StaffMember) -> StaffOut:
    return StaffOut(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        tier=row.tier,
        active=row.active,
        created_at=row.created_at,
        last_sign_in_at=row.last_sign_in_at,
    )


class ClientController(Controller):
    path = "/api/v1/clients"
    tags = ["Integration clients"]
    dependencies = DEPENDENCIES

    @post(
        "/",
        summary="Create an integration client (client_credentials); the secret is shown once",
        **protected(Scope.clients_write),
    )
    async def create(
        self, session: Session, tenant_id: TenantId, principal: Caller, data: JSONBody[ClientCreate]
    ) -> ClientCreated:
        row, secret = await service.create_client(
            session,
            tenant_id=tenant_id,
            name=data.name,
            scopes=" ".join(data.scopes or []),
            created_by=principal.key,
        )
        return ClientCreated(**msgspec.structs.asdict(client_out(row)), client_secret=secret)

    @get("/", summary="List integration clients", **protected(Scope.clients_read))
    async def list_clients(
        self,
        session: Session,
        tenant_id: TenantId,
        limit: Limit = None,
        cursor: Cursor = None,
        include_revoked: FromQuery[bool] = False,
    ) -> Page[ClientOut]:
        rows, next_cursor = await ClientRepository(session).page(
            tenant_id, limit=limit, cursor=cursor, include_revoked=include_revoked
        )
        return Page(items=[client_out(r) for r in rows], next_cursor=next_cursor)

    @get("/{client_id:str}", summary="Get an integration client", **protected(Scope.clients_read))
    async def get_client(self, session: Session, tenant_id: TenantId, client_id: FromPath[str]) -> ClientOut:
        row = await ClientRepository(session).get(tenant_id, client_id)
        if row is None:
            raise NotFound(f"Client {client_id} not found.")
        return client_out(row)

    @delete(
        "/{client_id:str}",
        summary="Revoke an integration client (its tokens stop working)",
        **protected(Scope.clients_write),
    )
    async def revoke(self, session: Session, tenant_id: TenantId, client_id: FromPath[str]) -> None:
        row = await ClientRepository(session).get(tenant_id, client_id)
        if row is None:
            raise NotFound(f"Client {client_id} not found.")
        await service.revoke_client(row)


STAFF_ADMIN = protected(Scope.staff_write, roles=(Role.msp_admin,))


class StaffController(Controller):
    path = "/api/v1/staff"
    tags = ["MSP staff"]
    dependencies = DEPENDENCIES

    @post("/", summary="Create a staff member", **STAFF_ADMIN)
    async def create(self, session: Session, data: JSONBody[StaffCreate]) -> StaffOut:
        member = await service.create_staff(
            session, email=data.email, name=data.name, role=data.role, tier=data.tier, password=data.password
        )
        return staff_out(member)

    @get(
        "/",
        summary="List staff members",
        **protected(Scope.staff_read, roles=(Role.msp_admin, Role.msp_agent)),
    )
    async def list_staff(
        self,
        session: Session,
        limit: Limit = None,
        cursor: Cursor = None,
        role: FromQuery[str | None] = None,
        active: FromQuery[bool | None] = None,
    ) -> Page[StaffOut]:
        rows, next_cursor = await StaffRepository(session).page(
            limit=limit, cursor=cursor, role=role, active=active
        )
        return Page(items=[staff_out(r) for r in rows], next_cursor=next_cursor)

    @get(
        "/{staff_id:uuid}",
        summary="Get a staff member",
        **protected(Scope.staff_read, roles=(Role.msp_admin, Role.msp_agent)),
    )
    async def get_staff(self, session: Session, staff_id: FromPath[uuid.UUID]) -> StaffOut:
        return staff_out(await _staff(session, staff_id))

    @patch("/{staff_id:uuid}", summary="Update a staff member (only the fields sent)", **STAFF_ADMIN)
    async def update(
        self, session: Session, staff_id: FromPath[uuid.UUID], data: JSONBody[StaffUpdate]
    ) -> StaffOut:
        member = await _staff(session, staff_id)
        service.staff_update(
            member,
            name=None if data.name is msgspec.UNSET else data.name,
            role=None if data.role is msgspec.UNSET else data.role,
            tier=service.KEEP if data.tier is msgspec.UNSET else data.tier,
            active=None if data.active is msgspec.UNSET else data.active,
        )
        return staff_out(member)

    @get(
        "/{staff_id:uuid}/grants",
        summary="Tenants a staff member may act on",
        **protected(Scope.staff_read, roles=(Role.msp_admin, Role.msp_agent)),
    )
    async def list_grants(self, session: Session, staff_id: FromPath[uuid.UUID]) -> list[GrantOut]:
        await _staff(session, staff_id)
        return [_grant_out(g) for g in await StaffRepository(session).grants(staff_id)]

    @post("/{staff_id:uuid}/grants", summary="Grant a tenant (and optionally its children)", **STAFF_ADMIN)
    async def add_grant(
        self, session: Session, staff_id: FromPath[uuid.UUID], data: JSONBody[GrantCreate]
    ) -> GrantOut:
        await _staff(session, staff_id)
        if await session.get(Tenant, data.tenant_id) is None:
            raise NotFound(f"Tenant {data.tenant_id} not found.")
        repo = StaffRepository(session)
        if await repo.grant(staff_id, data.tenant_id) is not None:
            raise Conflict("This staff member already has a grant on that tenant.")
        grant = StaffGrant(
            staff_id=staff_id, tenant_id=data.tenant_id, include_children=data.include_children
        )
        session.add(grant)
        await session.flush()
        return _grant_out(grant)

    @delete("/{staff_id:uuid}/grants/{grant_tenant_id:uuid}", summary="Remove a tenant grant", **STAFF_ADMIN)
    async def remove_grant(
        self, session: Session, staff_id: FromPath[uuid.UUID], grant_tenant_id: FromPath[uuid.UUID]
    ) -> None:
        grant = await StaffRepository(session).grant(staff_id, grant_tenant_id)
        if grant is None:
            raise NotFound("No such grant.")
        await session.delete(grant)


async def _staff(session: Session, staff_id: FromPath[uuid.UUID]) -> StaffMember:
    member = await StaffRepository(session).get(staff_id)
    if member is None:
        raise NotFound(f"Staff member {staff_id} not found.")
    return member


def _grant_out(grant: StaffGrant) -> GrantOut:
    return GrantOut(
        tenant_id=grant.tenant_id, include_children=grant.include_children, created_at=grant.created_at
    )


__all__ = ["Any", "ClientController", "StaffController"]
