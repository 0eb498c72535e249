"""Migration 0006 turns stored (unkeyed SHA-256) audit chains into keyed ones: an intact chain verifies after
the upgrade, a chain tampered with before it still fails, and the downgrade restores the unkeyed hashes."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from msp_platform.audit.service import GENESIS, verify_chain
from msp_platform.authz.service import system_tenant_context
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.base import UTCDateTime
from msp_platform.db.engine import Database, build_engine
from msp_platform.db.session import set_tenant_context
from msp_platform.db.types import JSONType

BEFORE = "0005_foundation_hardening"
AFTER = "0006_tenants_hardening"

TENANTS = sa.table(
    "tenants",
    *(sa.column(n, sa.String()) for n in ("slug", "name", "status", "ticket_prefix", "timezone")),
    sa.column("id", sa.Uuid()),
    sa.column("business_calendar", JSONType),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
EVENT_COLUMNS = (
    sa.column("tenant_id", sa.Uuid()),
    sa.column("id", sa.Uuid()),
    sa.column("seq", sa.BigInteger()),
    sa.column("occurred_at", UTCDateTime()),
    *(sa.column(n, sa.String()) for n in ("actor", "action", "object_type", "object_id", "request_id")),
    sa.column("changes", JSONType),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
EVENTS = sa.table("audit_events", *EVENT_COLUMNS)
CHAINS = sa.table(
    "audit_chains",
    sa.column("chain", sa.String()),
    sa.column("seq", sa.BigInteger()),
    sa.column("head_hash", sa.String()),
    sa.column("events", sa.Integer()),
)


def _legacy_hash(chain: str, seq: int, prev: str, row: dict[str, Any]) -> str:
    """The pre-0006 rule: plain SHA-256 over the event and the previous hash."""
    payload = {
        "chain": chain,
        "seq": seq,
        "prev_hash": prev,
        "occurred_at": row["occurred_at"].isoformat(),
        "actor": row["actor"],
        "action": row["action"],
        "object_type": row["object_type"],
        "object_id": row["object_id"],
        "changes": row["changes"],
        "request_id": row["request_id"],
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _legacy_tenant(conn: sa.Connection, slug: str, *, tamper: bool) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    now = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
    await conn.execute(
        sa.insert(TENANTS).values(
            id=tenant_id,
            slug=slug,
            name=slug,
            status="active",
            ticket_prefix="L" + tenant_id.hex[:6].upper(),
            timezone="UTC",
            business_calendar={},
            created_at=now,
            updated_at=now,
        )
    )
    chain, prev = str(tenant_id), GENESIS
    for seq in range(1, 5):
        row: dict[str, Any] = {
            "tenant_id": tenant_id,
            "id": uuid.uuid4(),
            "seq": seq,
            "occurred_at": now + timedelta(minutes=seq, microseconds=seq),
            "actor": "user:legacy",
            "action": "site.created",
            "object_type": "site",
            "object_id": str(uuid.uuid4()),
            "changes": {"name": [None, f"Clinic {seq}"], "é": ["ü", seq]},
            "request_id": None if seq % 2 else f"req-{seq}",
            "created_at": now,
            "updated_at": now,
        }
        row["prev_hash"] = prev
        row["hash"] = prev = _legacy_hash(chain, seq, prev, row)
        if tamper and seq == 2:
            row["actor"] = "user:forged"  # changed after hashing, as an attacker would
        await conn.execute(sa.insert(EVENTS).values(**row))
    await conn.execute(sa.insert(CHAINS).values(chain=chain, seq=4, head_hash=prev, events=4))
    return tenant_id


async def _verify(settings: Settings, tenant_id: uuid.UUID) -> tuple[bool, int | None, str | None]:
    db = Database.create(settings)
    try:
        async with db.dangerously_unscoped_session() as session:
            await set_tenant_context(session, system_tenant_context(tenant_id))
            report = await session.run_sync(verify_chain, str(tenant_id))
            return report.valid, report.first_bad_seq, report.problem
    finally:
        await db.dispose()


async def _legacy_valid(settings: Settings, tenant_id: uuid.UUID) -> bool:
    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(EVENTS).where(EVENTS.c.tenant_id == tenant_id).order_by(EVENTS.c.seq)
                )
            ).mappings()
            prev = GENESIS
            for row in rows:
                if (
                    row["prev_hash"] != prev
                    or _legacy_hash(str(tenant_id), row["seq"], prev, dict(row)) != row["hash"]
                ):
                    return False
                prev = row["hash"]
            head = (
                await conn.execute(sa.select(CHAINS.c.head_hash).where(CHAINS.c.chain == str(tenant_id)))
            ).scalar()
            return bool(head == prev)
    finally:
        await engine.dispose()


async def test_stored_chains_are_rehashed_with_the_key(fresh: Settings) -> None:
    await migrate.upgrade(fresh, BEFORE)
    engine = build_engine(fresh.effective_owner_url, fresh, pool_size=1)
    try:
        async with engine.begin() as conn:
            intact = await _legacy_tenant(conn, "legacy-intact", tamper=False)
            tampered = await _legacy_tenant(conn, "legacy-tampered", tamper=True)
            # A tenant from before the audit log existed: no events, no head.
            silent = uuid.uuid4()
            now = datetime(2024, 1, 1, tzinfo=UTC)
            await conn.execute(
                sa.insert(TENANTS).values(
                    id=silent,
                    slug="legacy-silent",
                    name="Silent",
                    status="active",
                    ticket_prefix="S" + silent.hex[:6].upper(),
                    timezone="UTC",
                    business_calendar={},
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await engine.dispose()
    assert await _legacy_valid(fresh, intact)

    await migrate.upgrade(fresh, AFTER)
    assert await _verify(fresh, intact) == (True, None, None)
    valid, bad_seq, _ = await _verify(fresh, tampered)
    assert (valid, bad_seq) == (False, 2), "tampering from before the migration stays visible"
    assert not await _legacy_valid(fresh, intact), "the hashes are keyed now"
    assert await _verify(fresh, silent) == (True, None, None), "adopted with an empty, sealed chain"
    # Keyed with *this* installation's MSP_SECRET_KEY: another key cannot verify (or forge) the chain.
    other = fresh.model_copy(update={"secret_key": SecretStr("another-secret")})
    assert (await _verify(other, intact))[0] is False

    await migrate.downgrade(fresh, BEFORE)
    assert await _legacy_valid(fresh, intact)
    assert not await _legacy_valid(fresh, tampered)
    await migrate.upgrade(fresh)
    assert (await _verify(fresh, intact))[0] is True
