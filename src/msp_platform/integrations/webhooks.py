"""Standard Webhooks (https://www.standardwebhooks.com): secrets, signatures, retry schedule, one attempt.

A message is signed with HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{body}"``, keyed with the
base64-decoded part of the ``whsec_`` secret; ``webhook-signature`` is ``v1,<base64 signature>`` (several,
space-separated, while a rotated-out secret is still honoured). ``webhook-id`` stays the same for every
attempt and replay of one message, so receivers can deduplicate; ``webhook-timestamp`` is the attempt's.

Secrets are stored encrypted (Fernet under ``MSP_SECRET_KEY``) as a small JSON document holding the current
secret and, for a day after a rotation, the previous one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from msp_platform.config import Environment, Settings
from msp_platform.kit.crypto import fernet_ring
from msp_platform.kit.time import utcnow

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
# After a rotation the previous secret still signs (as a second signature) this long.
ROTATION_GRACE = timedelta(hours=24)
TIMEOUT_SECONDS = 10.0
# How much of a failed attempt's answer is kept (last_error).
ERROR_SNIPPET_BYTES = 300
USER_AGENT = "msp-platform-webhooks/1"
# Delays before the 2nd, 3rd, ... attempt (the first is immediate); after the last, the delivery is dead.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


# --- secrets ------------------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key_bytes(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


@dataclass(frozen=True)
class SigningSecrets:
    current: str
    previous: str | None = None
    previous_expires_at: datetime | None = None

    def active(self, now: datetime | None = None) -> list[str]:
        """The secrets that sign a message now: the current one first."""
        now = now or utcnow()
        keys = [self.current]
        if self.previous and self.previous_expires_at and self.previous_expires_at > now:
            keys.append(self.previous)
        return keys

    def rotated(self, new: str, now: datetime | None = None) -> SigningSecrets:
        return SigningSecrets(new, self.current, (now or utcnow()) + ROTATION_GRACE)


def seal(settings: Settings, value: SigningSecrets) -> str:
    doc: dict[str, Any] = {"current": value.current}
    if value.previous and value.previous_expires_at:
        doc["previous"] = value.previous
        doc["previous_expires_at"] = value.previous_expires_at.isoformat()
    return fernet_ring(settings.secret_keys()).encrypt(json.dumps(doc).encode()).decode()


def unseal(settings: Settings, token: str) -> SigningSecrets:
    raw = fernet_ring(settings.secret_keys()).decrypt(token.encode()).decode()
    if raw.startswith(SECRET_PREFIX):  # a bare secret
        return SigningSecrets(raw)
    doc = json.loads(raw)
    expires = doc.get("previous_expires_at")
    return SigningSecrets(
        current=doc["current"],
        previous=doc.get("previous"),
        previous_expires_at=datetime.fromisoformat(expires) if expires else None,
    )


# --- signatures ---------------------------------------------------------------------------------------


def new_message_id() -> str:
    return message_id_for(uuid.uuid4())


def message_id_for(source: uuid.UUID) -> str:
    """The webhook-id of the message caused by ``source`` (an event id, a page id): stable across retries."""
    return f"msg_{source.hex}"


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def encode_body(event_type: str, timestamp: str, data: dict[str, Any]) -> bytes:
    """The Standard Webhooks payload shape: ``{"type", "timestamp", "data"}``."""
    return json.dumps(
        {"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def signed_headers(keys: list[str], message_id: str, body: bytes, *, at: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, message_id, timestamp, body) for k in keys),
    }


# --- one attempt --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


async def post(url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
    """One POST, at most ``TIMEOUT_SECONDS`` in all. Redirects are not followed (a 3xx is a failed attempt),
    at most ``ERROR_SNIPPET_BYTES`` of the answer are read, nothing raises."""
    timeout = TIMEOUT_SECONDS
    try:
        with anyio.fail_after(timeout):
            async with (
                httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                client.stream("POST", url, content=body, headers=headers) as response,
            ):
                status = response.status_code
                if 200 <= status < 300:
                    return AttemptResult(status, None)
                snippet = b""
                async for chunk in response.aiter_bytes():
                    snippet += chunk
                    if len(snippet) >= ERROR_SNIPPET_BYTES:
                        break
    except (TimeoutError, httpx.TimeoutException):
        return AttemptResult(None, f"timed out after {timeout:g}s")
    except httpx.HTTPError as exc:
        return AttemptResult(None, f"{type(exc).__name__}: {exc}"[:500])
    text = snippet[:ERROR_SNIPPET_BYTES].decode("utf-8", "replace").strip()
    return AttemptResult(status, f"HTTP {status}" + (f": {text}" if text else ""))


def next_delay(attempts_made: int) -> timedelta | None:
    """How long to wait after the ``attempts_made``-th failed attempt; None: give up (dead)."""
    if attempts_made < 1 or attempts_made > len(RETRY_SCHEDULE):
        return None
    return RETRY_SCHEDULE[attempts_made - 1]


# --- validation ---------------------------------------------------------------------------------------


def url_problem(url: str, settings: Settings) -> str | None:
    """Why ``url`` cannot receive webhooks, or None. https only; http only to this machine outside
    production; no credentials in the URL; in production no loopback, private or link-local address."""
    if len(url) > 2000:
        return "must be at most 2000 characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    del port
    host = (parts.hostname or "").lower()
    if parts.scheme not in {"https", "http"} or not host:
        return "must be an absolute https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials"
    if parts.fragment:
        return "must not contain a fragment"
    production = settings.env is Environment.production
    local = host in LOCAL_HOSTS or host.endswith(".localhost")
    if parts.scheme == "http" and (production or not local):
        return "must use https (http is accepted only for localhost outside production)"
    if production:
        if local:
            return "must not point at this machine"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if not address.is_global:
            return "must not point at a private, loopback or reserved address"
    return None
