"""Durable timers (SLA warnings and breaches, escalation levels): a row with ``due_at`` is the truth.

- ``schedule`` upserts the row and queues a *delayed* job for its due time (sent after commit like any job).
- ``timers.fire`` claims the row with a compare-and-set on ``fired_at`` and runs the kind's handler in the
  same transaction: the handler's effects and the claim commit together, so a timer fires exactly once
  however many duplicate messages or workers race for it, and a failed handler un-claims it for the retry.
- ``timers.sweep`` (every few seconds, once across processes) re-queues whatever is overdue and unfired —
  the broker lost the delayed message, was down at the time, or the worker died.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.models.timer import Timer
from msp_platform.worker.context import JobContext
from msp_platform.worker.outbox import enqueue
from msp_platform.worker.registry import Queue, actor, periodic

log = get_logger(__name__)
Handler = Callable[[JobContext, Timer], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}
SWEEP_EVERY = timedelta(seconds=2)
# Leave the delayed message this long to arrive before the sweep sends another.
SWEEP_GRACE = timedelta(seconds=2)
SWEEP_BATCH = 2000


def timer_handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


async def schedule(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    subject_id: uuid.UUID,
    key: str,
    due_at: datetime,
    payload: dict[str, Any] | None = None,
) -> Timer:
    """Create or move a timer. A timer that already fired stays fired (its event happened once)."""
    existing: Timer | None = await session.scalar(
        select(Timer).where(Timer.kind == kind, Timer.subject_id == subject_id, Timer.key == key)
    )
    if existing is not None and existing.fired_at is not None:
        return existing
    if existing is None:
        existing = Timer(
            tenant_id=tenant_id,
            kind=kind,
            subject_id=subject_id,
            key=key,
            due_at=due_at,
            payload=payload or {},
        )
        session.add(existing)
        await session.flush()
    elif existing.due_at == due_at and existing.cancelled_at is None and existing.payload == (payload or {}):
        return existing
    else:
        existing.due_at = due_at
        existing.cancelled_at = None
        existing.payload = payload or {}
    enqueue(session, "timers.fire", tenant_id=tenant_id, timer_id=existing.id, eta=due_at)
    return existing


async def cancel(session: AsyncSession, *, kind: str, subject_id: uuid.UUID, key: str | None = None) -> int:
    stmt = (
        update(Timer)
        .where(
            Timer.kind == kind,
            Timer.subject_id == subject_id,
            Timer.fired_at.is_(None),
            Timer.cancelled_at.is_(None),
        )
        .values(cancelled_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if key is not None:
        stmt = stmt.where(Timer.key == key)
    result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


async def pending(session: AsyncSession, *, kind: str, subject_id: uuid.UUID) -> list[Timer]:
    rows = await session.scalars(
        select(Timer).where(
            Timer.kind == kind,
            Timer.subject_id == subject_id,
            Timer.fired_at.is_(None),
            Timer.cancelled_at.is_(None),
        )
    )
    return list(rows.all())


@actor("timers.fire", queue=Queue.high, max_retries=20)
async def fire(job: JobContext, *, timer_id: str) -> None:
    session = job.session
    now = utcnow()
    claimed = await session.execute(
        update(Timer)
        .where(
            Timer.id == uuid.UUID(timer_id),
            Timer.fired_at.is_(None),
            Timer.cancelled_at.is_(None),
            Timer.due_at <= now,
        )
        .values(fired_at=now, attempts=Timer.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if not getattr(claimed, "rowcount", 0):
        # Fired already (a duplicate message), cancelled, or moved later (its new message will come).
        return
    timer = await session.scalar(select(Timer).where(Timer.id == uuid.UUID(timer_id)))
    assert timer is not None
    handler = HANDLERS.get(timer.kind)
    if handler is None:
        log.error("no handler for timer kind", kind=timer.kind, timer_id=timer_id)
        return
    job.info["timer_lateness_seconds"] = (now - timer.due_at).total_seconds()
    await handler(job, timer)


@actor("timers.sweep", queue=Queue.high, tenant_scoped=False, max_retries=0)
async def sweep(job: JobContext) -> None:
    """Re-queue overdue timers. Reads across tenants, so it lists ids as the owner and hands each one to a
    tenant-scoped ``timers.fire``."""
    cutoff = utcnow() - SWEEP_GRACE
    async with job.database.dangerously_unscoped_session() as owner:
        rows = (
            await owner.execute(
                select(Timer.tenant_id, Timer.id)
                .where(Timer.fired_at.is_(None), Timer.cancelled_at.is_(None), Timer.due_at <= cutoff)
                .order_by(Timer.due_at)
                .limit(SWEEP_BATCH)
            )
        ).all()
    for tenant_id, timer_id in rows:
        enqueue(job.session, "timers.fire", tenant_id=tenant_id, timer_id=timer_id)
    if rows:
        log.info("timer sweep re-queued overdue timers", count=len(rows))


periodic("timers.sweep", every=SWEEP_EVERY, actor_name="timers.sweep")
