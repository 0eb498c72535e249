"""Escalation timer lateness at scale: 10,000 open incidents, each with an escalation level due within the next
few minutes, fired by two `msp worker` processes on PostgreSQL + Redis.

    .venv/bin/python bench/bench_escalations.py [--incidents 10000] [--spread 120] [--workers 2]

Lateness = when the level actually fired (the timer's claim) minus when it was due; the goal is p99 <= 1 s.
Needs the local PostgreSQL and Redis. Creates and drops its own database and Redis namespace.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from dramatiq import Message

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import func, insert, select

from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.kit.ids import new_id
from msp_platform.models.incident import Incident
from msp_platform.models.oncall import Escalation, EscalationLevel, EscalationPolicy, EscalationTarget, Page
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.timer import Timer
from msp_platform.worker.runtime import WorkerRuntime, create_broker

ADMIN_DSN = os.environ.get("MSP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("MSP_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def seed(
    db: Database, count: int, spread: float, lead: float
) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
    """Tenants, a policy, incidents with an active escalation each, and one level-0 timer per escalation."""
    now = datetime.now(UTC)
    tenants = [
        Tenant(id=new_id(), slug=f"bench-{i}", name=f"Bench {i}", ticket_prefix=f"BE{i}", timezone="UTC")
        for i in range(4)
    ]
    agent = StaffMember(
        id=new_id(),
        email=f"agent-{uuid.uuid4().hex[:6]}@msp.example",
        name="Agent",
        role="msp_agent",
        tier=1,
        active=True,
    )
    rows: list[tuple[uuid.UUID, uuid.UUID, datetime]] = []
    async with db.dangerously_unscoped_session() as session:
        session.add_all([*tenants, agent])
        await session.flush()
        policies = {}
        for tenant in tenants:
            session.add(StaffGrant(staff_id=agent.id, tenant_id=tenant.id, include_children=True))
            policy = EscalationPolicy(
                id=new_id(), tenant_id=tenant.id, name="P1", active=True, repeat_count=0, triggers=[]
            )
            session.add(policy)
            await session.flush()
            level = EscalationLevel(
                id=new_id(), tenant_id=tenant.id, policy_id=policy.id, position=0, delay_minutes=0
            )
            session.add(level)
            await session.flush()
            session.add(
                EscalationTarget(tenant_id=tenant.id, level_id=level.id, kind="person", staff_id=agent.id)
            )
            policies[tenant.id] = policy.id
        await session.commit()
        incidents, escalations, timers = [], [], []
        for i in range(count):
            tenant = tenants[i % len(tenants)]
            incident_id, escalation_id = new_id(), new_id()
            due = now + timedelta(seconds=lead + spread * i / count)
            incidents.append(
                {
                    "tenant_id": tenant.id,
                    "id": incident_id,
                    "number": i + 1,
                    "key": f"{tenant.ticket_prefix}-{i + 1:06d}",
                    "title": f"Bench {i}",
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
            escalations.append(
                {
                    "tenant_id": tenant.id,
                    "id": escalation_id,
                    "incident_id": incident_id,
                    "policy_id": policies[tenant.id],
                    "trigger": "incident_created",
                    "trigger_key": "created",
                    "state": "active",
                    "level": 0,
                    "repeat": 0,
                    "started_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            timer_id = new_id()
            timers.append(
                {
                    "tenant_id": tenant.id,
                    "id": timer_id,
                    "kind": "escalation.level",
                    "subject_id": escalation_id,
                    "key": "0:0",
                    "due_at": due,
                    "payload": {"level": 0, "repeat": 0},
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            rows.append((tenant.id, timer_id, due))
        for table, values in ((Incident, incidents), (Escalation, escalations), (Timer, timers)):
            for start in range(0, len(values), 2000):
                await session.execute(insert(table.__table__), values[start : start + 2000])  # type: ignore[arg-type]
        await session.commit()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=120.0, help="seconds over which the timers fall due")
    parser.add_argument("--lead", type=float, default=20.0, help="seconds before the first timer is due")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
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
        secret_key="bench-secret",
        broker_url=REDIS,
        broker_namespace=namespace,
    )
    procs: list[subprocess.Popen[bytes]] = []
    broker = create_broker(settings)
    WorkerRuntime.install(settings, broker)
    try:
        await migrate.upgrade(settings)
        db = Database.create(settings)
        started = time.perf_counter()
        timers = await seed(db, args.incidents, args.spread, args.lead)
        print(f"seeded {len(timers)} incidents with due escalations in {time.perf_counter() - started:.1f} s")
        # What the creating transactions' outbox would have sent: one delayed message per timer.
        now = datetime.now(UTC)
        queue = broker.get_actor("timers.fire").queue_name
        for tenant_id, timer_id, due in timers:
            message: Message[object] = Message(
                queue_name=queue,
                actor_name="timers.fire",
                args=(),
                kwargs={"tenant_id": str(tenant_id), "timer_id": str(timer_id)},
                options={},
                message_id=str(timer_id),
            )
            broker.enqueue(message, delay=max(0, int((due - now).total_seconds() * 1000)))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MSP_")},
            "MSP_DATABASE_URL": settings.database_url,
            "MSP_DATABASE_OWNER_URL": settings.database_owner_url,
            "MSP_VAR_DIR": str(settings.var_dir),
            "MSP_SECRET_KEY": "bench-secret",
            "MSP_BROKER_URL": REDIS,
            "MSP_BROKER_NAMESPACE": namespace,
            "MSP_LOG_LEVEL": "WARNING",
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
        deadline = time.monotonic() + args.lead + args.spread + 300
        async with db.dangerously_unscoped_session() as session:
            while time.monotonic() < deadline:
                fired = await session.scalar(
                    select(func.count()).select_from(Timer).where(Timer.fired_at.is_not(None))
                )
                await session.commit()
                if fired >= len(timers):
                    break
                await asyncio.sleep(1)
            lateness = [
                (fired_at - due).total_seconds()
                for fired_at, due in (
                    await session.execute(
                        select(Timer.fired_at, Timer.due_at).where(Timer.fired_at.is_not(None))
                    )
                ).all()
            ]
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
        print(
            f"{len(lateness)} of {len(timers)} escalations fired; {pages} pages; {duplicates} duplicated levels"
        )
        print("follow-up jobs: " + ", ".join(f"{name} {n}" for name, n in jobs))
        print(
            f"{args.workers} worker processes x {args.threads} threads; due times spread over {args.spread:.0f} s"
        )
        if lateness:
            print(
                f"lateness: p50 {statistics.median(lateness) * 1000:.0f} ms, p99 {percentile(lateness, 0.99) * 1000:.0f} ms, "
                f"max {max(lateness) * 1000:.0f} ms"
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
        broker.flush_all()
        broker.close()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
