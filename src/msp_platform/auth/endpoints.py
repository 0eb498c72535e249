"""OAuth2 endpoints (token, introspection, revocation), discovery (RFC 8414, JWKS), sign-in and /me."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import JSONBody

from msp_platform.auth.guards import principal_from
from msp_platform.auth.schemas import MeResponse, SignInRequest, TokenResponse
from msp_platform.auth.scopes import ALL_SCOPES
from msp_platform.auth.server import CONSOLE_CLIENT_ID, OAuthResponse
from msp_platform.kit.deps import Session
from msp_platform.kit.errors import PROBLEM_MEDIA_TYPE, BadRequest, problem_type
from msp_platform.kit.openapi import problem_response
from msp_platform.kit.problems import problem_body
from msp_platform.kit.uow import STATE_ROLLBACK, provide_db_session, tenant_context_of
from msp_platform.state import services_of

FORM = "application/x-www-form-urlencoded"
PUBLIC = {"public": True, "idempotent": False}

_OAUTH_TITLES = {
    "invalid_request": "Invalid OAuth request",
    "invalid_client": "Client authentication failed",
    "invalid_grant": "Invalid grant",
    "unauthorized_client": "Client not authorized for this grant",
    "unsupported_grant_type": "Unsupported grant type",
    "invalid_scope": "Invalid scope",
    "unsupported_token_type": "Unsupported token type",
    "access_denied": "Access denied",
}
OAUTH_PROBLEMS = {
    code: problem_type(
        "oauth-" + code.replace("_", "-"),
        401 if code == "invalid_client" else 400,
        title,
        f"OAuth 2.0 error `{code}` (RFC 6749 section 5.2); the body also carries `error` and `error_description`.",
    )
    for code, title in _OAUTH_TITLES.items()
}
INVALID_CREDENTIALS = problem_type(
    "invalid-credentials",
    401,
    "Sign-in failed",
    "The email, password or tenant is wrong, or the account is deactivated. The message never says which.",
)


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        raise BadRequest(f"OAuth endpoints take {FORM} bodies (RFC 6749 section 3.2).")
    form = await request.form()
    out: dict[str, str] = {}
    for key in form:
        values = form.getall(key)
        if len(values) != 1:
            raise BadRequest(f"Parameter {key!r} is repeated (RFC 6749 section 3.1).")
        value = values[0]
        if not isinstance(value, str):
            raise BadRequest(f"Parameter {key!r} must be a text field.")
        out[key] = value
    return out


def _as_response(request: Request[Any, Any, Any], result: OAuthResponse) -> Response[Any]:
    headers = {k: v for k, v in result.headers if k.lower() != "content-type"}
    headers.setdefault("Cache-Control", "no-store")
    if result.status < 400:
        return Response(content=result.body, status_code=result.status, headers=headers)
    code = str(result.body.get("error", "invalid_request"))
    problem = OAUTH_PROBLEMS.get(code, OAUTH_PROBLEMS["invalid_request"])
    description = str(result.body.get("error_description") or problem.title)
    body = problem_body(
        type_uri=problem.uri,
        title=problem.title,
        status=result.status,
        detail=description,
        instance=request.url.path,
        extra={"error": code, "error_description": description},
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=result.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _public_uri(issuer: str, path: str) -> str:
    """The URL Authlib sees. TLS is terminated in front of the app (granian behind a proxy), so the
    request's own scheme says nothing; production settings require an https issuer instead."""
    parts = urlsplit(issuer)
    return urlunsplit(("https", parts.netloc, path, "", ""))


async def _oauth(
    request: Request[Any, Any, Any], session: Session, kind: str, form: dict[str, str]
) -> tuple[OAuthResponse, dict[str, Any]]:
    services = services_of(request.app)
    if form.get("grant_type") == "password":
        identity = (form.get("tenant") or "") + "/" + form.get("username", "").strip().lower()
        await services.limiter.hit(
            "sign-in:" + identity, limit=services.settings.sign_in_attempts_per_15_minutes, window=900
        )
    ring = await services.keys.ring(session)
    result, outcome = await services.oauth.respond(
        kind,
        session=session,
        ring=ring,
        verifier=services.verifier,
        uri=_public_uri(services.settings.issuer, request.url.path),
        headers=dict(request.headers),
        form=form,
    )
    if not result.commit and not outcome.get("commit_on_error"):
        request.state[STATE_ROLLBACK] = True
    return result, outcome


