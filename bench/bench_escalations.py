"""Escalation timer lateness at scale: 10,000 open P1 incidents whose escalation policy pages someone a set
time after the incident is raised, fired by two `msp worker` processes on PostgreSQL + Redis.

    .venv/bin/python bench/bench_escalations.py [--incidents 10000] [--spread 120] [--delay-minutes 2]
        [--path incidents|start]

``--path incidents`` (default), the whole real path: the incidents service raises each incident (paced to
arrive over ``--spread`` seconds, as fast as the machine allows), its ``incident.created`` event goes through
the outbox to Redis, a worker's ``escalations.on_incident_event`` matches the tenant's policy and starts the
escalation, whose level-0 timer row and delayed message (due ``--delay-minutes`` later) go out after that
job's commit. The timers fall due as fast as incidents could be raised.

``--path start``: the incidents are inserted in bulk, then the escalation service's ``start`` begins each
escalation (frozen ladder, event log, timer row, delayed message through the outbox), backdated so the
level-0 timers fall due evenly over exactly ``--spread`` seconds once the workers run: the firing rate the
issue asks for (10,000 in 120 s) independently of how fast this machine raises incidents.

Either way the level fires from its delayed message (the sweep only re-queues what is overdue and unleased).

Lateness = when the level fired (the timer's claim) minus when it was due; the goal is p99 <= 1 s. Needs the
local PostgreSQL and Redis; creates and drops its own database, and uses its own Redis namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import func, select

from msp_platform.auth.principal import Principal, PrincipalKind
from msp_platform.auth.scopes import Role
from msp_platform.authz.service import system_tenant_context
from msp_platform.authz.types import AccessibleTenantId
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.escalations import service as escalations
from msp_platform.escalations.schemas import LevelIn, PolicyIn, TargetIn, TriggerIn
from msp_platform.incidents import service as incidents
from msp_platform.incidents.schemas import IncidentCreate
from msp_platform.kit.ids import new_id
from msp_platform.models.incident import Incident
from msp_platform.models.oncall import Escalation, Page
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.timer import Timer
from msp_platform.worker.outbox import PENDING_KEY, flush_acks, send_after_commit
from msp_platform.worker.runtime import WorkerRuntime, create_broker

ADMIN_DSN = os.environ.get("MSP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("MSP_BENCH_REDIS", "redis://127.0.0.1:6379/0")
TENANTS = 4


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def setup(db: Database, delay_minutes: int) -> tuple[list[uuid.UUID], Principal]:
    """Tenants, an on-call agent granted them, and each tenant's P1 policy (saved by the service)."""
    suffix = uuid.uuid4().hex[:6]
    tenants = [
        Tenant(
            id=new_id(),
            slug=f"bench-{suffix}-{i}",
            name=f"Bench {i}",
            ticket_prefix=f"B{suffix[:4].upper()}{i}",
            timezone="UTC",
        )
        for i in range(TENANTS)
    ]
    agent = StaffMember(
        id=new_id(), email=f"agent-{suffix}@msp.example", name="Agent", role="msp_agent", tier=1, active=True
    )
    async with db.dangerously_unscoped_session() as session:
        session.add_all([*tenants, agent])
        await session.flush()
        for tenant in tenants:
            session.add(StaffGrant(staff_id=agent.id, tenant_id=tenant.id, include_children=True))
        await session.commit()
    policy = PolicyIn(
        name="P1 on call",
        triggers=[TriggerIn(type="incident_created", priorities=[1])],
        levels=[LevelIn(delay_minutes=delay_minutes, targets=[TargetIn(kind="person", staff_id=agent.id)])],
    )
    for tenant in tenants:
        async with db.session() as session:
            await set_tenant_context(session, system_tenant_context(tenant.id))
            await escalations.save_policy(session, tenant.id, policy)
            await session.commit()
    principal = Principal(
        kind=PrincipalKind.staff,
        subject_id=str(agent.id),
        role=Role.msp_agent,
        scopes=frozenset(),
        client_id="bench",
        jti="bench",
        expires_at=0,
        tier=1,
    )
    return [t.id for t in tenants], principal


