"""``Idempotency-Key`` on POST, with Stripe's semantics.

The key is scoped to (tenant, caller). The first request with a key runs and its 2xx response is stored in
the *same transaction* as its effects, so the record exists exactly when the effects do. A retry with the
same key and body replays the stored response (``Idempotent-Replayed: true``); the same key with a different
request is a 422. Concurrent requests with one key queue behind the first one (PostgreSQL waits on the
unique index, SQLite on the write lock) and then replay its response. A request that fails stores nothing,
so it can be retried with the same key. Records expire after 24 hours.

Stored bodies are encrypted at rest (Fernet, with a key derived from ``MSP_SECRET_KEY`` for this purpose
only): a response may carry a secret shown once (a client secret, an invitation token, a webhook signing
secret), and the record keeps it for a day.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.crypto import InvalidToken, MultiFernet, purpose_fernet_ring
from msp_platform.kit.errors import BadRequest, Conflict, IdempotencyKeyReused
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.idempotency import IdempotencyRecord

HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
REPLAYED_HEADERS = ("content-type", "location", "etag")
# Marks an encrypted stored body (records written before encryption hold the plain body).
_SEALED = b"fernet1:"


@lru_cache(maxsize=8)
def cipher_for(secrets: tuple[bytes, ...]) -> MultiFernet:
    """The cipher for stored response bodies, from the application's secret keys (current first)."""
    return purpose_fernet_ring(secrets, "msp-platform idempotency response bodies")


def seal(cipher: MultiFernet, body: bytes) -> bytes:
    return _SEALED + cipher.encrypt(body)


def unseal(cipher: MultiFernet, stored: bytes) -> bytes:
    if not stored.startswith(_SEALED):
        return stored
    try:
        return cipher.decrypt(stored[len(_SEALED) :])
    except InvalidToken as exc:
        raise Conflict(
            "The response stored for this Idempotency-Key can no longer be read (the server's secret key "
            "changed and the old one is not in MSP_SECRET_KEY_PREVIOUS); nothing was done. Send the request "
            "with a new key."
        ) from exc


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class IdempotentReplay(Exception):
    """Raised before the handler runs when a stored response answers the request."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def validate_key(raw: str) -> str:
    if not _KEY_RE.match(raw):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.")
    return raw


class IdempotencyClaim:
    def __init__(self, session: AsyncSession, record_id: Any, cipher: MultiFernet) -> None:
        self.session = session
        self.record_id = record_id
        self.cipher = cipher

    async def complete(self, stored: StoredResponse) -> None:
        await self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == self.record_id)
            .values(
                status_code=stored.status,
                response_headers=stored.headers,
                response_body=seal(self.cipher, stored.body),
            )
        )


def _stored(record: IdempotencyRecord, print_: str, cipher: MultiFernet) -> StoredResponse:
    if record.fingerprint != print_:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for a different request in the last 24 hours; use a new key."
        )
    return StoredResponse(
        record.status_code or 200,
        dict(record.response_headers or {}),
        unseal(cipher, record.response_body or b""),
    )


async def claim(
    session: AsyncSession, *, tenant_scope: str, principal: str, key: str, print_: str, cipher: MultiFernet
) -> IdempotencyClaim:
    """Find a stored response (raises IdempotentReplay) or claim the key for this request."""
    where = (
        IdempotencyRecord.tenant_scope == tenant_scope,
        IdempotencyRecord.principal == principal,
        IdempotencyRecord.key == key,
    )
    now = utcnow()
    existing = await session.scalar(select(IdempotencyRecord).where(*where))
    if existing is not None and existing.created_at > now - TTL:
        raise IdempotentReplay(_stored(existing, print_, cipher))
    if existing is not None:
        await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == existing.id))
    record_id = new_id()
    values = {
        "id": record_id,
        "tenant_scope": tenant_scope,
        "principal": principal,
        "key": key,
        "fingerprint": print_,
        "created_at": now,
    }
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(IdempotencyRecord).values(values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(IdempotencyRecord).values(values).on_conflict_do_nothing()
    inserted = await session.execute(stmt.returning(IdempotencyRecord.id))
    if inserted.scalar() is None:
        # Another request with this key committed while we waited on the index: answer with its response.
        winner = await session.scalar(
            select(IdempotencyRecord).where(*where).execution_options(populate_existing=True)
        )
        if winner is None:  # pragma: no cover - the winner was purged between two statements
            raise BadRequest("Idempotency-Key conflict; retry the request.")
        raise IdempotentReplay(_stored(winner, print_, cipher))
    return IdempotencyClaim(session, record_id, cipher)
