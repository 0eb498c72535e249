"""Time the service reports on PostgreSQL (row-level security on) over a million incidents.

    .venv/bin/python bench/bench_reports.py [--incidents 1000000] [--days 365] [--repeat 3] [--keep]
                                            [--with-proposed-indexes]

Needs the local PostgreSQL (MSP_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres). Creates its own
database, migrates it (``msp_platform.db.migrate.upgrade``), bulk-loads incidents and their ``incident_slas``
rows with COPY as the owner, then runs every report through the service layer on a session of the
application role (``msp_app``: RLS applies, exactly like a request) for a 90-day period: for one hospital
(scope=tenant) and for its health system (scope=rollup over six hospitals), by none and by site. Drops the
database at the end unless ``--keep``.

Data: a health system with six hospitals (four sites each, one site in another time zone) and one unrelated
tenant; incidents over ``--days`` days with a shift-change hour profile, quieter weekends, realistic priority,
channel and category mixes, response/resolution delays by priority, and a small long-tail backlog.

The report indexes (resolved_at, closed_at, the open backlog; incident_slas by opened_at) and the row-level
security policies that read their settings once per statement are in migration 0008;
``--with-proposed-indexes`` and ``--with-proposed-policies`` (re)apply those statements idempotently, which
matters only with ``--database`` on a database made before 0008. ``--database NAME`` times again on a kept
database.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from msp_platform.auth.principal import Principal, PrincipalKind
from msp_platform.auth.scopes import ALL_SCOPES, Role
from msp_platform.authz.types import AccessibleTenantId, TenantContext
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.db.session import CTX_KEY
from msp_platform.kit.ids import new_id
from msp_platform.models.site import Site, SiteKind
from msp_platform.models.tenant import Tenant
from msp_platform.reports import service
from msp_platform.reports.schemas import GroupBy

ADMIN_DSN = os.environ.get("MSP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# In migration 0008 (these statements re-create them on an older kept database).
PROPOSED_INDEXES = (
    "CREATE INDEX ix_incidents_tenant_resolved ON incidents (tenant_id, resolved_at)",
    "CREATE INDEX ix_incidents_tenant_open_opened ON incidents (tenant_id, opened_at) "
    "WHERE state IN ('new', 'assigned', 'in_progress', 'on_hold')",
    "CREATE INDEX ix_incidents_tenant_closed ON incidents (tenant_id, closed_at)",
)

PRIORITIES = [1, 2, 3, 4, 5]
PRIORITY_WEIGHTS = [2, 8, 40, 40, 10]
CHANNELS = ["phone", "portal", "email", "api", "walk_up", "after_hours"]
CHANNEL_WEIGHTS = [35, 30, 15, 8, 4, 8]
CATEGORIES = [
    "ehr",
    "network",
    "printing",
    "hardware",
    "access",
    "email",
    "telephony",
    "imaging",
    "lab-systems",
    "pharmacy",
    "software",
    None,
]
CATEGORY_WEIGHTS = [18, 12, 14, 10, 16, 6, 4, 4, 4, 3, 6, 3]
# Local hour of day: quiet nights, peaks at the 07:00 and 19:00 shift changes.
HOUR_WEIGHTS = [2, 1, 1, 1, 1, 2, 4, 12, 14, 9, 8, 7, 6, 7, 7, 7, 6, 5, 6, 11, 12, 6, 4, 3]
RESPONSE_MINUTES = {1: 15, 2: 30, 3: 60, 4: 240, 5: 480}
RESOLUTION_MINUTES = {1: 240, 2: 480, 3: 1440, 4: 4320, 5: 7200}
# The public-update cadence of the urgent priorities (an "update" SLA row for those incidents).
UPDATE_MINUTES = {1: 60, 2: 120}
OPEN_STATES = ["new", "assigned", "in_progress", "on_hold"]


async def setup_tenants(db: Database) -> dict[str, Any]:
    parent = Tenant(
        id=new_id(),
        slug="bench-health",
        name="Bench Health System",
        ticket_prefix="BHS",
        timezone="America/New_York",
    )
    hospitals = [
        Tenant(
            id=new_id(),
            slug=f"bench-hospital-{i}",
            name=f"Bench Hospital {i}",
            ticket_prefix=f"BH{i}",
            timezone="America/Chicago" if i == 6 else "America/New_York",
            parent_id=parent.id,
        )
        for i in range(1, 7)
    ]
    other = Tenant(
        id=new_id(),
        slug="bench-other",
        name="Unrelated Clinic",
        ticket_prefix="BOT",
        timezone="Europe/London",
    )
    sites: dict[uuid.UUID, list[uuid.UUID]] = {}
    async with db.dangerously_unscoped_session() as session:
        session.add(parent)
        await session.flush()
        session.add_all([*hospitals, other])
        await session.flush()
        for tenant in (parent, *hospitals, other):
            rows = [
                Site(
                    tenant_id=tenant.id,
                    id=new_id(),
                    code=f"S{j}",
                    name=f"{tenant.name} site {j}",
                    kind=SiteKind.hospital,
                    timezone="America/Denver" if j == 4 else None,
                    active=True,
                )
                for j in range(1, 5)
            ]
            session.add_all(rows)
            sites[tenant.id] = [s.id for s in rows]
        await session.commit()
    return {"parent": parent, "hospitals": hospitals, "other": other, "sites": sites}


def lognormal_minutes(rng: random.Random, median: float, sigma: float = 1.0) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def generate(
    count: int, tenants: dict[str, Any], now: datetime, days: int, seed: int = 7
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    owners: list[Tenant] = [tenants["parent"], *tenants["hospitals"], tenants["other"]]
    owner_weights = [1, *([14] * 6), 15]
    picks_owner = rng.choices(range(len(owners)), owner_weights, k=count)
    picks_priority = rng.choices(PRIORITIES, PRIORITY_WEIGHTS, k=count)
    picks_channel = rng.choices(CHANNELS, CHANNEL_WEIGHTS, k=count)
    picks_category = rng.choices(CATEGORIES, CATEGORY_WEIGHTS, k=count)
    picks_hour = rng.choices(range(24), HOUR_WEIGHTS, k=count)
    numbers: dict[uuid.UUID, int] = {}
    start = now - timedelta(days=days)
    incidents: list[tuple[Any, ...]] = []
    slas: list[tuple[Any, ...]] = []
    for i in range(count):
        tenant = owners[picks_owner[i]]
        priority = picks_priority[i]
        day = rng.randrange(days)
        weekday = (start + timedelta(days=day)).weekday()
        if weekday >= 5 and rng.random() < 0.4:  # quieter weekends
            day = rng.randrange(days)
        local = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=day, hours=picks_hour[i], seconds=rng.randrange(3600)
        )
        opened = local + timedelta(hours=5)  # local (about UTC-5) to UTC
        if opened >= now:
            opened = now - timedelta(minutes=rng.randrange(1, 600))
        age = now - opened
        roll = rng.random()
        if age > timedelta(days=14):
            state = (
                "closed"
                if roll < 0.93
                else "cancelled"
                if roll < 0.96
                else "resolved"
                if roll < 0.98
                else rng.choice(OPEN_STATES)
            )
        else:
            state = (
                rng.choice(OPEN_STATES)
                if roll < 0.4
                else "resolved"
                if roll < 0.75
                else "closed"
                if roll < 0.95
                else "cancelled"
            )
        responded = None
        if state != "new" or rng.random() < 0.3:
            responded = opened + timedelta(minutes=lognormal_minutes(rng, RESPONSE_MINUTES[priority] * 0.6))
            if responded > now:
                responded = None
        resolved = closed = None
        if state in ("resolved", "closed"):
            resolved = opened + timedelta(
                minutes=lognormal_minutes(rng, RESOLUTION_MINUTES[priority] * 0.5, 1.2)
            )
            if resolved >= now:
                state, resolved = "in_progress", None
            elif state == "closed":
                closed = resolved + timedelta(days=2)
                if closed >= now:
                    state, closed = "resolved", None
        if state == "cancelled":
            closed = opened + timedelta(minutes=rng.randrange(5, 600))
            if closed >= now:
                closed = now - timedelta(seconds=1)
        if state in ("in_progress", "resolved", "closed") and responded is None:
            responded = opened + timedelta(minutes=1)
        reopen = 1 if resolved is not None and rng.random() < 0.05 else 0
        fcr = resolved is not None and reopen == 0 and priority >= 3 and rng.random() < 0.35
        number = numbers[tenant.id] = numbers.get(tenant.id, 0) + 1
        incident_id = new_id()
        site_ids = tenants["sites"][tenant.id]
        site = site_ids[rng.randrange(len(site_ids))] if rng.random() < 0.85 else None
        incidents.append(
            (
                tenant.id,
                incident_id,
                opened,
                opened,
                number,
                f"{tenant.ticket_prefix}-{number:07d}",
                "Bench incident",
                "",
                "bench",
                site,
                picks_category[i],
                picks_channel[i],
                3,
                3,
                False,
                priority,
                1,
                1,
                state,
                opened,
                responded,
                resolved,
                closed,
                reopen,
                fcr,
                1,
                1,
            )
        )
        targets = [
            ("response", RESPONSE_MINUTES[priority], responded),
            (
                "resolution",
                RESOLUTION_MINUTES[priority],
                resolved or (closed if state == "cancelled" else None),
            ),
        ]
        if priority in UPDATE_MINUTES:
            stop = resolved or closed
            targets.append(("update", UPDATE_MINUTES[priority], stop if rng.random() < 0.8 else None))
        for target, minutes, stop in targets:
            due = opened + timedelta(minutes=minutes)
            if target == "update":
                # met: every cadence kept until the stop; breached: one missed; running: still open.
                status = (
                    ("met" if rng.random() < 0.85 else "breached")
                    if stop is not None
                    else ("breached" if now > due and rng.random() < 0.5 else "running")
                )
            elif stop is not None:
                status = "met" if stop <= due else "breached"
            elif state == "on_hold" and target == "resolution":
                status = "paused"
            else:
                status = "breached" if now > due else "running"
            slas.append(
                (
                    tenant.id,
                    new_id(),
                    opened,
                    opened,
                    incident_id,
                    target,
                    1,
                    priority,
                    minutes * 60,
                    status,
                    due,
                    due if status == "breached" else None,
                    stop,
                    minutes * 60,
                    0,
                    now,
                    opened,
                )
            )
    # Rows arrive in time order in production (and ids are time-ordered): store them that way, so the
    # physical layout (what a period's heap reads touch) is realistic.
    order = sorted(range(len(incidents)), key=lambda k: incidents[k][19])
    by_incident: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
    for row in slas:
        by_incident.setdefault(row[4], []).append(row)
    return [incidents[k] for k in order], [r for k in order for r in by_incident[incidents[k][1]]]


INCIDENT_COLUMNS = [
    "tenant_id",
    "id",
    "created_at",
    "updated_at",
    "number",
    "key",
    "title",
    "description",
    "reported_by",
    "site_id",
    "category",
    "channel",
    "impact",
    "urgency",
    "patient_care_impact",
    "priority",
    "priority_matrix_version",
    "tier",
    "state",
    "opened_at",
    "first_response_at",
    "resolved_at",
    "closed_at",
    "reopen_count",
    "first_contact_resolution",
    "version",
    "sla_policy_version",
]
SLA_COLUMNS = [
    "tenant_id",
    "id",
    "created_at",
    "updated_at",
    "incident_id",
    "target",
    "policy_version",
    "priority",
    "duration_seconds",
    "status",
    "due_at",
    "breached_at",
    "stopped_at",
    "elapsed_seconds",
    "paused_seconds",
    "computed_at",
    "opened_at",
]


async def bulk_load(owner_dsn: str, incidents: list[tuple[Any, ...]], slas: list[tuple[Any, ...]]) -> None:
    conn = await asyncpg.connect(owner_dsn)
    try:
        chunk = 100_000
        for i in range(0, len(incidents), chunk):
            await conn.copy_records_to_table(
                "incidents", records=incidents[i : i + chunk], columns=INCIDENT_COLUMNS
            )
        for i in range(0, len(slas), chunk):
            await conn.copy_records_to_table(
                "incident_slas", records=slas[i : i + chunk], columns=SLA_COLUMNS
            )
        await conn.execute("ANALYZE incidents")
        await conn.execute("ANALYZE incident_slas")
    finally:
        await conn.close()


MSP_ADMIN = Principal(
    kind=PrincipalKind.staff,
    subject_id=str(uuid.uuid4()),
    role=Role.msp_admin,
    scopes=ALL_SCOPES,
    client_id="bench",
    jti="bench",
    expires_at=0,
)

REPORTS: dict[str, Callable[[Any, service.ReportContext], Awaitable[Any]]] = {
    "sla-compliance": service.sla_compliance_report,
    "response-times": service.response_times_report,
    "resolution-quality": service.resolution_quality_report,
    "backlog": service.backlog_report,
    "volume": service.volume_report,
    "volume/hour-of-week": service.hour_of_week_report,
    "service (all)": service.service_report,
}


async def time_report(
    db: Database,
    tenant: Tenant,
    scope: str,
    group_by: GroupBy,
    start: datetime,
    end: datetime,
    run: Callable[[Any, service.ReportContext], Awaitable[Any]],
    repeat: int,
) -> tuple[float, float]:
    timings: list[float] = []
    for _ in range(repeat):
        async with db.session() as session:
            session.info[CTX_KEY] = TenantContext.single(AccessibleTenantId(tenant.id))
            started = time.perf_counter()
            ctx = await service.open_report(
                session,
                MSP_ADMIN,
                AccessibleTenantId(tenant.id),
                raw_scope=scope,
                group_by=group_by,
                raw_from=start.isoformat(),
                raw_to=end.isoformat(),
            )
            await run(session, ctx)
            timings.append(time.perf_counter() - started)
            await session.rollback()
    return min(timings), statistics.median(timings)


PROPOSED_POLICIES = (
    # The same policies as db/rls.py, with each setting read once per statement (an InitPlan) instead of
    # being parsed again for every row.
    "ALTER POLICY tenant_read ON {table} USING (tenant_id = ANY ((SELECT string_to_array("
    "NULLIF(current_setting('app.tenant_ids', true), ''), ','))::uuid[]))",
    "ALTER POLICY tenant_write ON {table} "
    "USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)) "
    "WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))",
)


async def apply_proposals(owner_dsn: str, *, indexes: bool, policies: bool) -> None:
    conn = await asyncpg.connect(owner_dsn)
    try:
        if indexes:
            for ddl in PROPOSED_INDEXES:
                await conn.execute(ddl.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
            await conn.execute("ANALYZE incidents")
            print("with the proposed indexes:", *PROPOSED_INDEXES, sep="\n  ")
        if policies:
            tables = await conn.fetch(
                "SELECT DISTINCT tablename FROM pg_policies WHERE policyname IN ('tenant_read', 'tenant_write')"
            )
            for row in tables:
                for ddl in PROPOSED_POLICIES:
                    await conn.execute(ddl.format(table=row["tablename"]))
            print(f"with the proposed row-level security policies on {len(tables)} tables")
    finally:
        await conn.close()


async def load_tenants(db: Database) -> dict[str, Any]:
    async with db.dangerously_unscoped_session() as session:
        rows = {t.slug: t for t in (await session.scalars(select(Tenant))).all()}
    return {"parent": rows["bench-health"], "hospitals": [rows[f"bench-hospital-{i}"] for i in range(1, 7)]}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="history the incidents are spread over")
    parser.add_argument("--period-days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument("--database", help="time again on a database kept by an earlier run (no load)")
    parser.add_argument("--with-proposed-indexes", action="store_true")
    parser.add_argument("--with-proposed-policies", action="store_true")
    args = parser.parse_args()

    reuse = args.database is not None
    db_name = args.database or f"msp_bench_{uuid.uuid4().hex[:8]}"
    keep = args.keep or reuse
    if not reuse:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{db_name}"')
        await admin.close()
    app_url = f"postgresql+asyncpg://msp_app@127.0.0.1:5432/{db_name}"
    owner_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
    owner_dsn = f"postgresql://postgres@127.0.0.1:5432/{db_name}"
    settings = Settings(
        database_url=app_url,
        database_owner_url=owner_url,
        var_dir=Path(tempfile.mkdtemp(prefix=f"{db_name}-")),
        secret_key=uuid.uuid4().hex,
    )
    db: Database | None = None
    try:
        if reuse:
            db = Database.create(settings)
            tenants = await load_tenants(db)
            conn = await asyncpg.connect(owner_dsn)
            latest = await conn.fetchval("SELECT max(opened_at) FROM incidents")
            await conn.close()
            now = latest.astimezone(UTC).replace(microsecond=0) + timedelta(minutes=1)
        else:
            await migrate.upgrade(settings)
            db = Database.create(settings)
            tenants = await setup_tenants(db)
            now = datetime.now(UTC).replace(microsecond=0)
            started = time.perf_counter()
            incidents, slas = generate(args.incidents, tenants, now, args.days)
            generated = time.perf_counter() - started
            started = time.perf_counter()
            await bulk_load(owner_dsn, incidents, slas)
            loaded = time.perf_counter() - started
            print(f"database {db_name}: {len(incidents):,} incidents and {len(slas):,} incident_slas rows")
            print(f"generated in {generated:.1f} s, loaded with COPY (and ANALYZE) in {loaded:.1f} s")
            del incidents, slas
        await apply_proposals(
            owner_dsn, indexes=args.with_proposed_indexes, policies=args.with_proposed_policies
        )

        hospital: Tenant = tenants["hospitals"][0]
        parent: Tenant = tenants["parent"]
        periods = {
            f"last {args.period_days} days": (now - timedelta(days=args.period_days), now),
            f"{args.period_days} days ending {args.period_days} days ago": (
                now - timedelta(days=2 * args.period_days),
                now - timedelta(days=args.period_days),
            ),
        }
        print(
            f"\nrepeat {args.repeat}, min / median milliseconds (open_report + the report, as msp_app with RLS)"
        )
        print(f"{'report':22} {'period':28} {'scope':28} {'group_by':8} {'min':>8} {'median':>8}")
        for period_name, (start, end) in periods.items():
            for name, run in REPORTS.items():
                for label, tenant, scope in (
                    (f"tenant ({hospital.slug})", hospital, "tenant"),
                    (f"rollup ({parent.slug}, 7)", parent, "rollup"),
                ):
                    for group_by in (GroupBy.none, GroupBy.site):
                        best, median = await time_report(
                            db, tenant, scope, group_by, start, end, run, args.repeat
                        )
                        print(
                            f"{name:22} {period_name:28} {label:28} {group_by.value:8} "
                            f"{best * 1000:>8.1f} {median * 1000:>8.1f}"
                        )
    finally:
        if db is not None:
            await db.dispose()
        if keep:
            print(f"\nkept database {db_name} ({owner_dsn})")
        else:
            admin = await asyncpg.connect(ADMIN_DSN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
