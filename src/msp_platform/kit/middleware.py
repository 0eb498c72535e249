"""Request id and access log for every routed request."""

from __future__ import annotations

import re
import time
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import get_logger, request_id_var, request_state_var

log = get_logger("msp_platform.access")
REQUEST_ID_HEADER = "X-Request-ID"
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def request_id_for(scope: Scope) -> str:
    state: dict[str, Any] = scope.setdefault("state", {})
    existing = state.get("request_id")
    if existing:
        return str(existing)
    incoming = None
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            break
    # Accept the caller's id (a gateway's trace id) only when it is sane; otherwise mint one.
    request_id = incoming if incoming and _ACCEPTABLE_ID.match(incoming) else new_id().hex
    state["request_id"] = request_id
    return request_id


class RequestContextMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = request_id_for(scope)
        id_token = request_id_var.set(request_id)
        state_token = request_state_var.set(scope["state"])
        started = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, _send)
        except Exception as exc:
            from msp_platform.kit.problems import translate

            status = translate(exc).status_code
            raise
        finally:
            principal = scope.get("user")
            log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                principal=getattr(principal, "key", None),
            )
            request_state_var.reset(state_token)
            request_id_var.reset(id_token)


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """before_send hook: every response, routed or not (404s), carries the request id."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        headers[REQUEST_ID_HEADER] = request_id_for(scope)
