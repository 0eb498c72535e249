"""/api/v1/users (a tenant's people, their invitations and bulk onboarding), the public
/api/v1/auth/accept-invitation, /api/v1/clients (a tenant's integration clients) and /api/v1/staff (MSP staff
and their tenant grants)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody

from msp_platform.auth.endpoints import PUBLIC
from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Role, Scope, parse_scope
from msp_platform.identity import service
from msp_platform.identity.repository import ClientRepository, StaffRepository, UserRepository
from msp_platform.identity.schemas import (
    ClientCreate,
    ClientCreated,
    ClientOut,
    GrantCreate,
    GrantOut,
    InvitationAccept,
    InvitationAccepted,
    InvitationCreate,
    InvitationCreated,
    InvitationOut,
    StaffCreate,
    StaffOut,
    StaffUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from msp_platform.kit.bulk import (
    MAX_ROWS,
    ImportMode,
    ImportReport,
    import_operation,
    import_post,
    read_import,
)
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import NotFound
from msp_platform.kit.etag import IfMatch, check_if_match, headers_of
from msp_platform.kit.openapi import problem_response
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.patch import sent_fields
from msp_platform.kit.time import utcnow
from msp_platform.kit.uow import STATE_ROLLBACK, provide_db_session
from msp_platform.models.invitation import Invitation
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.user import User, UserRole
from msp_platform.state import services_of


def invitation_out(invitation: Invitation, now: datetime) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        user_id=invitation.user_id,
        status=invitation.status(now),
        created_at=invitation.created_at,
        created_by=invitation.created_by,
        expires_at=invitation.expires_at,
        used_at=invitation.used_at,
        revoked_at=invitation.revoked_at,
        emailed_at=invitation.emailed_at,
    )


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        tenant_id=user.tenant_id,
        email=user.email,
        name=user.name,
        role=UserRole(user.role),
        title=user.title,
        department=user.department,
        site_id=user.site_id,
        phone=user.phone,
        vip=user.vip,
        clinical=user.clinical,
        employee_id=user.employee_id,
        active=user.active,
        deactivated_at=user.deactivated_at,
        has_password=user.password_hash is not None,
        last_sign_in_at=user.last_sign_in_at,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


USERS_READ = protected(Scope.users_read)
USERS_WRITE = protected(Scope.users_write)
IMPORT_DESCRIPTION = f"""Upsert up to {MAX_ROWS:,} users by email, as `text/csv` (UTF-8 by default; name another
encoding with `charset=`, e.g. `text/csv; charset=windows-1252`), a multipart upload (field `file`) or JSON (an
array of objects, or `{{"rows": [...]}}`).

Columns: `email` and `name` (required), `role` (`tenant_admin` or `tenant_user`), `title`, `department`, `site`
(a site **code**), `phone`, `vip`, `clinical`, `active` (yes/no, true/false, 1/0), `employee_id`. A column left
out, or an empty `role`/`vip`/`clinical`/`active` cell, keeps the stored value (new users get the defaults); an
empty `title`, `department`, `site`, `phone` or `employee_id` cell clears it. `active=no` deactivates the user
(their tokens and open invitations are revoked).

Every row is checked first; the report gives each row's status (`created`, `updated`, `unchanged`, `error` with
reasons, or `valid` when nothing was stored, with `would` saying what storing it does). `mode=atomic` (default)
stores nothing if any row is bad (422 `import-failed` with the report); `mode=partial` stores the good rows;
`dry_run=true` only reports.

