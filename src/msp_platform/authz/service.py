"""Authorization: which tenants a principal may read and write. The only producer of AccessibleTenantId."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role
from msp_platform.authz.types import AccessibleTenantId, TenantContext
from msp_platform.kit.errors import NotFound
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant, TenantStatus

TENANT_HEADER = "MSP-Tenant"


class AuthzRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def tenant_by_ref(self, ref: str) -> Tenant | None:
        try:
            as_id = uuid.UUID(ref)
        except ValueError:
            found: Tenant | None = await self.session.scalar(select(Tenant).where(Tenant.slug == ref.lower()))
            return found
        return await self.session.get(Tenant, as_id)

    async def open_tenants(
        self, *, include_offboarded: bool = False
    ) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
        stmt = select(Tenant.id, Tenant.parent_id)
        if not include_offboarded:
            stmt = stmt.where(Tenant.status != TenantStatus.offboarded)
        rows = await self.session.execute(stmt)
        return [(r[0], r[1]) for r in rows]

    async def grants(self, staff_id: uuid.UUID) -> list[tuple[uuid.UUID, bool]]:
        rows = await self.session.execute(
            select(StaffGrant.tenant_id, StaffGrant.include_children).where(StaffGrant.staff_id == staff_id)
        )
        return [(r[0], r[1]) for r in rows]


async def staff_tenants(
    session: AsyncSession, principal: Principal, *, include_offboarded: bool = False
) -> frozenset[uuid.UUID]:
    """Tenants a staff member may act on: every open tenant for MSP admins; granted ones (and, where the grant
    says so, their descendants) for agents. Offboarded tenants only when asked (their data is kept, but
    day-to-day work does not see them)."""
    return await _granted_tenants(
        AuthzRepository(session),
        principal.staff_id,
        is_admin=principal.role is Role.msp_admin,
        include_offboarded=include_offboarded,
    )


async def staff_member_tenants(session: AsyncSession, staff_id: uuid.UUID) -> frozenset[uuid.UUID]:
    """Open tenants a staff member may act on *now*, by their stored role and grants: for credentials that
    outlive the request that issued them (calendar feed tokens). Empty for unknown or deactivated staff."""
    member = await session.get(StaffMember, staff_id)
    if member is None or not member.active:
        return frozenset()
    return await _granted_tenants(
        AuthzRepository(session),
        staff_id,
        is_admin=member.role == StaffRole.msp_admin,
        include_offboarded=False,
    )


async def _granted_tenants(
    repo: AuthzRepository, staff_id: uuid.UUID | None, *, is_admin: bool, include_offboarded: bool
) -> frozenset[uuid.UUID]:
    tenants = await repo.open_tenants(include_offboarded=include_offboarded)
    if is_admin:
        return frozenset(t for t, _ in tenants)
    assert staff_id is not None
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    for tenant_id, parent_id in tenants:
        if parent_id is not None:
            children.setdefault(parent_id, []).append(tenant_id)
    open_ids = {t for t, _ in tenants}
    result: set[uuid.UUID] = set()
    for tenant_id, include_children in await repo.grants(staff_id):
        stack = [tenant_id]
        while stack:
            current = stack.pop()
            if current in result or current not in open_ids:
                continue
            result.add(current)
            if include_children:
                stack.extend(children.get(current, ()))
    return frozenset(result)


async def resolve_tenant_context(
    session: AsyncSession, principal: Principal, tenant_header: str | None
) -> TenantContext | None:
    """The tenant context of a request.

    Tenant-bound callers (users, integration clients) get their token's tenant; naming another one is a 404.
    Staff name a tenant with ``MSP-Tenant``; a tenant they are not granted is a 404 (never 403: that would
    confirm it exists). Staff without the header get a read-only view over all their tenants.
    """
    if principal.tenant_id is not None:
        own = AccessibleTenantId(principal.tenant_id)
        if tenant_header:
            tenant = await AuthzRepository(session).tenant_by_ref(tenant_header.strip())
            if tenant is None or tenant.id != own:
                raise NotFound(f"Tenant {tenant_header[:64]!r} not found.")
        return TenantContext.single(own)
    if not principal.is_staff:
        return None
    allowed = staff_tenants(session, principal)
    readable = frozenset(AccessibleTenantId(t) for t in await allowed)
    if tenant_header:
        tenant = await AuthzRepository(session).tenant_by_ref(tenant_header.strip())
        if tenant is None:
            raise NotFound(f"Tenant {tenant_header[:64]!r} not found.")
        if tenant.id not in readable:
            if principal.role is Role.msp_admin and tenant.status == TenantStatus.offboarded:
                # "Data kept, access closed": the MSP can still read (retention, audit review), not write.
                return TenantContext.read_only_view(
                    AccessibleTenantId(tenant.id),
                    f"Tenant {tenant.slug} is offboarded: its data can be read but not changed. Reactivate "
                    "the tenant (POST /api/v1/tenants/{id}/reactivate) to change it.",
                )
            raise NotFound(f"Tenant {tenant_header[:64]!r} not found.")
        chosen = AccessibleTenantId(tenant.id)
        # Write access to one tenant, read access to that tenant only: a request is about one tenant.
        return TenantContext.single(chosen)
    return TenantContext(tenant_id=None, readable=readable)


def system_tenant_context(tenant_id: uuid.UUID) -> TenantContext:
    """For background jobs: the job's message names the tenant it was enqueued for by an authorized request."""
    return TenantContext.single(AccessibleTenantId(tenant_id))


