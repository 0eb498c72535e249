"""The OAuth2 authorization server, driven by Authlib.

Authlib's server is synchronous. Each OAuth request runs Authlib in a worker thread; whenever Authlib asks
for a client, a user or a token, the callback hops back onto the event loop (``anyio.from_thread``) and
uses the request's own async session. The request then commits once at the edge like any other.

Grants: ``client_credentials`` (tenant integration clients), ``password`` (first-party sign-in through the
built-in public client ``msp-console``; also what ``POST /api/v1/auth/sign-in`` uses) and ``refresh_token``
(rotating, with reuse detection). Endpoints: RFC 7662 introspection, RFC 7009 revocation.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio.from_thread
import anyio.to_thread
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant, RefreshTokenGrant
from authlib.oauth2.rfc6749.grants import ResourceOwnerPasswordCredentialsGrant as PasswordGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.keys import KeyRing
from msp_platform.auth.passwords import hash_password, needs_rehash, verify_password
from msp_platform.auth.principal import PrincipalKind
from msp_platform.auth.repository import AuthRepository
from msp_platform.auth.scopes import (
    ALL_SCOPES,
    CLIENT_MAX_SCOPES,
    ROLE_SCOPES,
    Role,
    format_scope,
    parse_scope,
)
from msp_platform.auth.tokens import AccessTokenVerifier
from msp_platform.config import Settings
from msp_platform.kit.crypto import constant_time_equals, sha256_hex
from msp_platform.kit.errors import Unauthorized
from msp_platform.kit.ids import new_id, new_token
from msp_platform.kit.time import utcnow
from msp_platform.models.oauth import OAuthClient, RefreshToken
from msp_platform.models.tenant import TenantStatus

CONSOLE_CLIENT_ID = "msp-console"
REFRESH_PREFIX = "msp_rt"
T = TypeVar("T")


@dataclass
class _Bridge:
    """Per-request state shared between the async endpoint and Authlib's thread."""

    session: AsyncSession
    settings: Settings
    ring: KeyRing
    verifier: AccessTokenVerifier
    remote: str = ""
    # Whatever the grant decided, kept for audit/logging by the endpoint.
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def repo(self) -> AuthRepository:
        return AuthRepository(self.session)

    def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return anyio.from_thread.run(fn, *args)


_bridge: ContextVar[_Bridge] = ContextVar("oauth_bridge")


def _b() -> _Bridge:
    return _bridge.get()


# --- Authlib models -------------------------------------------------------------------------------------


@dataclass
class Subject:
    """The resource owner behind a token: a staff member or a tenant user."""

    kind: PrincipalKind
    id: uuid.UUID
    role: Role
    tenant_id: uuid.UUID | None
    tier: int | None = None

    def get_user_id(self) -> str:
        return str(self.id)


