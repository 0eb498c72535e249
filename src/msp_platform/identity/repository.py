"""All SQL of the identity domain (users, invitations, staff, grants, integration clients)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, String, column, func, or_, select, update, values
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import PrincipalKind
from msp_platform.authz.types import AccessibleTenantId
from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.invitation import Invitation
from msp_platform.models.oauth import OAuthClient, RefreshToken
from msp_platform.models.site import Site
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User

CLIENT_ORDER = Ordering("created", (SortKey(OAuthClient.created_at), SortKey(OAuthClient.id)))
STAFF_ORDER = Ordering("email", (SortKey(StaffMember.email), SortKey(StaffMember.id)))
USER_ORDER = Ordering("email", (SortKey(User.email), SortKey(User.id)))
INVITATION_ORDER = Ordering("newest", (SortKey(Invitation.created_at, True), SortKey(Invitation.id, True)))
# Batch lookups send at most this many values per IN (...): well under SQLite's and asyncpg's parameter limits.
CHUNK = 1000
T = TypeVar("T")


def _chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _contains(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ClientRepository:
    """Integration clients live in a platform table (the token endpoint finds them before it knows the
    tenant), so every query here takes the caller's AccessibleTenantId explicitly."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _of(self, tenant_id: AccessibleTenantId) -> Select[OAuthClient]:
        # Not covered by the session's automatic scoping: oauth_clients is a platform table (the token endpoint
        # looks a client up by client_id before any tenant context exists), so it carries tenant_id as data and
        # this repository names the caller's tenant, an AccessibleTenantId only authz can produce.
        return select(OAuthClient).where(OAuthClient.tenant_id == tenant_id)

    async def page(
        self, tenant_id: AccessibleTenantId, *, limit: int | None, cursor: str | None, include_revoked: bool
    ) -> tuple[list[OAuthClient], str | None]:
        stmt = self._of(tenant_id)
        if not include_revoked:
            stmt = stmt.where(OAuthClient.revoked_at.is_(None))
        return await paginate(
            self.session,
            stmt,
            ordering=CLIENT_ORDER,
            limit=limit,
            cursor=cursor,
            scope=f"clients:{tenant_id}",
        )

    async def get(self, tenant_id: AccessibleTenantId, client_id: str) -> OAuthClient | None:
        found: OAuthClient | None = await self.session.scalar(
            self._of(tenant_id).where(OAuthClient.client_id == client_id)
        )
        return found

    async def active(self, tenant_id: AccessibleTenantId) -> list[OAuthClient]:
        rows = await self.session.scalars(self._of(tenant_id).where(OAuthClient.revoked_at.is_(None)))
        return list(rows.all())


class StaffRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self, *, limit: int | None, cursor: str | None, role: str | None, active: bool | None
    ) -> tuple[list[StaffMember], str | None]:
        stmt: Select[Any] = select(StaffMember)
        if role is not None:
            stmt = stmt.where(StaffMember.role == role)
        if active is not None:
            stmt = stmt.where(StaffMember.active.is_(active))
        return await paginate(
            self.session, stmt, ordering=STAFF_ORDER, limit=limit, cursor=cursor, scope="staff"
        )

    async def get(self, staff_id: uuid.UUID) -> StaffMember | None:
        found: StaffMember | None = await self.session.get(StaffMember, staff_id)
        return found

    async def grants(self, staff_id: uuid.UUID) -> list[StaffGrant]:
        rows = await self.session.scalars(
            select(StaffGrant).where(StaffGrant.staff_id == staff_id).order_by(StaffGrant.created_at)
        )
        return list(rows.all())

    async def grant(self, staff_id: uuid.UUID, tenant_id: uuid.UUID) -> StaffGrant | None:
        found: StaffGrant | None = await self.session.scalar(
            select(StaffGrant).where(StaffGrant.staff_id == staff_id, StaffGrant.tenant_id == tenant_id)
        )
        return found


