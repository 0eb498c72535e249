"""Migration 0008 on existing data: duplicate notices across policy versions are folded into one, the SLA rows
get their incident's opening time, the row-level security policies read their settings once per statement;
and it all goes back down."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.base import UTCDateTime
from msp_platform.db.engine import Database, build_engine
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Incident
from msp_platform.models.tenant import Tenant

NOTICES = sa.table(
    "sla_notices",
    sa.column("tenant_id", sa.Uuid()),
    sa.column("id", sa.Uuid()),
    sa.column("incident_id", sa.Uuid()),
    sa.column("target", sa.String()),
    sa.column("threshold", sa.Integer()),
    sa.column("policy_version", sa.Integer()),
    sa.column("due_at", UTCDateTime()),
    sa.column("emitted_at", UTCDateTime()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
SLAS = sa.table(
    "incident_slas",
    sa.column("tenant_id", sa.Uuid()),
    sa.column("id", sa.Uuid()),
    sa.column("incident_id", sa.Uuid()),
    sa.column("target", sa.String()),
    sa.column("policy_version", sa.Integer()),
    sa.column("priority", sa.Integer()),
    sa.column("duration_seconds", sa.Integer()),
    sa.column("status", sa.String()),
    sa.column("elapsed_seconds", sa.Integer()),
    sa.column("paused_seconds", sa.Integer()),
    sa.column("computed_at", UTCDateTime()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)


async def test_0008_up_and_down_with_data(fresh: Settings) -> None:
    await migrate.upgrade(fresh, "0007_incidents_hardening")
    db = Database.create(fresh)
    tenant_id, incident_id = new_id(), new_id()
    opened = utcnow() - timedelta(days=3)
    try:
        async with db.dangerously_unscoped_session() as session:
            session.add(Tenant(id=tenant_id, slug=f"m-{tenant_id.hex[:8]}", name="M", ticket_prefix="MIG"))
            await session.flush()
            session.add(
                Incident(
                    tenant_id=tenant_id,
                    id=incident_id,
                    number=1,
                    key="MIG-1",
                    title="Seeded",
                    reported_by="test",
                    channel="portal",
                    impact=3,
                    urgency=3,
                    priority=5,
                    priority_matrix_version=1,
                    opened_at=opened,
                )
            )
            await session.flush()
            now = utcnow()
            common = {
                "tenant_id": tenant_id,
                "incident_id": incident_id,
                "created_at": now,
                "updated_at": now,
            }
            for target in ("response", "resolution"):
                await session.execute(
                    sa.insert(SLAS).values(
                        id=new_id(),
                        target=target,
                        policy_version=1,
                        priority=5,
                        duration_seconds=60,
                        status="breached",
                        elapsed_seconds=120,
                        paused_seconds=0,
                        computed_at=now,
                        **common,
                    )
                )
            # The same breach announced under versions 1 and 2 (the old key allowed it), and a warning.
            for threshold, version, emitted in (
                (100, 1, now - timedelta(hours=2)),
                (100, 2, now),
                (50, 1, now),
            ):
                await session.execute(
                    sa.insert(NOTICES).values(
                        id=new_id(),
                        target="response",
                        threshold=threshold,
                        policy_version=version,
                        due_at=opened,
                        emitted_at=emitted,
                        **common,
                    )
                )
            await session.commit()
    finally:
        await db.dispose()

    await migrate.upgrade(fresh, "0008_sla_hardening")
    engine = build_engine(fresh.effective_owner_url, fresh, pool_size=1)
    try:
        async with engine.connect() as conn:
            notices = (
                await conn.execute(
                    sa.text(
                        "SELECT threshold, policy_version, cycle, outcome FROM sla_notices ORDER BY threshold"
                    )
                )
            ).all()
            assert [tuple(n) for n in notices] == [(50, 1, 0, "announced"), (100, 1, 0, "announced")]
            stamped = (
                await conn.execute(sa.select(sa.column("opened_at", UTCDateTime())).select_from(SLAS))
            ).all()
            assert [r[0] for r in stamped] == [opened, opened]
            if conn.dialect.name == "postgresql":
                qual = (
                    await conn.execute(
                        sa.text(
                            "SELECT qual FROM pg_policies WHERE tablename = 'incidents' AND policyname = 'tenant_read'"
                        )
                    )
                ).scalar_one()
                assert "SELECT" in qual.upper()  # an InitPlan: read once per statement
    finally:
        await engine.dispose()

    await migrate.downgrade(fresh, "0007_incidents_hardening")
    engine = build_engine(fresh.effective_owner_url, fresh, pool_size=1)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("sla_notices")}
            )
            assert "cycle" not in columns
            assert (await conn.execute(sa.text("SELECT count(*) FROM sla_notices"))).scalar_one() == 2
            if conn.dialect.name == "postgresql":
                qual = (
                    await conn.execute(
                        sa.text(
                            "SELECT qual FROM pg_policies WHERE tablename = 'incidents' AND policyname = 'tenant_read'"
                        )
                    )
                ).scalar_one()
                assert "SELECT" not in qual.upper()
    finally:
        await engine.dispose()
    await migrate.upgrade(fresh)
    assert await migrate.current(fresh) == migrate.head_revision(fresh)
