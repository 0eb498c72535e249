"""The baseline for bench_incidents_http.py: the same incident queries behind a bare Litestar handler on
asyncpg (no auth, no ORM, no audit, no event log, no outbox) — what the database and the HTTP server alone
cost. Connects as the RLS-bound app role and sets the tenant for each transaction, like the platform.

- ``POST /incidents``: takes the tenant's next number and inserts the incident and its ``created`` event.
- ``GET /incidents/{id}``: one incident, 404 when there is none (so the load generator counts failures).
- ``GET /incidents?limit=50``: the queue's first page in the platform's default order (priority, then
  oldest first), fetching one row more to know whether there is a next page, like the platform's keyset
  pagination.

    MSP_BENCH_DSN=postgresql://msp_app@127.0.0.1/db MSP_BENCH_TENANT=<uuid> granian --interface asgi bench.bare_litestar:app
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from litestar import Litestar, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody

DSN = os.environ["MSP_BENCH_DSN"]
TENANT = uuid.UUID(os.environ["MSP_BENCH_TENANT"])
PREFIX = os.environ.get("MSP_BENCH_PREFIX", "BARE")
POOL: dict[str, asyncpg.Pool] = {}


async def start() -> None:
    POOL["p"] = await asyncpg.create_pool(DSN, min_size=5, max_size=20)


async def stop() -> None:
    await POOL["p"].close()


async def _scoped(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "SELECT set_config('app.tenant_id', $1, true), set_config('app.tenant_ids', $1, true)", str(TENANT)
    )


@post("/incidents")
async def create(data: JSONBody[dict[str, Any]]) -> Response[dict[str, Any]]:
    now = datetime.now(UTC)
    incident_id = uuid.uuid4()
    async with POOL["p"].acquire() as conn, conn.transaction():
        await _scoped(conn)
        number = await conn.fetchval(
            "INSERT INTO incident_counters (tenant_id, last_number) VALUES ($1, 1) "
            "ON CONFLICT (tenant_id) DO UPDATE SET last_number = incident_counters.last_number + 1 "
            "RETURNING last_number",
            TENANT,
        )
        key = f"{PREFIX}-{number:06d}"
        await conn.execute(
            "INSERT INTO incidents (tenant_id, id, number, key, title, description, reported_by, channel, impact, "
            "urgency, patient_care_impact, priority, priority_matrix_version, tier, state, opened_at, reopen_count, "
            "first_contact_resolution, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, '', 'bench', "
            "'api', 3, 3, false, 5, 0, 1, 'new', $6, 0, false, 1, $6, $6)",
            TENANT,
            incident_id,
            number,
            key,
            str(data.get("title", "x")),
            now,
        )
        await conn.execute(
            "INSERT INTO incident_events (tenant_id, id, incident_id, seq, type, occurred_at, actor, visibility, "
            "data, imported, created_at, updated_at) VALUES ($1, $2, $3, 1, 'created', $4, 'bench', 'public', "
            "'{}', false, $4, $4)",
            TENANT,
            uuid.uuid4(),
            incident_id,
            now,
        )
    return Response({"id": str(incident_id), "key": key, "number": number}, status_code=201)


def _row(row: asyncpg.Record) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, uuid.UUID | datetime) else v) for k, v in dict(row).items()}


@get("/incidents/{incident_id:uuid}")
async def read(incident_id: FromPath[uuid.UUID]) -> Response[dict[str, Any]]:
    async with POOL["p"].acquire() as conn, conn.transaction():
        await _scoped(conn)
        row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
    if row is None:
        return Response({"error": "not found"}, status_code=404)
    return Response(_row(row))


@get("/incidents")
async def queue(limit: FromQuery[int] = 50) -> dict[str, Any]:
    size = max(1, min(limit, 200))
    async with POOL["p"].acquire() as conn, conn.transaction():
        await _scoped(conn)
        rows = await conn.fetch(
            "SELECT * FROM incidents WHERE tenant_id = ANY($1::uuid[]) "
            "ORDER BY priority, opened_at, tenant_id, id LIMIT $2",
            [TENANT],
            size + 1,
        )
    items = [_row(r) for r in rows[:size]]
    return {"items": items, "next_cursor": items[-1]["id"] if len(rows) > size else None}


app = Litestar([create, read, queue], on_startup=[start], on_shutdown=[stop])
