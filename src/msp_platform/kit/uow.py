"""The request's unit of work: one session, committed or rolled back here at the edge, never in services.

- The session carries the tenant context the auth layer resolved (or none, for public endpoints).
- POSTs with ``Idempotency-Key`` claim the key inside this transaction (see ``kit.idempotency``).
- A failed commit becomes an error response; the response built before it is thrown away, so a caller
  never sees a 2xx for a change that was not stored.
- Jobs queued through the outbox are sent only after the commit succeeded.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from enum import Enum
from typing import Any

from litestar import Request, Response
from litestar.serialization import get_serializer
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import set_actor
from msp_platform.auth.principal import Principal
from msp_platform.authz.types import TenantContext
from msp_platform.db.engine import SQLITE_BEGIN_OPTION
from msp_platform.db.session import CTX_KEY
from msp_platform.kit import idempotency
from msp_platform.kit.errors import Conflict, PlatformError, ServiceUnavailable
from msp_platform.kit.logging import get_logger, request_state_var
from msp_platform.state import services_of
from msp_platform.worker.outbox import PENDING_KEY, send_after_commit

log = get_logger(__name__)

STATE_CTX = "tenant_ctx"
STATE_CAPTURE = "idempotency_capture"
STATE_CAPTURED = "idempotency_captured"
STATE_ENCODER = "idempotency_encoder"
STATE_ROLLBACK = "rollback"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def tenant_context_of(request: Request[Any, Any, Any]) -> TenantContext | None:
    ctx: TenantContext | None = request.scope.get("state", {}).get(STATE_CTX)
    return ctx


def principal_of(request: Request[Any, Any, Any]) -> Principal | None:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else None


def idempotency_applies(request: Request[Any, Any, Any]) -> bool:
    return request.method == "POST" and request.route_handler.opt.get("idempotent", True)


async def provide_db_session(request: Request[Any, Any, Any]) -> AsyncGenerator[AsyncSession, None]:
    services = services_of(request.app)
    session = services.db.session()
    session.info[CTX_KEY] = tenant_context_of(request)
    caller = principal_of(request)
    set_actor(session, caller.key if caller else "anonymous")
    claim: idempotency.IdempotencyClaim | None = None
    try:
        if request.method in READ_METHODS and services.db.dialect == "sqlite":
            await session.connection(execution_options={SQLITE_BEGIN_OPTION: "DEFERRED"})
        raw_key = request.headers.get(idempotency.HEADER)
        if raw_key is not None and idempotency_applies(request):
            key = idempotency.validate_key(raw_key)
            principal = principal_of(request)
            ctx = tenant_context_of(request)
            body = await request.body()
            claim = await idempotency.claim(
                session,
                tenant_scope=str(ctx.tenant_id) if ctx and ctx.tenant_id else "",
                principal=principal.key if principal else "anonymous",
                key=key,
                print_=idempotency.fingerprint(
                    request.method, request.url.path, request.url.query or "", body
                ),
                cipher=idempotency.cipher_for(services.settings.secret_keys()),
            )
            request.state[STATE_CAPTURE] = True
            request.state[STATE_ENCODER] = get_serializer(request.route_handler.resolve_type_encoders())
    except BaseException:
        await session.rollback()
        await session.close()
        raise

    try:
        yield session
    except BaseException:
        await session.rollback()
        await session.close()
        raise

    try:
        captured: idempotency.StoredResponse | None = request.state.get(STATE_CAPTURED)
        if request.state.get(STATE_ROLLBACK) or (captured is not None and captured.status >= 400):
            await session.rollback()
            return
        if claim is not None and captured is not None:
            await claim.complete(captured)
        pending = list(session.info.pop(PENDING_KEY, []))
        try:
            await session.commit()
        except IntegrityError as exc:
            await session.rollback()
            log.info("commit refused by a constraint", error=str(exc.orig)[:300])
            raise Conflict(
                "The change conflicts with stored data (a value that must be unique is taken, or a record it "
                "refers to changed meanwhile). Nothing was saved."
            ) from exc
        except (OperationalError, DBAPIError, OSError) as exc:
            await session.rollback()
            log.error("commit failed", error=str(exc)[:300])
            raise ServiceUnavailable(
                "The database did not accept the change; nothing was saved. Retry."
            ) from exc
        except PlatformError:
            # A rule enforced while flushing (the audit chain's integrity, say) already says what went wrong.
            await session.rollback()
            raise
        except Exception as exc:
            await session.rollback()
            log.error("commit failed", exc_info=exc)
            raise PlatformError("The change could not be saved.") from exc
        await send_after_commit(services.broker, services.db.sessionmaker, pending)
    finally:
        await session.close()


async def capture_idempotent_response(response: Response[Any]) -> Response[Any]:
    """after_request hook: for an idempotent POST, render the body once and keep it, so the unit of work
    can store it with the request's effects before committing."""
    state = request_state_var.get()
    if state is None or not state.get(STATE_CAPTURE):
        return response
    # A handler returning Response(...) without a media type means JSON, as Litestar renders it.
    # MediaType is a str enum whose str() in Python 3.11 is "MediaType.JSON": take its value.
    raw_media_type = response.media_type or "application/json"
    media_type = raw_media_type.value if isinstance(raw_media_type, Enum) else str(raw_media_type)
    if isinstance(response.content, bytes):
        body = response.content
    else:
        body = response.render(response.content, media_type, state[STATE_ENCODER])
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in idempotency.REPLAYED_HEADERS}
    headers.setdefault("content-type", media_type)
    state[STATE_CAPTURED] = idempotency.StoredResponse(
        status=response.status_code or 200, headers=headers, body=body
    )
    response.content = body
    return response


def replay_response(stored: idempotency.StoredResponse) -> Response[bytes]:
    headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
    headers["Idempotent-Replayed"] = "true"
    return Response(
        content=stored.body,
        status_code=stored.status,
        media_type=stored.headers.get("content-type", "application/json"),
        headers=headers,
    )


__all__ = ["PlatformError", "capture_idempotent_response", "provide_db_session", "replay_response"]