async def raise_incidents(
    db: Database, broker: object, principal: Principal, tenants: list[uuid.UUID], count: int, spread: float
) -> float:
    """Raise ``count`` P1 incidents through the incidents service, paced evenly over ``spread`` seconds, a
    few per unit of work; each commit's jobs go to Redis right after it, as in the API."""
    batch = 10
    started = time.monotonic()
    behind = 0.0
    for first in range(0, count, batch):
        target = started + spread * first / count
        wait = target - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            behind = max(behind, -wait)
        tenant_id = tenants[(first // batch) % len(tenants)]
        async with db.session() as session:
            await set_tenant_context(session, system_tenant_context(tenant_id))
            for n in range(first, min(first + batch, count)):
                await incidents.create_incident(
                    session,
                    principal,
                    AccessibleTenantId(tenant_id),
                    IncidentCreate(title=f"Bench incident {n}", impact=1, urgency=1),
                )
            pending = list(session.info.pop(PENDING_KEY, []))
            await session.commit()
        await send_after_commit(broker, db.sessionmaker, pending)  # type: ignore[arg-type]
    await flush_acks()
    return behind


async def start_escalations(
    db: Database, broker: object, tenants: list[uuid.UUID], count: int, spread: float, lead: float
) -> None:
    """Bulk-insert ``count`` open P1 incidents, then start each one's escalation with the service, level 0
    due ``lead`` s from now plus its share of ``spread``."""
    from datetime import timedelta

    from sqlalchemy import insert

    from msp_platform.kit.time import utcnow
    from msp_platform.models.oncall import EscalationPolicy

    now = utcnow()
    rows: dict[uuid.UUID, list[dict[str, object]]] = {t: [] for t in tenants}
    async with db.dangerously_unscoped_session() as session:
        prefixes = dict((await session.execute(select(Tenant.id, Tenant.ticket_prefix))).all())
        for i in range(count):
            tenant_id = tenants[i % len(tenants)]
            number = len(rows[tenant_id]) + 1
            rows[tenant_id].append(
                {
                    "tenant_id": tenant_id,
                    "id": new_id(),
                    "number": number,
                    "key": f"{prefixes[tenant_id]}-{number:06d}",
                    "title": f"Bench incident {i}",
                    "description": "",
                    "reported_by": "bench",
                    "channel": "api",
                    "impact": 1,
                    "urgency": 1,
                    "patient_care_impact": False,
                    "priority": 1,
                    "priority_matrix_version": 0,
                    "tier": 1,
                    "state": "new",
                    "opened_at": now,
                    "reopen_count": 0,
                    "first_contact_resolution": False,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        for values in rows.values():
            for first in range(0, len(values), 1000):
                await session.execute(insert(Incident.__table__), values[first : first + 1000])
        await session.commit()
    order = [row for i in range(count) for row in [rows[tenants[i % len(tenants)]][i // len(tenants)]]]
    begin = utcnow() + timedelta(seconds=lead)
    batch = 200
    for first in range(0, count, batch):
        chunk = order[first : first + batch]
        tenant_ids = {row["tenant_id"] for row in chunk}
        for tenant_id in tenant_ids:
            async with db.session() as session:
                await set_tenant_context(session, system_tenant_context(tenant_id))  # type: ignore[arg-type]
                policy = await session.scalar(select(EscalationPolicy))
                assert policy is not None
                wanted = [row["id"] for row in chunk if row["tenant_id"] == tenant_id]
                loaded = {
                    i.id: i for i in await session.scalars(select(Incident).where(Incident.id.in_(wanted)))
                }
                for index, row in enumerate(chunk, start=first):
                    if row["tenant_id"] != tenant_id:
                        continue
                    incident = loaded[row["id"]]  # type: ignore[index]
                    due = begin + timedelta(seconds=spread * index / count)
                    await escalations.start(
                        session,
                        incident,
                        policy,
                        trigger="incident_created",
                        trigger_key="created",
                        at=due,  # the policy's level 0 has no delay in this mode
                    )
                pending = list(session.info.pop(PENDING_KEY, []))
                await session.commit()
            await send_after_commit(broker, db.sessionmaker, pending)  # type: ignore[arg-type]
    await flush_acks()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=120.0, help="seconds over which incidents are raised")
    parser.add_argument(
        "--delay-minutes",
        type=int,
        default=5,
        help="--path incidents: the policy's level-0 delay (long enough that the levels fall due after the "
        "workers have caught up with raising the incidents, whose jobs share the high queue)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--path", choices=("incidents", "start"), default="incidents")
    parser.add_argument(
        "--lead",
        type=float,
        default=120.0,
        help="--path start: seconds until the first is due (covers seeding)",
    )
    args = parser.parse_args()

    db_name = f"msp_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        database_url=f"postgresql+asyncpg://msp_app@127.0.0.1:5432/{db_name}",
        database_owner_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}",
        var_dir=Path(f"/tmp/{db_name}"),
        secret_key="bench-secret",  # type: ignore[arg-type]
        broker_url=REDIS,
        broker_namespace=namespace,
        log_level="WARNING",
    )
    procs: list[subprocess.Popen[bytes]] = []
    broker = create_broker(settings)
    WorkerRuntime.install(settings, broker)
    try:
        await migrate.upgrade(settings)
        db = Database.create(settings)
        tenants, principal = await setup(db, args.delay_minutes if args.path == "incidents" else 0)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MSP_")},
            "MSP_DATABASE_URL": settings.database_url,
            "MSP_DATABASE_OWNER_URL": settings.database_owner_url,
            "MSP_VAR_DIR": str(settings.var_dir),
            "MSP_SECRET_KEY": "bench-secret",
            "MSP_BROKER_URL": REDIS,
            "MSP_BROKER_NAMESPACE": namespace,
            "MSP_LOG_LEVEL": "ERROR",
            "MSP_DATABASE_POOL_SIZE": "20",
        }
        for _ in range(args.workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "msp_platform", "worker", "--threads", str(args.threads)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        began = time.perf_counter()
        if args.path == "incidents":
            behind = await raise_incidents(db, broker, principal, tenants, args.incidents, args.spread)
            print(
                f"raised {args.incidents} P1 incidents through the incidents service in "
                f"{time.perf_counter() - began:.1f} s (pacing fell behind by at most {behind:.1f} s); "
                f"each escalation's level 0 is due {args.delay_minutes} min after it started"
            )
        else:
            await start_escalations(db, broker, tenants, args.incidents, args.spread, args.lead)
            print(
                f"inserted {args.incidents} P1 incidents and started their escalations with the service in "
                f"{time.perf_counter() - began:.1f} s; level-0 timers fall due over {args.spread:.0f} s"
            )
        deadline = time.monotonic() + args.delay_minutes * 60 + 600
        async with db.dangerously_unscoped_session() as session:
            while time.monotonic() < deadline:
                fired = await session.scalar(
                    select(func.count())
                    .select_from(Timer)
                    .where(Timer.kind == escalations.TIMER_KIND, Timer.fired_at.is_not(None))
                )
                await session.commit()
                if fired >= args.incidents:
                    break
                await asyncio.sleep(1)
            lateness = [
                (fired_at - due).total_seconds()
                for fired_at, due in (
                    await session.execute(
                        select(Timer.fired_at, Timer.due_at).where(
                            Timer.kind == escalations.TIMER_KIND, Timer.fired_at.is_not(None)
                        )
                    )
                ).all()
            ]
            start_lag = [
                (started - opened).total_seconds()
                for started, opened in (
                    await session.execute(
                        select(Escalation.started_at, Incident.opened_at).join(
                            Incident,
                            (Incident.tenant_id == Escalation.tenant_id)
                            & (Incident.id == Escalation.incident_id),
                        )
                    )
                ).all()
            ]
            escalation_count = await session.scalar(select(func.count()).select_from(Escalation))
            pages = await session.scalar(select(func.count()).select_from(Page))
            duplicates = await session.scalar(
                select(func.count()).select_from(
                    select(Page.escalation_id)
                    .group_by(Page.escalation_id, Page.level, Page.repeat)
                    .having(func.count() > 1)
                    .subquery()
                )
            )
            jobs = (
                await session.execute(
                    select(OutboxMessage.actor_name, func.count())
                    .group_by(OutboxMessage.actor_name)
                    .order_by(func.count().desc())
                )
            ).all()
            failures = await session.scalar(
                select(func.count()).select_from(Timer).where(Timer.last_error.is_not(None))
            )
        print(
            f"{escalation_count} escalations started; {len(lateness)} of {args.incidents} level-0 timers fired; "
            f"{pages} pages; {duplicates} duplicated levels; {failures} timers with a handler error"
        )
        print("jobs through the outbox: " + ", ".join(f"{name} {n}" for name, n in jobs))
        print(
            f"{args.workers} worker processes x {args.threads} threads; path {args.path}; target spread "
            f"{args.spread:.0f} s ({args.incidents / args.spread:.0f}/s)"
        )
        if start_lag:
            print(
                f"incident raised -> escalation started: p50 {ms(statistics.median(start_lag))}, "
                f"p99 {ms(percentile(start_lag, 0.99))}, max {ms(max(start_lag))}"
            )
        if lateness:
            print(
                f"lateness: p50 {ms(statistics.median(lateness))}, p99 {ms(percentile(lateness, 0.99))}, "
                f"max {ms(max(lateness))}"
            )
        await db.dispose()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.flush_all()  # type: ignore[attr-defined]
        broker.close()
        import redis

        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(f"{namespace}:*"):  # the workers' heartbeats
            client.delete(key)
        client.close()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
