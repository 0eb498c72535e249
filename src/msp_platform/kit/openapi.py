"""OpenAPI: security schemes and the problem+json error responses documented on every operation."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme

from msp_platform.auth.scopes import ALL_SCOPES


class FieldErrorOut(msgspec.Struct):
    field: str
    message: str


class ProblemDetails(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldErrorOut] | None = None


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDetails, description=description, media_type="application/problem+json"
    )


def _defaults(handler: HTTPRouteHandler, public: bool) -> dict[int, ResponseSpec]:
    methods = {m.upper() for m in handler.http_methods}
    has_params = any("{" in p for p in handler.paths)
    writes = bool(methods & {"POST", "PUT", "PATCH", "DELETE"})
    out: dict[int, ResponseSpec] = {
        400: _problem("Malformed request (syntax, encoding, headers)."),
        500: _problem("Unexpected server error; quote the request id."),
    }
    if not public:
        out[401] = _problem("Missing, invalid, expired or revoked access token.")
        out[403] = _problem("The token lacks a required scope, or the role may not do this.")
        out[429] = _problem("Rate limit exceeded; see Retry-After.")
    if has_params or not public:
        out[404] = _problem("Not found, or not visible to the caller.")
    if writes or has_params:
        out[422] = _problem("Validation failed; see `errors`.")
    if writes:
        out[409] = _problem("Conflicts with the current state.")
        out[413] = _problem("Request body too large.")
    return out


def document_problems(route_handlers: list[Any]) -> None:
    """Add the problem responses to every handler (idempotent: handlers are module-level objects)."""
    for item in route_handlers:
        handlers: list[HTTPRouteHandler] = []
        if isinstance(item, type) and issubclass(item, Controller):
            handlers = [v for v in vars(item).values() if isinstance(v, HTTPRouteHandler)]
            opt = getattr(item, "opt", None)
            public_default = bool(opt.get("public")) if isinstance(opt, dict) else False
        elif isinstance(item, HTTPRouteHandler):
            handlers = [item]
            public_default = False
        for handler in handlers:
            public = bool((handler.opt or {}).get("public", public_default))
            merged = _defaults(handler, public)
            merged.update(handler.responses or {})
            handler.responses = merged


def openapi_config(version: str) -> OpenAPIConfig:
    scopes = {s: s.replace(":", " ") for s in sorted(ALL_SCOPES)}
    token_url = "/oauth/token"  # noqa: S105 - an endpoint path, not a secret
    return OpenAPIConfig(
        title="msp-platform API",
        version=version,
        description="Multi-tenant MSP platform: tenants, users, devices, incidents, SLAs, on-call. Errors are "
        "RFC 9457 problem details; every POST accepts Idempotency-Key; lists are cursor-paginated. Staff select "
        "the tenant they act on with the `MSP-Tenant` header.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(path="/scalar"), SwaggerRenderPlugin(path="/swagger")],
        components=Components(
            security_schemes={
                "bearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                "oauth2": SecurityScheme(
                    type="oauth2",
                    flows=OAuthFlows(
                        client_credentials=OAuthFlow(token_url=token_url, scopes=scopes),
                        password=OAuthFlow(token_url=token_url, refresh_url=token_url, scopes=scopes),
                    ),
                ),
            }
        ),
        use_handler_docstrings=False,
    )