class IntegrationClient(ClientMixin):  # type: ignore[misc]
    def __init__(self, row: OAuthClient) -> None:
        self.row = row
        self.tenant_id = row.tenant_id
        self.scopes = parse_scope(row.scopes) & CLIENT_MAX_SCOPES

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return format_scope(self.scopes & parse_scope(scope)) if scope else format_scope(self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.row.secret_hash is not None and constant_time_equals(
            self.row.secret_hash, sha256_hex(client_secret)
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in {"client_secret_basic", "client_secret_post"}

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class ConsoleClient(ClientMixin):  # type: ignore[misc]
    """The built-in public client for people signing in with email and password."""

    tenant_id = None

    def get_client_id(self) -> str:
        return CONSOLE_CLIENT_ID

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return format_scope(ALL_SCOPES & parse_scope(scope)) if scope else ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in {"password", "refresh_token"}


@dataclass
class RefreshTokenView:
    row: RefreshToken

    def check_client(self, client: ClientMixin) -> bool:
        return bool(self.row.client_id == client.get_client_id())

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.row.expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.row.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.row.rotated_at is not None

    def get_client_id(self) -> str:
        return self.row.client_id


@dataclass
class AccessTokenView:
    claims: dict[str, Any]
    revoked: bool

    def check_client(self, client: ClientMixin) -> bool:
        return bool(self.claims.get("client_id") == client.get_client_id())

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"] - time.time()))

    def is_expired(self) -> bool:
        return bool(self.claims["exp"] <= time.time())

    def is_revoked(self) -> bool:
        return self.revoked

    def get_client_id(self) -> str:
        return str(self.claims.get("client_id"))


# --- Token generation -----------------------------------------------------------------------------------


class AccessTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            issuer=settings.issuer,
            alg=settings.signing_alg,
            refresh_token_generator=lambda **_: new_token(REFRESH_PREFIX),
            expires_generator=lambda *_: settings.access_token_ttl_seconds,
        )
        self.settings = settings

    def get_jwks(self) -> Any:
        return _b().ring.signing

    def get_audiences(self, client: ClientMixin, user: Subject | None, scope: str) -> str:
        return self.settings.api_audience

    def get_jti(self, client: ClientMixin, grant_type: str, user: Subject | None, scope: str) -> str:
        return new_id().hex

    def get_extra_claims(
        self, client: ClientMixin, grant_type: str, user: Subject | None, scope: str
    ) -> dict[str, Any]:
        if user is None:
            tenant_id = getattr(client, "tenant_id", None)
            return {"kind": PrincipalKind.client.value, "tid": str(tenant_id) if tenant_id else None}
        claims: dict[str, Any] = {"kind": user.kind.value, "roles": [user.role.value]}
        if user.tenant_id is not None:
            claims["tid"] = str(user.tenant_id)
        if user.tier is not None:
            claims["tier"] = user.tier
        return claims


# --- Grants ---------------------------------------------------------------------------------------------


class MSPPasswordGrant(PasswordGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def authenticate_user(self, username: str, password: str) -> Subject | None:
        tenant = self.request.form.get("tenant") or None
        return _b().run(_authenticate_person, username, password, tenant)

    def validate_token_request(self) -> None:
        try:
            super().validate_token_request()
        except Exception as exc:
            # RFC 6749 5.2: wrong credentials are invalid_grant, not a malformed request.
            description = str(getattr(exc, "description", "") or "")
            if getattr(exc, "error", "") == "invalid_request" and "username" in description:
                raise InvalidGrantError("The email, password or tenant is wrong.") from exc
            raise


class MSPClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class MSPRefreshTokenGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshTokenView | None:
        return _b().run(_load_refresh_token, refresh_token)

    def authenticate_user(self, refresh_token: RefreshTokenView) -> Subject | None:
        return _b().run(_subject_for_refresh, refresh_token.row)

    def revoke_old_credential(self, refresh_token: RefreshTokenView) -> None:
        _b().run(_mark_rotated, refresh_token.row)


async def _verify(password_hash: str | None, password: str) -> bool:
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    return await anyio.to_thread.run_sync(verify_password, password_hash, password)


async def _rehashed(password_hash: str | None, password: str) -> str | None:
    if password_hash and needs_rehash(password_hash):
        return await anyio.to_thread.run_sync(hash_password, password)
    return None


async def _authenticate_person(email: str, password: str, tenant_slug: str | None) -> Subject | None:
    repo = _b().repo
    email = email.strip().lower()
    if tenant_slug:
        tenant = await repo.tenant_by_slug(tenant_slug.strip().lower())
        if tenant is None or tenant.status != TenantStatus.active:
            await _verify(None, password)
            return None
        user = await repo.user_by_email(tenant.id, email)
        ok = await _verify(user.password_hash if user else None, password)
        if user is None or not ok or not user.active:
            return None
        user.password_hash = await _rehashed(user.password_hash, password) or user.password_hash
        user.last_sign_in_at = utcnow()
        return Subject(PrincipalKind.user, user.id, Role(user.role), tenant.id)
    staff = await repo.staff_by_email(email)
    ok = await _verify(staff.password_hash if staff else None, password)
    if staff is None or not ok or not staff.active:
        return None
    staff.password_hash = await _rehashed(staff.password_hash, password) or staff.password_hash
    staff.last_sign_in_at = utcnow()
    return Subject(PrincipalKind.staff, staff.id, Role(staff.role), None, staff.tier)


async def _load_refresh_token(token: str) -> RefreshTokenView | None:
    repo = _b().repo
    row = await repo.refresh_token_by_hash(sha256_hex(token))
    if row is None:
        return None
    now = utcnow()
    if row.rotated_at is not None or row.revoked_at is not None:
        # A rotated token presented again: someone holds a copy. Kill the whole family (RFC 9700 4.14.2).
        # Flagged so the endpoint commits this even though the grant answers an error.
        await repo.revoke_refresh_family(row.family_id, now)
        _b().outcome["commit_on_error"] = True
        return None
    if row.expires_at <= now:
        return None
    return RefreshTokenView(row)


async def _mark_rotated(row: RefreshToken) -> None:
    row.rotated_at = utcnow()


async def _subject_for_refresh(row: RefreshToken) -> Subject | None:
    repo = _b().repo
    if row.subject_kind == PrincipalKind.staff.value:
        staff = await repo.staff(row.subject_id)
        if staff is None or not staff.active:
            return None
        return Subject(PrincipalKind.staff, staff.id, Role(staff.role), None, staff.tier)
    if row.tenant_id is None or await repo.active_tenant(row.tenant_id) is None:
        return None
    user = await repo.user(row.tenant_id, row.subject_id)
    if user is None or not user.active:
        return None
    return Subject(PrincipalKind.user, user.id, Role(user.role), row.tenant_id)


async def _query_client(client_id: str) -> IntegrationClient | None:
    if not client_id or "\x00" in client_id or len(client_id) > 255:
        return None  # no such client can exist; do not hand it to the database
    repo = _b().repo
    row = await repo.client_by_client_id(client_id)
    if row is None or row.revoked_at is not None:
        return None
    if row.tenant_id is not None and await repo.active_tenant(row.tenant_id) is None:
        return None
    row.last_used_at = utcnow()
    return IntegrationClient(row)


async def _save_refresh_token(
    token: Mapping[str, Any], client_id: str, user: Subject, family: uuid.UUID
) -> None:
    bridge = _b()
    now = utcnow()
    bridge.session.add(
        RefreshToken(
            token_hash=sha256_hex(token["refresh_token"]),
            family_id=family,
            client_id=client_id,
            subject_kind=user.kind.value,
            subject_id=user.id,
            tenant_id=user.tenant_id,
            scope=str(token.get("scope", "")),
            issued_at=now,
            expires_at=now + timedelta(seconds=bridge.settings.refresh_token_ttl_seconds),
        )
    )
    await bridge.session.flush()


async def _query_token(token: str, hint: str | None) -> AccessTokenView | RefreshTokenView | None:
    bridge = _b()
    if hint != "refresh_token" and token.count(".") == 2:
        try:
            claims = await bridge.verifier.verify(token, bridge.session, check_expiry=False)
        except Unauthorized:
            return None
        return AccessTokenView(claims, await bridge.repo.is_access_token_revoked(str(claims["jti"])))
    if token.startswith(REFRESH_PREFIX + "_"):
        row = await bridge.repo.refresh_token_by_hash(sha256_hex(token))
        return RefreshTokenView(row) if row is not None else None
    return None


async def _revoke(token: AccessTokenView | RefreshTokenView) -> None:
    bridge = _b()
    if isinstance(token, AccessTokenView):
        expires = datetime.fromtimestamp(int(token.claims["exp"]), tz=utcnow().tzinfo)
        await bridge.repo.revoke_access_token(str(token.claims["jti"]), expires)
    else:
        await bridge.repo.revoke_refresh_family(token.row.family_id, utcnow())


class MSPIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _b().run(_query_token, token_string, token_type_hint)

    def check_permission(self, token: Any, client: ClientMixin, request: Any) -> bool:
        # A client may introspect the tokens it was issued, nothing else.
        return bool(token.get_client_id() == client.get_client_id())

    def introspect_token(self, token: AccessTokenView | RefreshTokenView) -> dict[str, Any]:
        if isinstance(token, AccessTokenView):
            c = token.claims
            payload = {
                "active": True,
                "token_type": "access_token",
                "client_id": c["client_id"],
                "scope": c.get("scope", ""),
                "sub": c["sub"],
                "aud": c["aud"],
                "iss": c["iss"],
                "exp": c["exp"],
                "iat": c["iat"],
                "jti": c["jti"],
            }
            for extra in ("tid", "roles", "kind", "tier"):
                if c.get(extra) is not None:
                    payload[extra] = c[extra]
            return payload
        row = token.row
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": row.client_id,
            "scope": row.scope,
            "sub": str(row.subject_id),
            "exp": int(row.expires_at.timestamp()),
            "iat": int(row.issued_at.timestamp()),
            **({"tid": str(row.tenant_id)} if row.tenant_id else {}),
        }


class MSPRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _b().run(_query_token, token_string, token_type_hint)

    def revoke_token(self, token: AccessTokenView | RefreshTokenView, request: Any) -> None:
        _b().run(_revoke, token)


# --- Server ---------------------------------------------------------------------------------------------


class _Headers(dict[str, str]):
    """Authlib reads ``headers.get("Authorization")``; HTTP header names are case-insensitive."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class FormRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Mapping[str, str], form: Mapping[str, str]) -> None:
        super().__init__(method, uri, headers=_Headers(headers))
        self._form = dict(form)
        self.payload = BasicOAuth2Payload(self._form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class OAuthResponse:
    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]]
    commit: bool


BASIC_CHALLENGE = 'Basic realm="msp-platform"'


def _invalid_client_status(headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
    """RFC 6749 5.2: ``invalid_client`` is a 401 with a challenge naming the scheme the client may use.

    Authlib answers 400 unless the client tried HTTP Basic; one status for one problem type keeps the
    documented ``/problems/oauth-invalid-client`` (401) true whichever way the client authenticated."""
    if not any(name.lower() == "www-authenticate" for name, _ in headers):
        headers = [*headers, ("WWW-Authenticate", f'{BASIC_CHALLENGE}, error="invalid_client"')]
    return 401, headers


def _unreadable_basic_credentials(headers: Mapping[str, str]) -> OAuthResponse | None:
    """HTTP Basic credentials that are not base64 of UTF-8 text fail client authentication (Authlib would
    raise UnicodeDecodeError deep inside, a 500)."""
    raw = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if raw is None:
        return None
    parts = raw.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(parts[1])
    except (binascii.Error, ValueError):
        return None  # Authlib treats undecodable base64 as no credentials: invalid_client as well
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        status, challenge = _invalid_client_status([])
        return OAuthResponse(
            status=status,
            body={
                "error": "invalid_client",
                "error_description": "The HTTP Basic credentials are not base64-encoded UTF-8 text.",
            },
            headers=challenge,
            commit=False,
        )
    return None


class MSPAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__(scopes_supported=sorted(ALL_SCOPES))
        self.settings = settings
        self.register_token_generator("default", AccessTokenGenerator(settings))
        self.register_grant(MSPClientCredentialsGrant)
        self.register_grant(MSPPasswordGrant)
        self.register_grant(MSPRefreshTokenGrant)
        self.register_endpoint(MSPIntrospectionEndpoint)
        self.register_endpoint(MSPRevocationEndpoint)

    # Authlib hooks ----------------------------------------------------------------------------------
    def query_client(self, client_id: str) -> ClientMixin | None:
        if client_id == CONSOLE_CLIENT_ID:
            return ConsoleClient()
        return _b().run(_query_client, client_id)

    def save_token(self, token: dict[str, Any], request: FormRequest) -> None:
        if "refresh_token" not in token or request.user is None:
            return
        previous = getattr(request, "refresh_token", None)
        family = previous.row.family_id if isinstance(previous, RefreshTokenView) else new_id()
        _b().run(_save_refresh_token, token, request.client.get_client_id(), request.user, family)

    def generate_token(
        self,
        grant_type: str,
        client: ClientMixin,
        user: Subject | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        requested = parse_scope(scope)
        if user is not None:
            allowed = ROLE_SCOPES[user.role]
        elif isinstance(client, IntegrationClient):
            allowed = client.scopes
        else:
            allowed = frozenset()
        if grant_type == "refresh_token":
            # The role may have shrunk since sign-in: keep what is still allowed.
            requested = requested & allowed
            if not requested:
                raise InvalidScopeError("None of the originally granted scopes is still allowed.")
        if requested - allowed:
            raise InvalidScopeError(
                f"Not allowed for this {'role' if user else 'client'}: {format_scope(requested - allowed)}"
            )
        effective = requested or allowed
        token: dict[str, Any] = super().generate_token(
            grant_type,
            client,
            user,
            format_scope(effective),
            expires_in,
            include_refresh_token and user is not None,
        )
        _b().outcome.update(grant_type=grant_type, subject=user, client_id=client.get_client_id())
        return token

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthResponse:
        payload = dict(body or {})
        out_headers = list(headers or [])
        if payload.get("error") == "invalid_client":
            status, out_headers = _invalid_client_status(out_headers)
        return OAuthResponse(status=status, body=payload, headers=out_headers, commit=status < 400)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    # Async entry points ----------------------------------------------------------------------------
    async def respond(
        self,
        kind: str,
        *,
        session: AsyncSession,
        ring: KeyRing,
        verifier: AccessTokenVerifier,
        uri: str,
        headers: Mapping[str, str],
        form: Mapping[str, str],
    ) -> tuple[OAuthResponse, dict[str, Any]]:
        refused = _unreadable_basic_credentials(headers)
        if refused is not None:
            return refused, {}
        bridge = _Bridge(session=session, settings=self.settings, ring=ring, verifier=verifier)
        token = _bridge.set(bridge)
        try:
            request = FormRequest("POST", uri, headers, form)

            def _call() -> OAuthResponse:
                if kind == "token":
                    result: OAuthResponse = self.create_token_response(request)
                else:
                    result = self.create_endpoint_response(kind, request)
                return result

            response = await anyio.to_thread.run_sync(_call)
            return response, bridge.outcome
        finally:
            _bridge.reset(token)
