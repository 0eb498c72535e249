"""Rendering every exception as RFC 9457 problem+json (the one exception handler of the app)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from msp_platform.authz.types import TenantScopeError
from msp_platform.kit.errors import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPES,
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PlatformError,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    problem_type,
)
from msp_platform.kit.logging import get_logger, request_id_var
from msp_platform.kit.middleware import request_id_for

log = get_logger(__name__)

GENERIC = problem_type("http-error", 400, "HTTP error", "The request failed; see `detail`.")


def problem_body(
    *,
    type_uri: str,
    title: str,
    status: int,
    detail: str,
    instance: str | None = None,
    errors: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_uri, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    request_id = request_id or request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    if extra:
        for key, value in extra.items():
            body.setdefault(key, value)
    return body


def problem_response(
    request: Request[Any, Any, Any] | None, error: PlatformError, *, status: int | None = None
) -> Response[bytes]:
    code = status or error.status_code
    body = problem_body(
        type_uri=error.problem.uri,
        title=error.problem.title,
        status=code,
        detail=error.detail,
        instance=request.url.path if request is not None else None,
        errors=[e.as_dict() for e in error.errors],
        extra=error.extra,
        request_id=request_id_for(request.scope) if request is not None else None,
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=code,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers,
    )


def _validation_errors(exc: ValidationException) -> list[FieldError]:
    errors: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or item.get("source") or "body")
        message = str(item.get("message") or "invalid")
        errors.append(FieldError(key, message))
    return errors


# SQLSTATEs a concurrent request causes: the caller may simply retry.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def translate_database_error(exc: DBAPIError) -> PlatformError | None:
    """Database errors a request can cause: a conflict, a value the column cannot hold, a busy database.

    Whatever raised them, the unit of work rolls the transaction back, so nothing is half-written."""
    state = _sqlstate(exc)
    if isinstance(exc, IntegrityError):
        return Conflict(
            "The change conflicts with stored data (a value that must be unique is taken, or a record it "
            "refers to is missing or still in use). Nothing was saved."
        )
    if state in _RETRYABLE_SQLSTATES:
        return Conflict(
            "A concurrent request changed the same records; nothing was saved. Retry the request."
        )
    if isinstance(exc, DataError) or state.startswith("22"):
        return ValidationFailed(
            "A value cannot be stored: a number or date out of range, or text with a NUL character. "
            "Nothing was saved."
        )
    if isinstance(exc, OperationalError):
        return ServiceUnavailable("The database is not reachable right now; nothing was saved. Retry.")
    return None


def translate(exc: Exception) -> PlatformError:
    """Map framework and library exceptions onto the platform's problem types."""
    if isinstance(exc, PlatformError):
        return exc
    if isinstance(exc, DBAPIError):
        return translate_database_error(exc) or PlatformError("Internal server error.")
    if isinstance(exc, OverflowError):
        # Date arithmetic on a caller's bound near year 1 or 9999: the input, not the server, is at fault.
        return ValidationFailed("A date or number in the request is outside the supported range.")
    if isinstance(exc, TenantScopeError):
        # A programming error, never the caller's: log it loudly and answer like any other 500.
        return PlatformError("Internal server error.")
    if isinstance(exc, NotFoundException):
        return NotFound(
            "No resource at this path." if not exc.detail or exc.detail == "Not Found" else exc.detail
        )
    if isinstance(exc, MethodNotAllowedException):
        allowed = (exc.headers or {}).get("allow", "")
        return MethodNotAllowed(
            f"This resource does not support this method; allowed: {allowed}.", headers=exc.headers
        )
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc)
        detail = exc.detail if exc.detail and exc.detail != "Validation failed" else "The request is invalid."
        if errors and all(e.field in {"body", "data"} and "decode" in e.message.lower() for e in errors):
            return BadRequest(f"The request body is not valid JSON: {errors[0].message}")
        return ValidationFailed(detail, errors=errors)
    if isinstance(exc, NotAuthorizedException):
        return Unauthorized(exc.detail or "Authentication required.")
    if isinstance(exc, PermissionDeniedException):
        return Forbidden(exc.detail or "Forbidden.")
    if isinstance(exc, TooManyRequestsException):
        retry = int((exc.headers or {}).get("Retry-After", "1"))
        return RateLimited(exc.detail or "Too many requests.", retry_after=retry)
    if isinstance(exc, HTTPException):
        if exc.status_code == 413:
            return PayloadTooLarge(exc.detail or "The request body is too large.")
        if exc.status_code == 415:
            return UnsupportedMediaType(exc.detail)
        if exc.status_code == 400:
            return BadRequest(exc.detail or "Bad request.", headers=exc.headers)
        if 400 <= exc.status_code < 500:
            error = _GenericHTTPError(exc.detail or "Bad request.", headers=exc.headers)
            error.status_override = exc.status_code
            return error
    return PlatformError("Internal server error.")


class _GenericHTTPError(PlatformError):
    problem = GENERIC
    status_override = 400

    @property
    def status_code(self) -> int:
        return self.status_override


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    error = translate(exc)
    status = error.status_code
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        log.error("unhandled error", exc_info=exc, path=request.url.path, method=request.method)
    elif logging.getLogger().isEnabledFor(logging.DEBUG):
        log.debug("request refused", status=status, detail=error.detail)
    return problem_response(request, error, status=status)


def problem_catalog() -> list[dict[str, Any]]:
    return [
        {"type": p.uri, "status": p.status, "title": p.title, "description": p.description}
        for p in sorted(PROBLEM_TYPES.values(), key=lambda p: p.slug)
    ]


__all__ = [
    "MediaType",
    "exception_handler",
    "problem_body",
    "problem_catalog",
    "problem_response",
    "translate",
]