class UserRepository:
    """Users and their invitations (tenant tables: the session scopes every query), plus the two platform
    lookups the user lifecycle needs (a tenant by id, a user's refresh tokens)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        found: User | None = await self.session.scalar(select(User).where(User.id == user_id))
        return found

    async def by_email(self, email: str) -> User | None:
        found: User | None = await self.session.scalar(select(User).where(User.email == email.lower()))
        return found

    async def by_emails(self, emails: Iterable[str]) -> dict[str, User]:
        wanted = sorted({e.lower() for e in emails})
        found: dict[str, User] = {}
        postgres = self.session.bind is not None and self.session.bind.dialect.name == "postgresql"
        for chunk in _chunks(wanted):
            stmt = select(User)
            if postgres:
                # A join with a VALUES list, not ``email IN (...)``: PostgreSQL's generic plan for a prepared
                # IN of 1,000 parameters compares every user of the tenant with every value (no hashing),
                # which made a 10,000-row import spend seconds here. (SQLite has no VALUES column aliases,
                # and its IN builds a temporary index anyway.)
                listed = values(column("email", String), name="wanted").data([(e,) for e in chunk])
                stmt = stmt.join(listed, User.email == listed.c.email)
            else:
                stmt = stmt.where(User.email.in_(chunk))
            for user in await self.session.scalars(stmt):
                found[user.email] = user
        return found

    async def page(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        role: str | None,
        active: bool | None,
        site_id: uuid.UUID | None,
        department: str | None,
        vip: bool | None,
        clinical: bool | None,
        q: str | None,
    ) -> tuple[list[User], str | None]:
        stmt: Select[Any] = select(User)
        if role is not None:
            stmt = stmt.where(User.role == role)
        if active is not None:
            stmt = stmt.where(User.active.is_(active))
        if site_id is not None:
            stmt = stmt.where(User.site_id == site_id)
        if department is not None:
            stmt = stmt.where(func.lower(User.department) == department.strip().lower())
        if vip is not None:
            stmt = stmt.where(User.vip.is_(vip))
        if clinical is not None:
            stmt = stmt.where(User.clinical.is_(clinical))
        if q:
            pattern = _contains(q.strip())
            stmt = stmt.where(
                or_(func.lower(User.name).like(pattern, escape="\\"), User.email.like(pattern, escape="\\"))
            )
        return await paginate(
            self.session, stmt, ordering=USER_ORDER, limit=limit, cursor=cursor, scope="users"
        )

    async def site_ids_by_code(self, codes: Iterable[str]) -> dict[str, uuid.UUID]:
        """{CODE: site id} of the tenant's sites among ``codes`` (codes are stored upper-cased)."""
        wanted = sorted({c.upper() for c in codes})
        found: dict[str, uuid.UUID] = {}
        for chunk in _chunks(wanted):
            rows = await self.session.execute(select(Site.code, Site.id).where(Site.code.in_(chunk)))
            found.update((row.code, row.id) for row in rows)
        return found

    async def open_invitations(self, user_ids: Iterable[uuid.UUID]) -> list[Invitation]:
        """Unused, unrevoked invitations of these users (expired ones included: revoking them is harmless)."""
        wanted = sorted(set(user_ids))
        found: list[Invitation] = []
        for chunk in _chunks(wanted):
            rows = await self.session.scalars(
                select(Invitation).where(
                    Invitation.user_id.in_(chunk),
                    Invitation.used_at.is_(None),
                    Invitation.revoked_at.is_(None),
                )
            )
            found.extend(rows)
        return found

    async def all_open_invitations(self) -> list[Invitation]:
        """Every unused, unrevoked invitation of the tenant."""
        rows = await self.session.scalars(
            select(Invitation).where(Invitation.used_at.is_(None), Invitation.revoked_at.is_(None))
        )
        return list(rows.all())

    async def invitation_by_hash(self, token_hash: str) -> Invitation | None:
        # FOR UPDATE: two concurrent accepts of one token queue here; the second sees it used.
        found: Invitation | None = await self.session.scalar(
            select(Invitation).where(Invitation.token_hash == token_hash).with_for_update()
        )
        return found

    async def invitations_page(
        self, user_id: uuid.UUID, *, limit: int | None, cursor: str | None
    ) -> tuple[list[Invitation], str | None]:
        stmt: Select[Any] = select(Invitation).where(Invitation.user_id == user_id)
        return await paginate(
            self.session, stmt, ordering=INVITATION_ORDER, limit=limit, cursor=cursor, scope="invitations"
        )

    async def invitation(self, invitation_id: uuid.UUID) -> Invitation | None:
        found: Invitation | None = await self.session.scalar(
            select(Invitation).where(Invitation.id == invitation_id)
        )
        return found

    async def tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        found: Tenant | None = await self.session.get(Tenant, tenant_id)
        return found

    async def revoke_all_refresh_tokens(self, tenant_id: AccessibleTenantId, at: datetime) -> int:
        """Every live refresh token of the tenant (all its users and clients); returns how many. A platform
        table like oauth_clients (the token endpoint reads it before any tenant context), hence the tenant
        named explicitly."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.tenant_id == tenant_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def revoke_refresh_tokens(
        self, tenant_id: AccessibleTenantId, user_ids: Iterable[uuid.UUID], at: datetime
    ) -> None:
        """Refresh tokens live in a platform table (the token endpoint finds them before it knows the
        tenant), so the tenant is named explicitly here."""
        wanted = sorted(set(user_ids))
        for chunk in _chunks(wanted):
            await self.session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.tenant_id == tenant_id,
                    RefreshToken.subject_kind == PrincipalKind.user.value,
                    RefreshToken.subject_id.in_(chunk),
                    RefreshToken.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
