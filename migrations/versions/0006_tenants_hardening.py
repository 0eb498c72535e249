"""Tenants, users, devices, audit hardening.

- ``audit_events.internal`` / ``platform_audit_events.internal``: staff-only events (tenant-level readers never
  see them; the chain covers them).
- The audit chain becomes keyed: every event's hash is an HMAC-SHA256 under a key derived from MSP_SECRET_KEY
  (plain SHA-256 before), and ``audit_chains.mac`` authenticates each chain head. Stored chains are
  re-hashed here: each chain is verified with the old (unkeyed) rule first, and only its intact prefix is
  re-hashed, so an event tampered with before this migration still fails verification afterwards.
  Run the migration with the MSP_SECRET_KEY the application uses (the chain is verified with it).
  The downgrade re-hashes the intact (keyed) prefix back to plain SHA-256.

Revision ID: 0006_tenants_hardening
Revises: 0005_foundation_hardening
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op

import msp_platform.db.base
from msp_platform.db.types import JSONType

revision = "0006_tenants_hardening"
down_revision = "0005_foundation_hardening"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
PLATFORM = "platform"
# Frozen copies of the application's rules (audit.service) as of this revision.
KEY_PURPOSE = "msp-platform audit chain v1"
BATCH = 1000

Hasher = Callable[[str, int, str, dict[str, Any]], str]


def _columns() -> list[sa.ColumnClause[Any]]:
    return [
        sa.column("id", sa.Uuid()),
        sa.column("seq", sa.BigInteger()),
        sa.column("occurred_at", msp_platform.db.base.UTCDateTime(timezone=True)),
        sa.column("actor", sa.String(160)),
        sa.column("action", sa.String(80)),
        sa.column("object_type", sa.String(60)),
        sa.column("object_id", sa.String(80)),
        sa.column("changes", JSONType),
        sa.column("request_id", sa.String(128)),
        sa.column("prev_hash", sa.String(64)),
        sa.column("hash", sa.String(64)),
    ]


def _events(internal: bool) -> tuple[sa.TableClause, sa.TableClause]:
    def extra() -> list[sa.ColumnClause[Any]]:
        return [sa.column("internal", sa.Boolean())] if internal else []

    tenant = sa.table("audit_events", sa.column("tenant_id", sa.Uuid()), *_columns(), *extra())
    platform = sa.table("platform_audit_events", *_columns(), *extra())
    return tenant, platform


CHAINS = sa.table(
    "audit_chains",
    sa.column("chain", sa.String(40)),
    sa.column("seq", sa.BigInteger()),
    sa.column("head_hash", sa.String(64)),
)


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _payload(chain: str, seq: int, prev: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
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


def _sha256(chain: str, seq: int, prev: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(_payload(chain, seq, prev, row))).hexdigest()


def _hmac(key: bytes) -> Hasher:
    def digest(chain: str, seq: int, prev: str, row: dict[str, Any]) -> str:
        payload = {**_payload(chain, seq, prev, row), "internal": bool(row.get("internal"))}
        return hmac.new(key, _canonical(payload), hashlib.sha256).hexdigest()

    return digest


def _head_mac(key: bytes, chain: str, seq: int, head_hash: str) -> str:
    return hmac.new(
        key, _canonical({"chain": chain, "seq": seq, "head": head_hash}), hashlib.sha256
    ).hexdigest()


def _key() -> bytes:
    from msp_platform.config import Settings
    from msp_platform.kit.crypto import derive_key

    given = context.config.attributes.get("settings")
    settings = given if isinstance(given, Settings) else Settings()
    return derive_key(settings.resolved_secret_key(), KEY_PURPOSE)


def _rehash(*, old: Hasher, new: Hasher, key: bytes | None, internal: bool) -> None:
    """Re-hash every chain's intact prefix from ``old`` to ``new``; the rest stays as it is (and keeps failing
    verification). Heads are moved along when their whole chain was intact."""
    bind = op.get_bind()
    tenant_events, platform_events = _events(internal)
    chains = [r[0] for r in bind.execute(sa.select(CHAINS.c.chain))]
    tenants_table = sa.table("tenants", sa.column("id", sa.Uuid()))
    tenants = [str(r[0]) for r in bind.execute(sa.select(tenants_table.c.id))]
    for chain in sorted(set(chains) | set(tenants) | {PLATFORM}):
        table = platform_events if chain == PLATFORM else tenant_events
        stmt = sa.select(table).order_by(table.c.seq)
        if chain != PLATFORM:
            if bind.dialect.name == "postgresql":
                # audit_events has FORCE ROW LEVEL SECURITY: name the chain's tenant (transaction-local).
                bind.execute(
                    sa.text(
                        "SELECT set_config('app.tenant_id', :t, true), set_config('app.tenant_ids', :t, true)"
                    ),
                    {"t": chain},
                )
            try:
                tenant_id = uuid.UUID(chain)
            except ValueError:
                continue  # not a tenant's chain: nothing to re-hash (verify reports it)
            stmt = stmt.where(table.c.tenant_id == tenant_id)
        rows = [dict(r._mapping) for r in bind.execute(stmt)]
        prev_old, prev_new, expected, intact = GENESIS, GENESIS, 1, True
        updates: list[dict[str, Any]] = []
        for row in rows:
            if row["seq"] != expected or row["prev_hash"] != prev_old:
                intact = False
                break
            if not hmac.compare_digest(old(chain, row["seq"], prev_old, row), row["hash"]):
                intact = False
                break
            digest = new(chain, row["seq"], prev_new, row)
            updates.append(
                {
                    "row_id": row["id"],
                    "row_tenant": row.get("tenant_id"),
                    "new_prev": prev_new,
                    "new_hash": digest,
                }
            )
            prev_old, prev_new, expected = row["hash"], digest, expected + 1
        update = (
            sa.update(table)
            .where(table.c.id == sa.bindparam("row_id"))
            .values(prev_hash=sa.bindparam("new_prev"), hash=sa.bindparam("new_hash"))
        )
        if chain != PLATFORM:
            update = update.where(table.c.tenant_id == sa.bindparam("row_tenant"))
        for start in range(0, len(updates), BATCH):
            bind.execute(update, updates[start : start + BATCH])
        head = bind.execute(
            sa.select(CHAINS.c.seq, CHAINS.c.head_hash).where(CHAINS.c.chain == chain)
        ).first()
        if head is None:
            if key is not None and chain != PLATFORM and not rows:
                # A tenant with no log at all (created before the log existed): adopt it with an empty,
                # sealed chain, so that from now on a tenant without a log reads as tampering.
                sealed = sa.table(
                    "audit_chains",
                    *(sa.column(n, sa.String(64)) for n in ("chain", "head_hash", "mac")),
                    sa.column("seq", sa.BigInteger()),
                    sa.column("events", sa.Integer()),
                )
                bind.execute(
                    sa.insert(sealed).values(
                        chain=chain, seq=0, events=0, head_hash=GENESIS, mac=_head_mac(key, chain, 0, GENESIS)
                    )
                )
            continue
        values: dict[str, Any] = {}
        if intact and head[0] == expected - 1 and head[1] == prev_old:
            values["head_hash"] = prev_new
        if key is not None:
            head_hash = values.get("head_hash", head[1])
            values["mac"] = _head_mac(key, chain, int(head[0]), head_hash)
        if values:
            chains_table = sa.table(
                "audit_chains",
                sa.column("chain", sa.String(40)),
                sa.column("head_hash", sa.String(64)),
                sa.column("mac", sa.String(64)),
            )
            bind.execute(sa.update(chains_table).where(chains_table.c.chain == chain).values(**values))


def upgrade() -> None:
    for table in ("audit_events", "platform_audit_events"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("internal", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("audit_chains") as batch:
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))
    key = _key()
    _rehash(old=_sha256, new=_hmac(key), key=key, internal=True)


def downgrade() -> None:
    key = _key()
    _rehash(old=_hmac(key), new=_sha256, key=None, internal=True)
    with op.batch_alter_table("audit_chains") as batch:
        batch.drop_column("mac")
    for table in ("platform_audit_events", "audit_events"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("internal")
