"""The typed tenant key. Only ``authz`` produces these values: holding one means access was checked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import NewType

AccessibleTenantId = NewType("AccessibleTenantId", uuid.UUID)


@dataclass(frozen=True, slots=True)
class TenantContext:
    """What a unit of work may see and change.

    ``tenant_id`` is the one tenant that writes go to (None for a read-only cross-tenant view, such as an
    MSP agent's queue over several tenants); ``readable`` is every tenant whose rows may be read.
    """

    tenant_id: AccessibleTenantId | None
    readable: frozenset[AccessibleTenantId]

    def __post_init__(self) -> None:
        if self.tenant_id is not None and self.tenant_id not in self.readable:
            raise ValueError("the write tenant must be readable")

    @classmethod
    def single(cls, tenant_id: AccessibleTenantId) -> TenantContext:
        return cls(tenant_id=tenant_id, readable=frozenset({tenant_id}))

    def require_write_tenant(self) -> AccessibleTenantId:
        if self.tenant_id is None:
            from msp_platform.kit.errors import BadRequest

            raise BadRequest("Select the tenant to act on with the MSP-Tenant header.")
        return self.tenant_id


class TenantScopeError(RuntimeError):
    """Raised when code touches tenant-owned rows without a tenant context: there is no 'see everything' mode."""
