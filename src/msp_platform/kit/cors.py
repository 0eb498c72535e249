"""Cross-origin access for browser consoles (a tenant portal, the MSP's own console on another origin).

Off unless ``MSP_CORS_ORIGINS`` names the origins. Access tokens travel in the ``Authorization`` header, never
in cookies, so credentials mode stays off; the request headers the API reads and the response headers it
sets are listed so that a browser may send and read them (problem+json errors included)."""

from __future__ import annotations

import re

from litestar.config.cors import CORSConfig

# scheme://host[:port], nothing after it: what a browser sends in Origin.
_ORIGIN = re.compile(
    r"https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?", re.IGNORECASE
)

REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "MSP-Tenant",
    "X-Request-ID",
]
RESPONSE_HEADERS = [
    "Content-Disposition",
    "ETag",
    "Idempotent-Replayed",
    "Location",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-ID",
]


def parse_origins(value: str) -> list[str]:
    """``MSP_CORS_ORIGINS``: comma-separated origins such as ``https://portal.example.org``, or ``*`` for any.
    Raises ``ValueError`` naming what is not an origin (a path, a trailing slash, a missing scheme)."""
    origins = [part.strip() for part in value.split(",") if part.strip()]
    if origins == ["*"]:
        return origins
    wrong = [o for o in origins if o == "*" or not _ORIGIN.fullmatch(o)]
    if wrong:
        raise ValueError(
            "each origin is scheme://host[:port] with no path or trailing slash (or a lone * for any origin); "
            f"not an origin: {', '.join(repr(o) for o in wrong)}"
        )
    return [o.lower() for o in origins]


def cors_config(origins: list[str]) -> CORSConfig | None:
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=REQUEST_HEADERS,
        expose_headers=RESPONSE_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
