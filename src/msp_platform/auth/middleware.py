"""Authentication of every routed request not marked ``opt={"public": True}``: fail-closed by default.

Verifies the RFC 9068 access token, re-checks the database (revoked token, deactivated user or client,
suspended tenant), resolves the tenant context (``authz``), and applies the per-caller rate limit.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal, PrincipalKind
from msp_platform.auth.repository import AuthRepository
from msp_platform.auth.scopes import ROLE_SCOPES, Role, parse_scope
from msp_platform.authz.service import TENANT_HEADER, resolve_tenant_context
from msp_platform.db.engine import SQLITE_BEGIN_OPTION
from msp_platform.kit.errors import Forbidden, Unauthorized, problem_type
from msp_platform.state import services_of

TENANT_INACTIVE = problem_type(
    "tenant-inactive",
    403,
    "Tenant is not active",
    "The tenant this credential belongs to is suspended or offboarded; access is closed until an MSP "
    "administrator reactivates it.",
)


class TenantInactive(Forbidden):
    problem = TENANT_INACTIVE


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            raw = value.decode("latin-1").strip()
            scheme, _, token = raw.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized(
                    "The Authorization header must be 'Bearer <access token>'.", error="invalid_request"
                )
            return token.strip()
    return None


def header(scope: Scope, wanted: str) -> str | None:
    key = wanted.lower().encode()
    for name, value in scope.get("headers", []):
        if name == key:
            return value.decode("latin-1")
    return None


async def principal_from_claims(session: AsyncSession, claims: dict[str, Any]) -> Principal:
    repo = AuthRepository(session)
    if await repo.is_access_token_revoked(str(claims["jti"])):
        raise Unauthorized("The access token has been revoked.")
    kind = claims.get("kind")
    token_scopes = parse_scope(claims.get("scope"))
    tenant_claim = claims.get("tid")
    tenant_id = uuid.UUID(tenant_claim) if tenant_claim else None
    common = {
        "client_id": str(claims["client_id"]),
        "jti": str(claims["jti"]),
        "expires_at": int(claims["exp"]),
    }
    if kind == PrincipalKind.client.value:
        client = await repo.client_by_client_id(str(claims["client_id"]))
        if client is None or client.revoked_at is not None or client.tenant_id != tenant_id:
            raise Unauthorized("The client behind this token has been revoked.")
        await _require_active_tenant(repo, tenant_id)
        return Principal(
            PrincipalKind.client,
            client.client_id,
            Role.tenant_admin,
            token_scopes & parse_scope(client.scopes),
            tenant_id=tenant_id,
            **common,  # type: ignore[arg-type]
        )
    try:
        subject = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise Unauthorized("The access token has an invalid subject.") from exc
    if kind == PrincipalKind.staff.value:
        staff = await repo.staff(subject)
        if staff is None or not staff.active:
            raise Unauthorized("This staff account is deactivated.")
        role = Role(staff.role)
        return Principal(
            PrincipalKind.staff,
            str(staff.id),
            role,
            token_scopes & ROLE_SCOPES[role],
            tier=staff.tier,
            **common,  # type: ignore[arg-type]
        )
    if kind == PrincipalKind.user.value and tenant_id is not None:
        await _require_active_tenant(repo, tenant_id)
        user = await repo.user(tenant_id, subject)
        if user is None or not user.active:
            raise Unauthorized("This user account is deactivated.")
        role = Role(user.role)
        return Principal(
            PrincipalKind.user,
            str(user.id),
            role,
            token_scopes & ROLE_SCOPES[role],
            tenant_id=tenant_id,
            **common,  # type: ignore[arg-type]
        )
    raise Unauthorized("The access token names no known kind of subject.")


async def _require_active_tenant(repo: AuthRepository, tenant_id: uuid.UUID | None) -> None:
    if tenant_id is None:
        raise Unauthorized("The access token names no tenant.")
    tenant = await repo.tenant(tenant_id)
    if tenant is None:
        raise Unauthorized("The access token's tenant does not exist.")
    if tenant.status != "active":
        raise TenantInactive(f"Tenant {tenant.slug} is {tenant.status}; access is closed.")


def _bypasses_authentication(scope: Scope) -> bool:
    # OPTIONS is answered by Litestar itself (204 with Allow, no data); browsers send it without
    # credentials, so it must not be a 401.
    if scope.get("method") == "OPTIONS":
        return True
    # Only the OpenAPI controller is mounted under /schema (its handlers' own paths are relative).
    path = scope.get("path", "")
    return path == "/schema" or path.startswith("/schema/")


class AuthenticationMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_opt_key = "public"
    # The OpenAPI document and its UIs (and OPTIONS) are public; everything else must opt out per handler.
    should_bypass_for_scope = staticmethod(_bypasses_authentication)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        services = services_of(scope["litestar_app"])
        token = bearer_token(scope)
        if token is None:
            raise Unauthorized(
                "This endpoint requires an access token (Authorization: Bearer ...).", error=""
            )
        async with services.db.session() as session:
            if services.db.dialect == "sqlite":
                await session.connection(execution_options={SQLITE_BEGIN_OPTION: "DEFERRED"})
            claims = await services.verifier.verify(token, session)
            principal = await principal_from_claims(session, claims)
            ctx = await resolve_tenant_context(session, principal, header(scope, TENANT_HEADER))
            await session.rollback()
        verdict = await services.limiter.hit(
            principal.key, limit=services.settings.rate_limit_per_minute, window=60
        )
        scope["user"] = principal
        scope["auth"] = claims
        scope["state"]["tenant_ctx"] = ctx

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in verdict.headers().items():
                    headers[name] = value
            await send(message)

        await next_app(scope, receive, _send)
