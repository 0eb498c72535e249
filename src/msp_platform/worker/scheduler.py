"""Periodic jobs that run once per period however many processes run the scheduler.

Each job has a row with ``next_run_at``. A process that sees it due moves it forward with a compare-and-set
(``UPDATE ... WHERE next_run_at = <what I read>``); only the process whose update matched enqueues the run.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.time import utcnow
from msp_platform.models.scheduled_job import ScheduledJob
from msp_platform.worker.outbox import enqueue
from msp_platform.worker.registry import PERIODIC, load_task_modules


async def _ensure_rows(session: AsyncSession, now: datetime) -> dict[str, ScheduledJob]:
    rows = {r.name: r for r in (await session.scalars(select(ScheduledJob))).all()}
    missing = [spec for name, spec in PERIODIC.items() if name not in rows]
    if missing:
        dialect = session.bind.dialect.name if session.bind is not None else ""
        values = [
            {"name": s.name, "interval_seconds": int(s.every.total_seconds()), "next_run_at": now}
            for s in missing
        ]
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            await session.execute(pg_insert(ScheduledJob).values(values).on_conflict_do_nothing())
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            await session.execute(sqlite_insert(ScheduledJob).values(values).on_conflict_do_nothing())
        rows = {r.name: r for r in (await session.scalars(select(ScheduledJob))).all()}
    return rows


async def run_due_periodic_jobs(session: AsyncSession, now: datetime | None = None) -> list[str]:
    load_task_modules()
    now = now or utcnow()
    rows = await _ensure_rows(session, now)
    started: list[str] = []
    for name, spec in PERIODIC.items():
        row = rows.get(name)
        if row is None or row.next_run_at > now:
            continue
        # Skip missed periods instead of replaying each of them after an outage.
        following = row.next_run_at + spec.every
        while following <= now:
            following += spec.every
        result = await session.execute(
            update(ScheduledJob)
            .where(ScheduledJob.name == name, ScheduledJob.next_run_at == row.next_run_at)
            .values(next_run_at=following, last_run_at=now, interval_seconds=int(spec.every.total_seconds()))
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            enqueue(session, spec.actor_name)
            started.append(name)
    return started


__all__ = ["insert", "run_due_periodic_jobs"]
