"""Durable timers (kit.timers): the sweep re-queues an overdue timer once per lease (not once per sweep), the
delayed message leases its timer, PostgreSQL sweeps skip rows another worker holds, and a failing handler
leaves nothing behind but its error and a back-off."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import select, update
from tests.conftest import Backend
from tests.escalations.helpers import drain, run_jobs
from tests.support.desk import Desk

from msp_platform.authz.service import system_tenant_context
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.kit import timers
from msp_platform.kit.time import utcnow
from msp_platform.models.timer import Timer
from msp_platform.state import services_of
from msp_platform.worker.outbox import PENDING_KEY, send_after_commit

BOOM = "tests.boom"
calls: list[uuid.UUID] = []


async def _boom(job: Any, timer: Timer) -> None:
    calls.append(timer.id)
    raise RuntimeError("the handler broke")


@pytest.fixture
def boom_handler() -> Iterator[None]:
    timers.HANDLERS[BOOM] = _boom
    calls.clear()
    yield
    timers.HANDLERS.pop(BOOM, None)


async def schedule(app: Litestar, desk: Desk, kind: str, due_in: timedelta) -> uuid.UUID:
    """A timer through ``timers.schedule`` in a unit of work, its delayed message sent after the commit."""
    services = services_of(app)
    async with services.db.session() as session:
        await set_tenant_context(session, system_tenant_context(desk.tenant.id))
        timer = await timers.schedule(
            session,
            tenant_id=desk.tenant.id,
            kind=kind,
            subject_id=uuid.uuid4(),
            key="k",
            due_at=utcnow() + due_in,
        )
        pending = list(session.info.pop(PENDING_KEY))
        await session.commit()
    await send_after_commit(services.broker, services.db.sessionmaker, pending)
    return timer.id


async def row(db: Database, timer_id: uuid.UUID) -> Timer:
    async with db.dangerously_unscoped_session() as session:
        found = await session.scalar(select(Timer).where(Timer.id == timer_id))
    assert found is not None
    return found


async def overdue(db: Database, timer_id: uuid.UUID, *, lease: timedelta | None) -> None:
    now = utcnow()
    async with db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Timer)
            .where(Timer.id == timer_id)
            .values(due_at=now - timedelta(minutes=1), lease_until=None if lease is None else now + lease)
        )
        await session.commit()


async def claim(db: Database) -> set[uuid.UUID]:
    async with db.dangerously_unscoped_session() as session:
        claimed = await timers.claim_overdue(session)
        await session.commit()
    return {timer_id for _, timer_id in claimed}


async def test_the_delayed_message_leases_its_timer(app: Litestar, desk: Desk, owner_db: Database) -> None:
    timer_id = await schedule(app, desk, "tests.never", timedelta(minutes=10))
    timer = await row(owner_db, timer_id)
    assert timer.lease_until == timer.due_at + timers.DELIVERY_GRACE
    # Due, but within the grace its delayed message has to arrive: the sweep leaves it alone.
    await overdue(owner_db, timer_id, lease=timedelta(seconds=3))
    assert timer_id not in await claim(owner_db)


async def test_an_overdue_timer_is_requeued_once_per_lease(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    timer_id = await schedule(app, desk, "tests.never", timedelta(minutes=10))
    await overdue(owner_db, timer_id, lease=None)
    assert timer_id in await claim(owner_db)
    for _ in range(5):  # later sweeps while the re-queued message waits in a backlog
        assert timer_id not in await claim(owner_db)
    leased = await row(owner_db, timer_id)
    assert leased.lease_until is not None
    assert leased.lease_until > utcnow() + timers.SWEEP_LEASE - timedelta(seconds=5)
    await overdue(owner_db, timer_id, lease=timedelta(seconds=-1))  # the lease ran out, nothing fired it
    assert timer_id in await claim(owner_db)
    # Long overdue (the workers are far behind): it is left alone longer before the next re-queue.
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Timer)
            .where(Timer.id == timer_id)
            .values(due_at=utcnow() - timedelta(minutes=10), lease_until=None)
        )
        await session.commit()
    assert timer_id in await claim(owner_db)
    backlog = await row(owner_db, timer_id)
    assert backlog.lease_until is not None
    assert backlog.lease_until > utcnow() + timers.MAX_SWEEP_LEASE - timedelta(seconds=5)


async def test_a_postgres_sweep_skips_timers_another_transaction_holds(
    backend: Backend, app: Litestar, desk: Desk, owner_db: Database
) -> None:
    if not backend.is_postgres:
        pytest.skip("SKIP LOCKED is PostgreSQL's")
    timer_id = await schedule(app, desk, "tests.never", timedelta(minutes=10))
    await overdue(owner_db, timer_id, lease=None)
    async with owner_db.dangerously_unscoped_session() as holder:
        # A worker firing it right now holds its row.
        await holder.execute(select(Timer).where(Timer.id == timer_id).with_for_update())
        second = await asyncio.wait_for(claim(owner_db), timeout=10)
        assert timer_id not in second
        await holder.rollback()
    assert timer_id in await claim(owner_db)


async def test_a_failing_handler_records_its_error_and_backs_off(
    app: Litestar, desk: Desk, owner_db: Database, boom_handler: None
) -> None:
    timer_id = await schedule(app, desk, BOOM, timedelta(seconds=-1))
    await drain(app)
    assert calls == [timer_id], "one try, no retry storm"
    failed = await row(owner_db, timer_id)
    assert failed.fired_at is None
    assert failed.attempts == 1
    assert failed.last_error == "RuntimeError: the handler broke"
    assert failed.lease_until is not None
    assert timedelta(0) < failed.lease_until - utcnow() <= timers.backoff(1)
    # Not before its back-off ends...
    await run_jobs(app, ("timers.sweep", {}))
    assert calls == [timer_id]
    # ...then the sweep tries again, and the next back-off is longer.
    await overdue(owner_db, timer_id, lease=timedelta(seconds=-1))
    await run_jobs(app, ("timers.sweep", {}))
    assert calls == [timer_id, timer_id]
    again = await row(owner_db, timer_id)
    assert again.attempts == 2
    assert again.lease_until is not None
    assert again.lease_until - utcnow() > timers.backoff(1)
    assert timers.backoff(30) == timers.MAX_BACKOFF
