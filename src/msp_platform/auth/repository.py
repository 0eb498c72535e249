"""All SQL of the auth layer. Runs before any tenant is known, so it reads platform tables directly and
binds the tenant context itself before it touches a tenant table (users)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.authz.types import AccessibleTenantId, TenantContext
from msp_platform.db.session import set_tenant_context
from msp_platform.models.oauth import OAuthClient, RefreshToken, RevokedAccessToken
from msp_platform.models.staff import StaffMember
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def client_by_client_id(self, client_id: str) -> OAuthClient | None:
        found: OAuthClient | None = await self.session.scalar(
            select(OAuthClient).where(OAuthClient.client_id == client_id)
        )
        return found

    async def tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        found: Tenant | None = await self.session.get(Tenant, tenant_id)
        return found

    async def tenant_by_slug(self, slug: str) -> Tenant | None:
        found: Tenant | None = await self.session.scalar(select(Tenant).where(Tenant.slug == slug))
        return found

    async def staff_by_email(self, email: str) -> StaffMember | None:
        found: StaffMember | None = await self.session.scalar(
            select(StaffMember).where(StaffMember.email == email.lower())
        )
        return found

    async def staff(self, staff_id: uuid.UUID) -> StaffMember | None:
        found: StaffMember | None = await self.session.get(StaffMember, staff_id)
        return found

    async def _bind_tenant(self, tenant_id: uuid.UUID) -> None:
        # Reached only after the token or the sign-in form named this tenant: authentication is what
        # grants the context here.
        await set_tenant_context(self.session, TenantContext.single(AccessibleTenantId(tenant_id)))

    async def user_by_email(self, tenant_id: uuid.UUID, email: str) -> User | None:
        await self._bind_tenant(tenant_id)
        found: User | None = await self.session.scalar(select(User).where(User.email == email.lower()))
        return found

    async def user(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
        await self._bind_tenant(tenant_id)
        found: User | None = await self.session.scalar(select(User).where(User.id == user_id))
        return found

    async def refresh_token_by_hash(self, token_hash: str) -> RefreshToken | None:
        found: RefreshToken | None = await self.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        return found

    async def revoke_refresh_family(self, family_id: uuid.UUID, at: datetime) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def is_access_token_revoked(self, jti: str) -> bool:
        return await self.session.get(RevokedAccessToken, jti) is not None

    async def revoke_access_token(self, jti: str, expires_at: datetime) -> None:
        if await self.session.get(RevokedAccessToken, jti) is None:
            self.session.add(RevokedAccessToken(jti=jti, expires_at=expires_at))
            await self.session.flush()

    async def active_tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        tenant = await self.tenant(tenant_id)
        return tenant if tenant is not None and tenant.status == TenantStatus.active else None
