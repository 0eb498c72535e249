"""Durable timers (SLA warnings and breaches, escalation levels): a row with ``due_at`` is the truth.

- ``schedule`` upserts the row and queues a *delayed* job for its due time (sent after commit like any job),
  and leases the timer to that message until ``due_at + DELIVERY_GRACE``.
- ``timers.fire`` claims the row with a compare-and-set on ``fired_at`` and runs the kind's handler in the
  same transaction: the handler's effects and the claim commit together, so a timer fires exactly once
  however many duplicate messages or workers race for it. A handler that fails is rolled back (nothing of
  it stays) and the timer records ``last_error`` and backs off (its lease) before the sweep retries it.
- ``timers.sweep`` (every few seconds, once across processes) re-queues what is overdue, unfired and not
  leased — the broker lost the delayed message, was down at the time, or the worker died — and leases
  each timer it re-queues (``UPDATE ... RETURNING``; ``SKIP LOCKED`` on PostgreSQL), so a backlog of
  overdue timers is re-queued once per lease, never once per sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.models.timer import Timer
from msp_platform.worker.context import JobContext
from msp_platform.worker.outbox import PENDING_KEY, enqueue
from msp_platform.worker.registry import Queue, actor, periodic

log = get_logger(__name__)
Handler = Callable[[JobContext, Timer], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}
SWEEP_EVERY = timedelta(seconds=2)
# The delayed message is due at ``due_at``; the sweep leaves it this long to arrive before sending another.
DELIVERY_GRACE = timedelta(seconds=15)
# A timer the sweep re-queued is left at least this long (its message may wait in a backlog) before it is
# re-queued again; the longer it has been overdue, the longer it is left, up to MAX_SWEEP_LEASE.
SWEEP_LEASE = timedelta(seconds=30)
MAX_SWEEP_LEASE = timedelta(minutes=5)
SWEEP_BATCH = 2000
# A failing handler is retried after 2 s, 4 s, 8 s, ... at most this far apart.
MAX_BACKOFF = timedelta(minutes=5)
# Kept for callers of the earlier name.
SWEEP_GRACE = DELIVERY_GRACE


def _delivery_lease(due_at: datetime) -> datetime:
    """Until when the message sent for a timer due at ``due_at`` has to arrive (one due already is sent at
    the commit, so its grace starts now)."""
    return max(due_at, utcnow()) + DELIVERY_GRACE


def _sweep_lease(now: datetime) -> Any:
    """Until when a timer the sweep re-queues now is left alone (a SQL expression over its ``due_at``): about
    as long as it has been overdue, from ``SWEEP_LEASE`` up to ``MAX_SWEEP_LEASE`` in doublings. A backlog in
    the broker (workers behind) then costs a few re-queues per timer, never one per sweep."""
    steps: list[tuple[Any, datetime]] = []
    step = SWEEP_LEASE
    while step < MAX_SWEEP_LEASE:
        steps.append((Timer.due_at > now - step, now + step))
        step *= 2
    return case(*steps, else_=now + MAX_SWEEP_LEASE)


def backoff(attempts: int) -> timedelta:
    """How long a timer whose handler failed ``attempts`` times waits before the next try."""
    return min(timedelta(seconds=2 ** min(max(attempts, 1), 16)), MAX_BACKOFF)


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
            lease_until=_delivery_lease(due_at),
        )
        session.add(existing)
        await session.flush()
    elif existing.due_at == due_at and existing.cancelled_at is None and existing.payload == (payload or {}):
        return existing
    else:
        existing.due_at = due_at
        existing.cancelled_at = None
        existing.payload = payload or {}
        existing.lease_until = _delivery_lease(due_at)
    enqueue(session, "timers.fire", tenant_id=tenant_id, timer_id=existing.id, eta=due_at)
    return existing


async def cancel(session: AsyncSession, *, kind: str, subject_id: uuid.UUID, key: str | None = None) -> int:
    """Cancel the subject's waiting timers (one ``key``, or all). A timer that a worker is firing right now
    (its row locked by the claim) is left to that worker: on PostgreSQL the cancel skips it instead of
    waiting, since the firing handler locks the subject next and waiting could deadlock. Handlers re-check
    their subject's state, so a timer fired that way does nothing."""
    waiting = Timer.__table__.alias("waiting")
    ids = select(waiting.c.tenant_id, waiting.c.id).where(
        waiting.c.kind == kind,
        waiting.c.subject_id == subject_id,
        waiting.c.fired_at.is_(None),
        waiting.c.cancelled_at.is_(None),
    )
    if key is not None:
        ids = ids.where(waiting.c.key == key)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    result = await session.execute(
        update(Timer)
        .where(tuple_(Timer.tenant_id, Timer.id).in_(ids))
        .values(cancelled_at=utcnow())
        .execution_options(synchronize_session=False)
    )
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
    wanted = uuid.UUID(timer_id)
    timer: Timer | None = (
        await session.scalars(_claim_statement(), {"timer_id": wanted, "now": now})
    ).one_or_none()
    if timer is None:
        # Fired already (a duplicate message), cancelled, or moved later (its new message will come).
        return
    handler = HANDLERS.get(timer.kind)
    if handler is None:
        log.error("no handler for timer kind", kind=timer.kind, timer_id=timer_id)
        return
    job.info["timer_lateness_seconds"] = (now - timer.due_at).total_seconds()
    try:
        await handler(job, timer)
        await session.flush()
    except Exception as exc:
        # Nothing of the failed attempt stays (its claim included); the timer records why and backs off,
        # and the sweep retries it once the back-off lease ends.
        await session.rollback()
        session.info.pop(PENDING_KEY, None)
        await _record_failure(session, wanted, exc)
        log.exception("timer handler failed", kind=timer.kind, timer_id=timer_id)