class OAuthController(Controller):
    path = "/oauth"
    tags = ["OAuth 2.0"]
    dependencies = {"session": Provide(provide_db_session)}
    opt = PUBLIC

    @post(
        "/token",
        summary="Token endpoint (client_credentials, password, refresh_token)",
        description="RFC 6749 token endpoint. Integration clients use `client_credentials` with HTTP Basic or "
        "`client_secret_post`; people sign in with `password` through the public client `msp-console` "
        "(add `tenant=<slug>` for tenant users) and renew with `refresh_token` (rotating).",
        status_code=200,
        response_description="An access token (RFC 9068 JWT) and, for people, a refresh token.",
    )
    async def token(self, request: Request[Any, Any, Any], session: Session) -> Response[TokenResponse]:
        result, _ = await _oauth(request, session, "token", await _form(request))
        return _as_response(request, result)

    @post("/introspect", summary="Token introspection (RFC 7662)", status_code=200)
    async def introspect(self, request: Request[Any, Any, Any], session: Session) -> Response[dict[str, Any]]:
        result, _ = await _oauth(request, session, "introspection", await _form(request))
        return _as_response(request, result)

    @post("/revoke", summary="Token revocation (RFC 7009)", status_code=200)
    async def revoke(self, request: Request[Any, Any, Any], session: Session) -> Response[dict[str, Any]]:
        result, _ = await _oauth(request, session, "revocation", await _form(request))
        return _as_response(request, result)


class DiscoveryController(Controller):
    path = "/.well-known"
    tags = ["OAuth 2.0"]
    opt = PUBLIC
    dependencies = {"session": Provide(provide_db_session)}

    @get("/jwks.json", summary="Public keys that sign access tokens (by kid)", cache_control=None)
    async def jwks(self, request: Request[Any, Any, Any], session: Session) -> dict[str, Any]:
        ring = await services_of(request.app).keys.ring(session)
        return ring.jwks()

    @get("/oauth-authorization-server", summary="Authorization server metadata (RFC 8414)")
    async def metadata(self, state: State) -> dict[str, Any]:
        settings = state.services.settings
        issuer = settings.issuer.rstrip("/")
        return {
            "issuer": settings.issuer,
            "token_endpoint": f"{issuer}/oauth/token",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "grant_types_supported": ["client_credentials", "password", "refresh_token"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "scopes_supported": sorted(ALL_SCOPES),
            "access_token_signing_alg_values_supported": [settings.signing_alg],
        }


class SessionController(Controller):
    path = "/api/v1"
    tags = ["Authentication"]
    dependencies = {"session": Provide(provide_db_session)}

    @post(
        "/auth/sign-in",
        opt=PUBLIC,
        status_code=200,
        summary="Sign in with email and password",
        description="Returns the same tokens as the token endpoint's password grant. Staff omit `tenant`; "
        "tenant users give their organization's slug.",
        responses={
            401: problem_response("The email, password or tenant is wrong, or the account is deactivated."),
            429: problem_response("Too many sign-in attempts for this account; see Retry-After."),
        },
    )
    async def sign_in(
        self, request: Request[Any, Any, Any], session: Session, data: JSONBody[SignInRequest]
    ) -> Response[TokenResponse]:
        form = {"grant_type": "password", "client_id": CONSOLE_CLIENT_ID, "username": data.email}
        form["password"] = data.password
        if data.tenant:
            form["tenant"] = data.tenant
        if data.scope:
            form["scope"] = data.scope
        result, _ = await _oauth(request, session, "token", form)
        if result.status >= 400 and result.body.get("error") == "invalid_grant":
            body = problem_body(
                type_uri=INVALID_CREDENTIALS.uri,
                title=INVALID_CREDENTIALS.title,
                status=401,
                detail="The email, password or tenant is wrong, or the account is deactivated.",
                instance=request.url.path,
            )
            return Response[Any](
                content=msgspec.json.encode(body),
                status_code=401,
                media_type=PROBLEM_MEDIA_TYPE,
                headers={"WWW-Authenticate": 'Bearer realm="msp-platform"'},
            )
        return _as_response(request, result)

    @get("/me", summary="Who am I: the caller, its scopes and tenant context", security=[{"bearerAuth": []}])
    async def me(self, request: Request[Any, Any, Any]) -> MeResponse:
        principal = principal_from(request)
        ctx = tenant_context_of(request)
        return MeResponse(
            kind=principal.kind.value,
            subject=str(principal.subject_id),
            role=principal.role.value,
            tier=principal.tier,
            scopes=sorted(principal.scopes),
            client_id=principal.client_id,
            tenant_id=str(principal.tenant_id) if principal.tenant_id else None,
            acting_tenant_id=str(ctx.tenant_id) if ctx and ctx.tenant_id else None,
            readable_tenant_ids=sorted(str(t) for t in ctx.readable) if ctx else [],
            token_expires_at=principal.expires_at,
        )