The file is UTF-8 unless a byte-order mark says UTF-16 or UTF-32 or `charset=` names another encoding; the
body may be up to MSP_IMPORT_MAX_BODY_BYTES (25 MB by default)."""


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


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["Users"]
    dependencies = DEPENDENCIES

    @post(
        "/",
        summary="Create a user (no password: send an invitation to let them set one)",
        **USERS_WRITE,
    )
    async def create(self, session: Session, tenant_id: TenantId, data: JSONBody[UserCreate]) -> UserOut:
        return user_out(await service.create_user(session, data))

    @get("/", summary="List users (ordered by email)", **USERS_READ)
    async def list_users(
        self,
        session: Session,
        ctx: Ctx,
        limit: Limit = None,
        cursor: Cursor = None,
        role: FromQuery[UserRole | None] = None,
        active: FromQuery[bool | None] = None,
        site_id: FromQuery[uuid.UUID | None] = None,
        department: FromQuery[str | None] = None,
        vip: FromQuery[bool | None] = None,
        clinical: FromQuery[bool | None] = None,
        q: FromQuery[str | None] = None,
    ) -> Page[UserOut]:
        rows, next_cursor = await UserRepository(session).page(
            limit=limit,
            cursor=cursor,
            role=role,
            active=active,
            site_id=site_id,
            department=department,
            vip=vip,
            clinical=clinical,
            q=q,
        )
        return Page(items=[user_out(u) for u in rows], next_cursor=next_cursor)

    @get("/{user_id:uuid}", summary="Get a user (with its ETag)", **USERS_READ)
    async def get_user(self, session: Session, ctx: Ctx, user_id: FromPath[uuid.UUID]) -> Response[UserOut]:
        user = await service.get_user(session, user_id)
        return Response(user_out(user), headers=headers_of(user))

    @patch(
        "/{user_id:uuid}",
        summary="Update a user (only the fields sent)",
        description="Administrators cannot remove their own administrator role. To deactivate a user, use "
        "`POST /api/v1/users/{user_id}/deactivate`. Send `If-Match` with the ETag of a GET to be refused "
        "(412) instead of overwriting someone else's change.",
        **USERS_WRITE,
    )
    async def update(
        self,
        session: Session,
        tenant_id: TenantId,
        principal: Caller,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[UserUpdate],
        if_match: IfMatch = None,
    ) -> Response[UserOut]:
        user = await service.get_user(session, user_id)
        await check_if_match(session, user, if_match, f"User {user.email}")
        await service.update_user(session, user, sent_fields(data), actor=principal)
        return Response(user_out(user), headers=headers_of(user))

    @post(
        "/{user_id:uuid}/deactivate",
        status_code=200,
        summary="Deactivate a user: sign-in, refresh and access tokens stop working",
        description="Revokes the user's refresh tokens and open invitations; access tokens are refused from "
        "the next request. Repeating it changes nothing. Administrators cannot deactivate themselves.",
        **USERS_WRITE,
    )
    async def deactivate(
        self, session: Session, tenant_id: TenantId, principal: Caller, user_id: FromPath[uuid.UUID]
    ) -> UserOut:
        user = await service.get_user(session, user_id)
        return user_out(await service.deactivate_user(session, tenant_id, user, actor=principal))

    @post(
        "/{user_id:uuid}/reactivate",
        status_code=200,
        summary="Reactivate a user (they sign in again with their password)",
        **USERS_WRITE,
    )
    async def reactivate(
        self, session: Session, tenant_id: TenantId, user_id: FromPath[uuid.UUID]
    ) -> UserOut:
        user = await service.get_user(session, user_id)
        return user_out(await service.reactivate_user(session, user))

    @post(
        "/{user_id:uuid}/invitations",
        summary="Invite a user to set their password (single use; replaces older invitations)",
        description="Returns the token and `accept_url` (the link with the token) once (only its hash is "
        "stored); the user redeems it with `POST /api/v1/auth/accept-invitation`. Expires after "
        "`expires_in_hours` (default 72). With SMTP configured (`MSP_SMTP_HOST`) the user is also emailed "
        "the link after the request commits (`email`: `queued`); otherwise `email` is `not_configured` and "
        "the link must be handed over.",
        **USERS_WRITE,
    )
    async def invite(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        tenant_id: TenantId,
        principal: Caller,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[InvitationCreate | None] = None,
    ) -> InvitationCreated:
        user = await service.get_user(session, user_id)
        created = await service.create_invitation(
            session,
            services_of(request.app).settings,
            user,
            expires_in_hours=(data or InvitationCreate()).expires_in_hours,
            created_by=principal.key,
        )
        return InvitationCreated(
            id=created.invitation.id,
            user_id=user.id,
            token=created.token,
            expires_at=created.invitation.expires_at,
            accept_url=created.accept_url,
            email=created.email.value,
        )

    @get(
        "/{user_id:uuid}/invitations",
        summary="A user's invitations, newest first, with their status",
        description="`pending` (the link works), `used`, `revoked` or `expired`; tokens are never shown again.",
        **USERS_READ,
    )
    async def list_invitations(
        self,
        session: Session,
        ctx: Ctx,
        user_id: FromPath[uuid.UUID],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> Page[InvitationOut]:
        user = await service.get_user(session, user_id)
        rows, next_cursor = await UserRepository(session).invitations_page(
            user.id, limit=limit, cursor=cursor
        )
        now = utcnow()
        return Page(items=[invitation_out(i, now) for i in rows], next_cursor=next_cursor)

    @post(
        "/{user_id:uuid}/invitations/{invitation_id:uuid}/revoke",
        status_code=200,
        summary="Revoke an invitation: its link stops working at once",
        description="For a link sent to the wrong address or forwarded. Revoking a revoked or expired "
        "invitation changes nothing; a used one answers 409 (deactivate the user instead). To send a fresh "
        "link, create a new invitation (it also revokes the older ones).",
        **USERS_WRITE,
    )
    async def revoke_invitation(
        self,
        session: Session,
        ctx: Ctx,
        user_id: FromPath[uuid.UUID],
        invitation_id: FromPath[uuid.UUID],
    ) -> InvitationOut:
        user = await service.get_user(session, user_id)
        invitation = await service.get_invitation(session, user, invitation_id)
        return invitation_out(await service.revoke_invitation(session, invitation), utcnow())

    @import_post(
        "/import",
        status_code=200,
        summary="Bulk onboarding: upsert users by email from CSV or JSON",
        description=IMPORT_DESCRIPTION,
        operation_class=import_operation(
            service.IMPORT_COLUMNS, service.IMPORT_REQUIRED, bool_columns=service.IMPORT_BOOL_COLUMNS
        ),
        **USERS_WRITE,
    )
    async def import_users(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        tenant_id: TenantId,
        principal: Caller,
        mode: FromQuery[ImportMode] = ImportMode.atomic,
        dry_run: FromQuery[bool] = False,
    ) -> ImportReport:
        rows = await read_import(request, columns=service.IMPORT_COLUMNS, required=service.IMPORT_REQUIRED)
        if dry_run:
            request.state[STATE_ROLLBACK] = True
        return await service.import_users(
            session, tenant_id, rows, mode=mode, dry_run=dry_run, actor=principal
        )


class InvitationAcceptController(Controller):
    path = "/api/v1/auth"
    tags = ["Authentication"]
    dependencies = {"session": Provide(provide_db_session)}

    @post(
        "/accept-invitation",
        opt=PUBLIC,
        status_code=200,
        summary="Accept an invitation: set your password",
        description="Public: the invitation token is the credential. Afterwards sign in with "
        "`POST /api/v1/auth/sign-in` and `tenant` set to the returned slug. An unknown, expired, used or "
        "withdrawn token is a 400 `invitation-invalid` problem (`reason` says which). Attempts are limited "
        "per client address (MSP_RATE_LIMIT_PER_MINUTE): beyond it, 429 with `Retry-After`.",
        responses={429: problem_response("Too many attempts from this address; see Retry-After.")},
    )
    async def accept(
        self, request: Request[Any, Any, Any], session: Session, data: JSONBody[InvitationAccept]
    ) -> InvitationAccepted:
        services = services_of(request.app)
        address = request.client.host if request.client else "unknown"
        await services.limiter.hit(
            f"accept-invitation:{address}", limit=services.settings.rate_limit_per_minute, window=60
        )
        user, tenant = await service.accept_invitation(session, data.token, data.password)
        return InvitationAccepted(user_id=user.id, email=user.email, tenant=tenant.slug)


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
        ctx: Ctx,
        limit: Limit = None,
        cursor: Cursor = None,
        include_revoked: FromQuery[bool] = False,
    ) -> Page[ClientOut]:
        rows, next_cursor = await ClientRepository(session).page(
            ctx.require_one_tenant(), limit=limit, cursor=cursor, include_revoked=include_revoked
        )
        return Page(items=[client_out(r) for r in rows], next_cursor=next_cursor)

    @get("/{client_id:str}", summary="Get an integration client", **protected(Scope.clients_read))
    async def get_client(self, session: Session, ctx: Ctx, client_id: FromPath[str]) -> ClientOut:
        row = await ClientRepository(session).get(ctx.require_one_tenant(), client_id)
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
        role: FromQuery[StaffRole | None] = None,
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
        grant = await service.grant_tenant(
            session, staff_id, data.tenant_id, include_children=data.include_children
        )
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


__all__ = [
    "Any",
    "ClientController",
    "InvitationAcceptController",
    "StaffController",
    "UserController",
]
