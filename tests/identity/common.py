"""Helpers shared by the identity tests."""

from __future__ import annotations

from sqlalchemy import func, select
from tests.conftest import Factory

from msp_platform.db.engine import Database
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User

USERS = "/api/v1/users"
ACCEPT = "/api/v1/auth/accept-invitation"


async def tenant_admin(factory: Factory) -> tuple[Tenant, dict[str, str]]:
    """A new tenant and the request headers of one of its administrators."""
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    return tenant, await factory.headers(admin)


async def stored_users(owner_db: Database, tenant: Tenant, *, email: str | None = None) -> int:
    """How many users the database holds for ``tenant`` (with that email), read as the owner."""
    stmt = select(func.count()).select_from(User).where(User.tenant_id == tenant.id)
    if email is not None:
        stmt = stmt.where(User.email == email)
    async with owner_db.dangerously_unscoped_session() as session:
        return int(await session.scalar(stmt) or 0)