@cache
def _claim_statement() -> Any:
    """The claim: a compare-and-set on ``fired_at`` (built once; every timer fires through it)."""
    now: Any = bindparam("now")
    return (
        update(Timer)
        .where(
            Timer.id == bindparam("timer_id"),
            Timer.fired_at.is_(None),
            Timer.cancelled_at.is_(None),
            Timer.due_at <= now,
        )
        .values(fired_at=now, attempts=Timer.attempts + 1)
        .returning(Timer)
        .execution_options(synchronize_session=False)
    )


async def _record_failure(session: AsyncSession, timer_id: uuid.UUID, exc: Exception) -> None:
    now = utcnow()
    row: Timer | None = await session.scalar(select(Timer).where(Timer.id == timer_id))
    if row is None or row.fired_at is not None:
        return
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    row.lease_until = now + backoff(row.attempts)
    await session.flush()


async def claim_overdue(
    session: AsyncSession, *, now: datetime | None = None, limit: int = SWEEP_BATCH
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Lease up to ``limit`` overdue, unfired, unleased timers for a re-queue; returns (tenant, timer) ids.
    An owner (unscoped) session: the sweep reads across tenants. Rows that a worker is firing right now
    are locked; PostgreSQL skips them (SKIP LOCKED) instead of waiting."""
    now = now or utcnow()
    waiting = Timer.__table__.alias("waiting")
    candidates = (
        select(waiting.c.tenant_id, waiting.c.id)
        .where(
            waiting.c.fired_at.is_(None),
            waiting.c.cancelled_at.is_(None),
            waiting.c.due_at <= now,
            or_(
                waiting.c.lease_until <= now,
                and_(waiting.c.lease_until.is_(None), waiting.c.due_at <= now - DELIVERY_GRACE),
            ),
        )
        .order_by(waiting.c.due_at)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    rows = await session.execute(
        update(Timer)
        .where(tuple_(Timer.tenant_id, Timer.id).in_(candidates))
        .values(lease_until=_sweep_lease(now))
        .returning(Timer.tenant_id, Timer.id)
        .execution_options(synchronize_session=False)
    )
    return [(r[0], r[1]) for r in rows.all()]


@actor("timers.sweep", queue=Queue.high, tenant_scoped=False, max_retries=0)
async def sweep(job: JobContext) -> None:
    """Re-queue overdue timers. Reads across tenants, so it leases ids as the owner and hands each one to a
    tenant-scoped ``timers.fire``."""
    async with job.database.dangerously_unscoped_session() as owner:
        rows = await claim_overdue(owner)
        await owner.commit()
    for tenant_id, timer_id in rows:
        enqueue(job.session, "timers.fire", tenant_id=tenant_id, timer_id=timer_id)
    if rows:
        log.info("timer sweep re-queued overdue timers", count=len(rows))


periodic("timers.sweep", every=SWEEP_EVERY, actor_name="timers.sweep")


async def arm_many(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    key: str,
    due: dict[uuid.UUID, datetime | None],
    payload: dict[str, Any] | None = None,
) -> None:
    """One "look again" timer per subject under ``key`` (the SLA engine's): armed for the subject's instant
    — re-armed even if it already fired, since its handler recomputes what happened and decides —
    or cancelled when the instant is None. In batches: two reads for all the subjects. A timer a worker is
    firing right now (its row locked by the claim) is left to that worker (PostgreSQL skips it instead of
    waiting, as ``cancel`` does): its handler re-plans the subject once it gets the subject's lock."""
    if not due:
        return
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    which = (Timer.kind == kind, Timer.key == key, Timer.subject_id.in_(list(due)))
    stmt = select(Timer).where(*which)
    if postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    found = {t.subject_id: t for t in (await session.scalars(stmt)).all()}
    busy: set[uuid.UUID] = set()
    if postgres and len(found) < len(due):
        busy = set((await session.scalars(select(Timer.subject_id).where(*which))).all()) - set(found)
    now = utcnow()
    for subject_id, at in due.items():
        timer = found.get(subject_id)
        if subject_id in busy:
            continue
        if at is None:
            if timer is not None and timer.fired_at is None and timer.cancelled_at is None:
                timer.cancelled_at = now
            continue
        if timer is None:
            timer = Timer(
                id=new_id(),
                tenant_id=tenant_id,
                kind=kind,
                subject_id=subject_id,
                key=key,
                due_at=at,
                payload=payload or {},
                lease_until=_delivery_lease(at),
            )
            session.add(timer)
        elif timer.due_at == at and timer.fired_at is None and timer.cancelled_at is None:
            continue
        else:
            timer.due_at = at
            timer.fired_at = None
            timer.cancelled_at = None
            timer.payload = payload or {}
            timer.lease_until = _delivery_lease(at)
        enqueue(session, "timers.fire", tenant_id=tenant_id, timer_id=timer.id, eta=at)
