"""The typed tenant key. Only ``authz`` produces these values: holding one means access was checked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import NewType

from msp_platform.kit.errors import BadRequest, Conflict, problem_type

AccessibleTenantId = NewType("AccessibleTenantId", uuid.UUID)


@dataclass(frozen=True, slots=True)
class TenantContext:
    """What a unit of work may see and change.

    ``tenant_id`` is the one tenant that writes go to (None for a read-only cross-tenant view, such as an
    MSP agent's queue over several tenants); ``readable`` is every tenant whose rows may be read.
    """

    tenant_id: AccessibleTenantId | None
    readable: frozenset[AccessibleTenantId]
    # Set for a read-only view of one tenant (an MSP admin reading an offboarded tenant): why writes are refused.
    read_only: str | None = None

    def __post_init__(self) -> None:
        if self.tenant_id is not None and self.tenant_id not in self.readable:
            raise ValueError("the write tenant must be readable")
        if self.read_only is not None and (self.tenant_id is not None or len(self.readable) != 1):
            raise ValueError("a read-only view names one tenant and no write tenant")

    @classmethod
    def single(cls, tenant_id: AccessibleTenantId) -> TenantContext:
        return cls(tenant_id=tenant_id, readable=frozenset({tenant_id}))

    @classmethod
    def read_only_view(cls, tenant_id: AccessibleTenantId, reason: str) -> TenantContext:
        """Read one tenant's rows, write none (writes get a 409 ``tenant-read-only`` saying ``reason``)."""
        return cls(tenant_id=None, readable=frozenset({tenant_id}), read_only=reason)

    def require_write_tenant(self) -> AccessibleTenantId:
        if self.tenant_id is None:
            if self.read_only is not None:
                raise TenantReadOnly(self.read_only)
            raise BadRequest("Select the tenant to act on with the MSP-Tenant header.")
        return self.tenant_id

    def require_one_tenant(self) -> AccessibleTenantId:
        """The one tenant a read is about: the write tenant, or the tenant of a read-only view."""
        if self.read_only is not None:
            return next(iter(self.readable))
        return self.require_write_tenant()


class TenantReadOnly(Conflict):
    problem = problem_type(
        "tenant-read-only",
        409,
        "Tenant is read-only",
        "The tenant is offboarded: MSP administrators can still read its data (kept for retention and audit), "
        "but nothing can be changed until it is reactivated.",
    )


class TenantScopeError(RuntimeError):
    """Raised when code touches tenant-owned rows without a tenant context: there is no 'see everything' mode."""
