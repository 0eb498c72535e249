"""Dependencies every controller uses: the unit of work's session, the caller, the tenant context."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.guards import principal_from
from msp_platform.auth.principal import Principal
from msp_platform.authz.types import AccessibleTenantId, TenantContext
from msp_platform.kit.errors import BadRequest
from msp_platform.kit.uow import provide_db_session, tenant_context_of


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_from(request)


def provide_ctx(request: Request[Any, Any, Any]) -> TenantContext:
    ctx = tenant_context_of(request)
    if ctx is None:
        raise BadRequest("This endpoint acts on a tenant: staff must name it with the MSP-Tenant header.")
    return ctx


def provide_tenant(request: Request[Any, Any, Any]) -> AccessibleTenantId:
    """The one tenant this request acts on (staff: from MSP-Tenant)."""
    return provide_ctx(request).require_write_tenant()


DEPENDENCIES: dict[str, Provide] = {
    "session": Provide(provide_db_session),
    "principal": Provide(provide_principal, sync_to_thread=False),
    "ctx": Provide(provide_ctx, sync_to_thread=False),
    "tenant_id": Provide(provide_tenant, sync_to_thread=False),
}


# Handler parameter types: the parameter *name* picks the dependency (session, principal, ctx, tenant_id).
Session = NamedDependency[AsyncSession]
Caller = NamedDependency[Principal]
Ctx = NamedDependency[TenantContext]
TenantId = NamedDependency[AccessibleTenantId]
