"""OpenAPI: security schemes and the problem+json error responses documented on every operation."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Controller, Router, get

# Litestar's struct schema plugin is internal; the strict variant below extends it (version pinned in uv.lock).
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.enums import ParamType
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OAuthFlow,
    OAuthFlows,
    OpenAPIType,
    Operation,
    Parameter,
    Schema,
    SecurityScheme,
)
from litestar.params import FromPath
from litestar.typing import FieldDefinition

from msp_platform.auth.scopes import ALL_SCOPES
from msp_platform.kit.errors import PROBLEM_MEDIA_TYPE

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator


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


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """msgspec structs as Litestar documents them, plus ``additionalProperties: false`` for those that refuse
    unknown fields (every request body: no mass assignment), so the document says what the API enforces and
    generated clients do not send fields that would be refused. Listed before Litestar's own struct plugin,
    so it is the one used."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if getattr(info, "forbid_unknown_fields", False):
            schema.additional_properties = False
        return schema


def problem_response(description: str) -> ResponseSpec:
    """A documented problem+json response (for a handler's own ``responses``)."""
    return ResponseSpec(data_container=ProblemDetails, description=description, media_type=PROBLEM_MEDIA_TYPE)


# Handler arguments that are not query parameters: Litestar's reserved names and the shared dependencies.
_NOT_QUERY = frozenset(
    {"self", "request", "data", "state", "headers", "cookies", "query", "scope", "socket", "body"}
)
_PATH_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def _arguments(handler: HTTPRouteHandler) -> set[str]:
    try:
        return set(inspect.signature(handler.fn).parameters)
    except (TypeError, ValueError):
        return set()


def _takes_query(handler: HTTPRouteHandler, arguments: set[str]) -> bool:
    """Whether the handler reads query parameters (which a malformed value makes a 422)."""
    from msp_platform.kit.deps import DEPENDENCIES

    path_params = {name for p in handler.paths for name in _PATH_PARAM.findall(p)}
    known = _NOT_QUERY | set(DEPENDENCIES) | set(handler.dependencies or {}) | path_params | {"if_match"}
    return bool(arguments - known)


def _defaults(handler: HTTPRouteHandler, public: bool) -> dict[int, ResponseSpec]:
    methods = {m.upper() for m in handler.http_methods}
    has_params = any("{" in p for p in handler.paths)
    writes = bool(methods & {"POST", "PUT", "PATCH", "DELETE"})
    arguments = _arguments(handler)
    out: dict[int, ResponseSpec] = {
        400: problem_response("Malformed request (syntax, encoding, headers)."),
        500: problem_response("Unexpected server error; quote the request id."),
    }
    if not public:
        out[401] = problem_response("Missing, invalid, expired or revoked access token.")
        out[403] = problem_response("The token lacks a required scope, or the role may not do this.")
        out[429] = problem_response("Rate limit exceeded; see Retry-After.")
    if has_params or not public:
        out[404] = problem_response("Not found, or not visible to the caller.")
    if writes or has_params or _takes_query(handler, arguments):
        out[422] = problem_response("Validation failed; see `errors`.")
    if "if_match" in arguments:
        out[412] = problem_response("`If-Match` names an older ETag: someone changed it since you read it.")
    if writes:
        out[409] = problem_response("Conflicts with the current state.")
        out[413] = problem_response("Request body too large.")
    return out


TENANT_PARAMETER = Parameter(
    name="MSP-Tenant",
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.STRING, max_length=255),
    description="MSP staff: the tenant to act on (its id or slug), where a grant allows it; without it, "
    "staff read across the tenants they are granted. Tenant users and integration clients may only name "
    "their own tenant. A tenant the caller may not act on answers 404.",
)
IDEMPOTENCY_PARAMETER = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern="^[\\x21-\\x7e]+$"),
    description="Makes the POST safe to retry for 24 hours: the same key and body replays the first response "
    "(with `Idempotent-Replayed: true`); the same key with another request is a 422 "
    "(`/problems/idempotency-key-reused`). Keys are scoped to the caller and tenant.",
)


_OPERATION_CLASSES: dict[tuple[type[Operation], bool, bool], type[Operation]] = {}


def _operation_class(base: type[Operation], tenant: bool, idempotent: bool) -> type[Operation]:
    """``base`` (a handler's own Operation class) that also declares the shared header parameters: Litestar
    builds parameters only from handler signatures, and these headers are read by the auth middleware and
    the unit of work."""
    found = _OPERATION_CLASSES.get((base, tenant, idempotent))
    if found is not None:
        return found
    extra = ([TENANT_PARAMETER] if tenant else []) + ([IDEMPOTENCY_PARAMETER] if idempotent else [])
    parent_post_init = getattr(base, "__post_init__", None)

    def __post_init__(self: Operation) -> None:
        if parent_post_init is not None:
            parent_post_init(self)
        params = list(self.parameters or [])
        present = {(p.name.lower(), p.param_in) for p in params if isinstance(p, Parameter)}
        params.extend(p for p in extra if (p.name.lower(), p.param_in) not in present)
        self.parameters = params or None

    namespace = {"__post_init__": __post_init__, "_msp_headers": True}
    # Re-decorated so the generated __init__ calls __post_init__ (Operation's own does not).
    made: type[Operation] = dataclass(type(f"{base.__name__}WithHeaders", (base,), namespace))
    _OPERATION_CLASSES[(base, tenant, idempotent)] = made
    return made


def document_problems(route_handlers: list[Any]) -> None:
    """Add the problem responses and the shared request headers (``MSP-Tenant`` on authenticated
    operations, ``Idempotency-Key`` on POSTs that honour it) to every handler (idempotent: handlers are
    module-level objects)."""
    for item in route_handlers:
        handlers: list[HTTPRouteHandler] = []
        layer_opt: dict[str, Any] = {}
        if isinstance(item, type) and issubclass(item, Controller):
            handlers = [v for v in vars(item).values() if isinstance(v, HTTPRouteHandler)]
            opt = getattr(item, "opt", None)
            layer_opt = dict(opt) if isinstance(opt, dict) else {}
        elif isinstance(item, HTTPRouteHandler):
            handlers = [item]
        for handler in handlers:
            opt = {**layer_opt, **(handler.opt or {})}
            public = bool(opt.get("public", False))
            merged = _defaults(handler, public)
            merged.update(handler.responses or {})
            handler.responses = merged
            tenant = not public
            idempotent = "POST" in {m.upper() for m in handler.http_methods} and bool(
                opt.get("idempotent", True)
            )
            base = handler.operation_class
            if (tenant or idempotent) and not getattr(base, "_msp_headers", False):
                handler.operation_class = _operation_class(base, tenant, idempotent)


@get("/{path:str}", include_in_schema=False, sync_to_thread=False, opt={"public": True, "idempotent": False})
def _schema_path_not_found(path: FromPath[str]) -> None:
    # Litestar's own handler for unknown /schema/* paths answers an HTML page; every 404 here is a problem.
    raise NotFoundException(
        "No documentation at this path; see /schema/scalar, /schema/swagger or /schema/openapi.json."
    )


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
        # Registered before the plugin's routes: for the catch-all path the handler registered first wins.
        openapi_router=Router(
            "/schema",
            route_handlers=[_schema_path_not_found],
            include_in_schema=False,
            dto=None,
            return_dto=None,
        ),
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