def cross_tenant_read_context(tenant_ids: Iterable[uuid.UUID]) -> TenantContext:
    """A read-only view over several tenants, for one person's own data across them (their on-call
    calendar). ``tenant_ids`` must come from this module's checks (``staff_tenants``,
    ``staff_member_tenants``) or be the tenant of a tenant-bound caller."""
    return TenantContext(tenant_id=None, readable=frozenset(AccessibleTenantId(t) for t in tenant_ids))


async def bind_tenant(
    session: AsyncSession, principal: Principal, tenant_id: uuid.UUID
) -> AccessibleTenantId:
    """Act on one tenant named in the path (the tenants API): check access, then bind the session to it.

    MSP admins reach every tenant, agents their granted ones, tenant principals only their own; anything
    else is a 404. The session's writes (and their audit events) then go to that tenant.
    """
    from msp_platform.db.session import set_tenant_context

    if principal.tenant_id is not None:
        allowed = tenant_id == principal.tenant_id
    elif principal.is_staff:
        allowed = tenant_id in await staff_tenants(session, principal, include_offboarded=True)
    else:
        allowed = False
    if not allowed:
        raise NotFound(f"Tenant {tenant_id} not found.")
    accessible = AccessibleTenantId(tenant_id)
    await set_tenant_context(session, TenantContext.single(accessible))
    return accessible


async def bind_new_tenant(
    session: AsyncSession, principal: Principal, tenant_id: uuid.UUID
) -> AccessibleTenantId:
    """An MSP admin just created this tenant: its first writes (and audit events) belong to it."""
    from msp_platform.auth.scopes import Role
    from msp_platform.db.session import set_tenant_context

    if principal.role is not Role.msp_admin:
        raise NotFound("Only MSP administrators create tenants.")
    accessible = AccessibleTenantId(tenant_id)
    await set_tenant_context(session, TenantContext.single(accessible))
    return accessible


async def staff_with_access(session: AsyncSession, tenant_id: uuid.UUID) -> frozenset[uuid.UUID]:
    """Active staff who may act on (and be paged for) a tenant: MSP admins, and agents granted the tenant or,
    with ``include_children``, one of its ancestors."""
    from msp_platform.models.staff import StaffMember, StaffRole

    parents: dict[uuid.UUID, uuid.UUID | None] = {
        row[0]: row[1] for row in await session.execute(select(Tenant.id, Tenant.parent_id))
    }
    lineage: list[uuid.UUID] = []
    current: uuid.UUID | None = tenant_id
    while current is not None and current not in lineage:
        lineage.append(current)
        current = parents.get(current)
    grants = await session.execute(
        select(StaffGrant.staff_id, StaffGrant.tenant_id, StaffGrant.include_children).where(
            StaffGrant.tenant_id.in_(lineage)
        )
    )
    allowed = {staff for staff, granted, children in grants if granted == tenant_id or children}
    rows = await session.execute(select(StaffMember.id, StaffMember.role).where(StaffMember.active.is_(True)))
    return frozenset(sid for sid, role in rows if role == StaffRole.msp_admin or sid in allowed)
