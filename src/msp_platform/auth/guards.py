"""Route guards: scopes (403 insufficient-scope) and staff-only routes."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from msp_platform.auth.principal import Principal
from msp_platform.auth.scopes import Role
from msp_platform.kit.errors import Forbidden, InsufficientScope, Unauthorized

BEARER = "bearerAuth"


def principal_from(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise Unauthorized("This endpoint requires an access token.", error="")
    return principal


def requires(*scopes: str) -> Guard:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_from(connection)
        if not principal.has(*scopes):
            raise InsufficientScope(list(scopes))

    guard.__name__ = "requires_" + "_".join(s.replace(":", "_") for s in scopes)
    return guard


def requires_role(*roles: Role) -> Guard:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_from(connection)
        if principal.role not in roles:
            raise Forbidden(f"Only {', '.join(r.value for r in roles)} may do this.")

    guard.__name__ = "requires_role_" + "_".join(r.value for r in roles)
    return guard


def protected(*scopes: str, roles: tuple[Role, ...] = ()) -> dict[str, Any]:
    """Route decorator kwargs: the guards, plus the scopes in the OpenAPI ``security`` requirement."""
    guards: list[Guard] = [requires(*scopes)] if scopes else []
    if roles:
        guards.append(requires_role(*roles))
    return {"guards": guards, "security": [{BEARER: list(scopes)}]}
