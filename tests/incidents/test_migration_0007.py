"""Migration 0007 on a database with incidents: free-text group names become assignment groups, duplicate
legacy numbers are kept apart, and the downgrade gives the names back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.base import UTCDateTime
from msp_platform.db.engine import build_engine

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TENANTS = sa.table(
    "tenants",
    *(
        sa.column(c, t)
        for c, t in (("id", sa.Uuid()), ("created_at", UTCDateTime()), ("updated_at", UTCDateTime()))
    ),
    sa.column("slug"),
    sa.column("name"),
    sa.column("status"),
    sa.column("ticket_prefix"),
    sa.column("timezone"),
    sa.column("business_calendar", sa.JSON()),
)
INCIDENT_COLUMNS: dict[str, Any] = {
    "tenant_id": sa.Uuid(),
    "id": sa.Uuid(),
    "opened_at": UTCDateTime(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
}
INCIDENT_TEXT = [
    "number",
    "key",
    "title",
    "description",
    "reported_by",
    "channel",
    "impact",
    "urgency",
    "patient_care_impact",
    "priority",
    "priority_matrix_version",
    "tier",
    "state",
    "reopen_count",
    "first_contact_resolution",
    "version",
    "assignment_group",
    "external_source",
    "legacy_number",
    "assignment_group_id",
]


def incidents_table() -> sa.TableClause:
    return sa.table(
        "incidents",
        *(sa.column(c, t) for c, t in INCIDENT_COLUMNS.items()),
        *(sa.column(c) for c in INCIDENT_TEXT if c != "assignment_group_id"),
        sa.column("assignment_group_id", sa.Uuid()),
    )


async def run(settings: Settings, fn: Any) -> Any:
    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def test_group_names_and_legacy_numbers_are_migrated(fresh: Settings) -> None:
    await migrate.upgrade(fresh, "0006_tenants_hardening")
    tenant_id = uuid.uuid4()
    rows = [
        ("a", "L1 Desk", 2, "INC1", None),
        ("b", "l1 desk ", 1, "inc1", None),
        ("c", "Network", 3, "INC1", "servicenow"),
        ("d", None, 1, None, None),
    ]
    ids = {name: uuid.uuid4() for name, *_ in rows}
    incidents = sa.table(
        "incidents",
        *(sa.column(c, t) for c, t in INCIDENT_COLUMNS.items()),
        *(sa.column(c) for c in INCIDENT_TEXT if c != "assignment_group_id"),
    )

    def arrange(conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET LOCAL row_security = off"))
        conn.execute(
            TENANTS.insert().values(
                id=tenant_id,
                slug="mig",
                name="Mig",
                status="active",
                ticket_prefix="MIG",
                timezone="UTC",
                business_calendar={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        for number, (name, group, tier, legacy, source) in enumerate(rows, start=1):
            conn.execute(
                incidents.insert().values(
                    tenant_id=tenant_id,
                    id=ids[name],
                    number=number,
                    key=f"MIG-{number:06d}",
                    title=name,
                    description="",
                    reported_by="test",
                    channel="phone",
                    impact=3,
                    urgency=3,
                    patient_care_impact=False,
                    priority=5,
                    priority_matrix_version=0,
                    tier=tier,
                    state="new",
                    reopen_count=0,
                    first_contact_resolution=False,
                    version=1,
                    assignment_group=group,
                    external_source=source,
                    legacy_number=legacy,
                    opened_at=NOW,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )

        # A row referencing an incident: SQLite rebuilds the incidents table around it.
        conn.execute(
            sa.table(
                "incident_events",
                *(sa.column(c, sa.Uuid()) for c in ("tenant_id", "id", "incident_id")),
                *(sa.column(c, UTCDateTime()) for c in ("occurred_at", "created_at", "updated_at")),
                *(sa.column(c) for c in ("seq", "type", "actor", "visibility", "imported")),
                sa.column("data", sa.JSON()),
            )
            .insert()
            .values(
                tenant_id=tenant_id,
                id=uuid.uuid4(),
                incident_id=ids["a"],
                seq=1,
                type="created",
                actor="test",
                visibility="public",
                imported=False,
                data={},
                occurred_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )

    await run(fresh, arrange)
    await migrate.upgrade(fresh)
    table = incidents_table()
    groups = sa.table("assignment_groups", sa.column("id", sa.Uuid()), sa.column("name"), sa.column("tier"))

    def read(conn: sa.Connection) -> tuple[dict[str, Any], dict[Any, tuple[str, int]]]:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET LOCAL row_security = off"))
        found = {
            r.title: r
            for r in conn.execute(
                sa.select(table.c.title, table.c.assignment_group_id, table.c.legacy_number)
            )
        }
        made = {r.id: (r.name, r.tier) for r in conn.execute(sa.select(groups))}
        return found, made

    found, made = await run(fresh, read)
    assert sorted(made.values()) == [("L1 Desk", 1), ("Network", 3)]
    assert found["a"].assignment_group_id == found["b"].assignment_group_id
    assert made[found["a"].assignment_group_id] == ("L1 Desk", 1)
    assert made[found["c"].assignment_group_id] == ("Network", 3)
    assert found["d"].assignment_group_id is None
    # One legacy number per tenant and source, whatever its case: the later twin keeps its number with its key.
    assert (found["a"].legacy_number, found["b"].legacy_number, found["c"].legacy_number) == (
        "INC1",
        "inc1~MIG-000002",
        "INC1",
    )

    await migrate.downgrade(fresh, "0006_tenants_hardening")
    legacy_table = sa.table("incidents", sa.column("title"), sa.column("assignment_group"))

    def names(conn: sa.Connection) -> dict[str, Any]:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET LOCAL row_security = off"))
        return {r.title: r.assignment_group for r in conn.execute(sa.select(legacy_table))}

    assert await run(fresh, names) == {"a": "L1 Desk", "b": "L1 Desk", "c": "Network", "d": None}
