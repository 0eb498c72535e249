"""One error hierarchy, rendered as RFC 9457 problem details.

Every error the API can answer has a stable ``type`` (``/problems/<slug>``, documented at that URL), a
``title`` that never changes for the type, and a ``detail`` that explains this occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class ProblemType:
    slug: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


PROBLEM_TYPES: dict[str, ProblemType] = {}


def problem_type(slug: str, status: int, title: str, description: str) -> ProblemType:
    found = PROBLEM_TYPES.get(slug)
    if found is not None:
        return found
    created = ProblemType(slug, status, title, description)
    PROBLEM_TYPES[slug] = created
    return created


class PlatformError(Exception):
    """Base of every error the API answers on purpose. Subclasses set ``problem``."""

    problem: ClassVar[ProblemType] = problem_type(
        "internal-error", 500, "Internal server error", "Something failed on our side. Quote the request id."
    )

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @property
    def status_code(self) -> int:
        return self.problem.status


class BadRequest(PlatformError):
    problem = problem_type(
        "bad-request",
        400,
        "Bad request",
        "The request could not be read (malformed syntax, encoding or framing).",
    )


class Unauthorized(PlatformError):
    problem = problem_type(
        "unauthorized",
        401,
        "Authentication required",
        "The request has no valid access token: it is missing, malformed, expired, revoked, signed by an "
        "unknown key or meant for another audience. Obtain a new token from /oauth/token.",
    )

    def __init__(self, detail: str, *, error: str = "invalid_token", realm: str = "msp-platform") -> None:
        challenge = f'Bearer realm="{realm}"'
        if error:
            challenge += f', error="{error}", error_description="{_quote(detail)}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(PlatformError):
    problem = problem_type(
        "forbidden", 403, "Forbidden", "The caller is authenticated but its role does not allow this action."
    )


class InsufficientScope(PlatformError):
    problem = problem_type(
        "insufficient-scope",
        403,
        "Insufficient scope",
        "The access token lacks a scope this endpoint requires. Request a token with that scope.",
    )

    def __init__(self, required: Sequence[str]) -> None:
        needed = " ".join(required)
        super().__init__(
            f"This endpoint requires the scope(s): {needed}",
            headers={
                "WWW-Authenticate": f'Bearer realm="msp-platform", error="insufficient_scope", scope="{needed}"'
            },
            extra={"required_scopes": list(required)},
        )


class NotFound(PlatformError):
    problem = problem_type(
        "not-found", 404, "Not found", "No such resource exists, or it is not visible to the caller."
    )


class MethodNotAllowed(PlatformError):
    problem = problem_type(
        "method-not-allowed",
        405,
        "Method not allowed",
        "The resource exists but does not support this method.",
    )


class Conflict(PlatformError):
    problem = problem_type(
        "conflict", 409, "Conflict", "The request conflicts with the current state of the resource."
    )


class PayloadTooLarge(PlatformError):
    problem = problem_type(
        "payload-too-large",
        413,
        "Payload too large",
        "The request body is larger than this endpoint accepts.",
    )


class UnsupportedMediaType(PlatformError):
    problem = problem_type(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        "The request body's Content-Type is not one this endpoint accepts.",
    )


class ValidationFailed(PlatformError):
    problem = problem_type(
        "validation-error",
        422,
        "Validation failed",
        "The request body or parameters are well-formed but invalid; see `errors` for each field.",
    )


class IdempotencyKeyReused(PlatformError):
    problem = problem_type(
        "idempotency-key-reused",
        422,
        "Idempotency key reused",
        "This Idempotency-Key was already used with a different request (method, path or body). Use a new key.",
    )


class IdempotencyKeyInFlight(PlatformError):
    problem = problem_type(
        "idempotency-key-in-flight",
        409,
        "Request with this Idempotency-Key in progress",
        "Another request with the same Idempotency-Key is being processed. Retry after it completes.",
    )


class RateLimited(PlatformError):
    problem = problem_type(
        "rate-limited",
        429,
        "Too many requests",
        "The caller exceeded its rate limit. Retry after `Retry-After`.",
    )

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(
            detail, headers={"Retry-After": str(max(1, retry_after))}, extra={"retry_after": retry_after}
        )


class ServiceUnavailable(PlatformError):
    problem = problem_type(
        "service-unavailable",
        503,
        "Service unavailable",
        "A dependency (database, broker) is not reachable right now. Retry later.",
    )


INTERNAL_ERROR = PlatformError.problem


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")
