"""Dramatiq runtime: outbox (enqueue after commit, dropped on rollback, relayed when the broker was down),
tenant-scoped jobs, the once-only scheduler; on the in-process broker and on real Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import anyio.to_thread
import dramatiq
import pytest
from litestar import Litestar
from sqlalchemy import select, update
from tests.conftest import Backend, Factory

from msp_platform.authz.service import system_tenant_context
from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.kit.time import utcnow
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.scheduled_job import ScheduledJob
from msp_platform.models.user import User
from msp_platform.state import services_of
from msp_platform.worker import outbox
from msp_platform.worker.context import JobContext
from msp_platform.worker.outbox import PENDING_KEY, enqueue, relay_pending, send_after_commit
from msp_platform.worker.registry import Queue, actor
from msp_platform.worker.runtime import WorkerRuntime, create_broker
from msp_platform.worker.scheduler import run_due_periodic_jobs

SEEN_TENANTS: list[uuid.UUID | None] = []


@actor("tests.rename_user", queue=Queue.default, max_retries=0)
async def rename_user(job: JobContext, *, user_id: str, name: str) -> None:
    SEEN_TENANTS.append(job.tenant_id)
    # Tenant-scoped like a request: the ORM filter and RLS apply to the job's session.
    user = await job.session.scalar(select(User).where(User.id == uuid.UUID(user_id)))
    if user is not None:
        user.name = name


@contextmanager
def running(broker: dramatiq.Broker, threads: int = 2) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=10_000)


async def queue_rename(
    db: Database, tenant_id: uuid.UUID, user_id: uuid.UUID, name: str, *, commit: bool = True
) -> list[OutboxMessage]:
    async with db.session() as session:
        await set_tenant_context(session, system_tenant_context(tenant_id))
        enqueue(session, "tests.rename_user", tenant_id=tenant_id, user_id=user_id, name=name)
        pending = list(session.info.pop(PENDING_KEY))
        if commit:
            await session.commit()
        else:
            await session.rollback()
    return pending


async def user_name(owner: Database, user_id: uuid.UUID) -> str | None:
    async with owner.dangerously_unscoped_session() as session:
        name: str | None = await session.scalar(select(User.name).where(User.id == user_id))
    return name


async def wait_for(predicate: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


class TestInProcess:
    async def test_job_runs_after_commit_with_its_tenant(
        self, app: Litestar, factory: Factory, owner_db: Database
    ) -> None:
        services = services_of(app)
        tenant = await factory.tenant()
        person = await factory.user(tenant)
        pending = await queue_rename(services.db, tenant.id, person.id, "renamed-by-job")
        await send_after_commit(services.broker, services.db.sessionmaker, pending)
        with running(services.broker):
            await anyio.to_thread.run_sync(services.broker.join, "default")
        assert await user_name(owner_db, person.id) == "renamed-by-job"
        assert tenant.id in SEEN_TENANTS
        assert pending[0].id.version == 7, "outbox ids are UUIDv7 like every other key"
        await outbox.flush_acks()
        async with owner_db.dangerously_unscoped_session() as session:
            row = await session.get(OutboxMessage, pending[0].id)
        assert row is not None
        assert row.sent_at is not None

    async def test_rollback_drops_the_job(self, app: Litestar, factory: Factory) -> None:
        services = services_of(app)
        tenant = await factory.tenant()
        person = await factory.user(tenant)
        pending = await queue_rename(services.db, tenant.id, person.id, "never", commit=False)
        async with factory.db.dangerously_unscoped_session() as session:
            assert await session.get(OutboxMessage, pending[0].id) is None

    async def test_a_job_cannot_reach_another_tenant(
        self, app: Litestar, factory: Factory, owner_db: Database
    ) -> None:
        services = services_of(app)
        mine, theirs = await factory.tenant(), await factory.tenant()
        victim = await factory.user(theirs)
        # A message naming tenant A but B's user: the job's scoped session does not find the row.
        pending = await queue_rename(services.db, mine.id, victim.id, "hijacked")
        await send_after_commit(services.broker, services.db.sessionmaker, pending)
        with running(services.broker):
            await anyio.to_thread.run_sync(services.broker.join, "default")
        assert await user_name(owner_db, victim.id) != "hijacked"

    async def test_the_relay_sends_what_the_broker_refused(
        self, app: Litestar, factory: Factory, owner_db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        services = services_of(app)
        broker = services.broker
        assert broker is not None
        tenant = await factory.tenant()
        person = await factory.user(tenant)

        def refuse(*_: Any, **__: Any) -> None:
            raise ConnectionError("broker down")

        monkeypatch.setattr(broker, "enqueue", refuse)
        pending = await queue_rename(services.db, tenant.id, person.id, "relayed")
        await send_after_commit(broker, services.db.sessionmaker, pending)
        async with owner_db.dangerously_unscoped_session() as session:
            assert (await session.get(OutboxMessage, pending[0].id)).sent_at is None  # type: ignore[union-attr]
            # Earlier tests of the session leave unsent messages (their jobs never ran); the relay takes the
            # oldest first and stops at the first refusal, so this test's message must be the only one.
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None), OutboxMessage.id != pending[0].id)
                .values(sent_at=utcnow())
            )
            await session.commit()
        # Still down: the relay backs off and records the attempt.
        monkeypatch.setattr(outbox, "RELAY_GRACE", timedelta(0))
        async with services.db.session() as session:
            session.info["unscoped"] = True
            assert await relay_pending(broker, session) == 0
            await session.commit()
        async with owner_db.dangerously_unscoped_session() as session:
            row = await session.get(OutboxMessage, pending[0].id)
            assert row is not None
            assert row.attempts == 1
            assert "broker down" in (row.last_error or "")
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row.id).values(available_at=utcnow())
            )
            await session.commit()
        # Back up: the relay sends it and the job runs.
        monkeypatch.undo()
        monkeypatch.setattr(outbox, "RELAY_GRACE", timedelta(0))
        async with services.db.session() as session:
            session.info["unscoped"] = True
            assert await relay_pending(broker, session) >= 1
            await session.commit()
        with running(broker):
            await anyio.to_thread.run_sync(broker.join, "default")
        assert await user_name(owner_db, person.id) == "relayed"


class TestScheduler:
    async def test_concurrent_schedulers_run_a_periodic_job_once(
        self, app: Litestar, owner_db: Database
    ) -> None:
        services = services_of(app)
        async with owner_db.dangerously_unscoped_session() as session:
            await run_due_periodic_jobs(session)  # make sure the rows exist
            await session.execute(
                update(ScheduledJob)
                .where(ScheduledJob.name == "platform.purge_expired")
                .values(next_run_at=utcnow() - timedelta(minutes=5))
            )
            await session.commit()

        async def one_scheduler() -> list[str]:
            async with services.db.session() as session:
                session.info["unscoped"] = True
                started = await run_due_periodic_jobs(session)
                session.info.pop(PENDING_KEY, None)
                await asyncio.sleep(0.05)
                await session.commit()
            return started

        results = await asyncio.gather(*(one_scheduler() for _ in range(4)))
        assert sum(r.count("platform.purge_expired") for r in results) == 1
        async with owner_db.dangerously_unscoped_session() as session:
            row = await session.get(ScheduledJob, "platform.purge_expired")
        assert row is not None
        assert row.next_run_at > utcnow() + timedelta(minutes=50)


# --- real brokers -------------------------------------------------------------------------------------------


@pytest.fixture
async def real_runtime(request: pytest.FixtureRequest, backend: Backend) -> AsyncIterator[WorkerRuntime]:
    url: str = request.param
    namespace = f"msp-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(**{**backend.settings.model_dump(), "broker_url": url, "broker_namespace": namespace})
    try:
        broker = create_broker(settings)
        if url.startswith("redis"):
            broker.client.ping()
        else:
            broker.channel  # noqa: B018 - opens the connection
    except Exception as exc:
        message = f"broker {url} not reachable: {exc}"
        if os.environ.get("MSP_REQUIRE_BROKERS") == "1":
            pytest.fail(message + " and MSP_REQUIRE_BROKERS=1")
        pytest.skip(message)
    runtime = WorkerRuntime.install(settings, broker)
    yield runtime
    if url.startswith("redis"):
        broker.flush_all()
    else:
        for queue in list(broker.get_declared_queues()):
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                broker.channel.queue_delete(name)
    broker.close()


@pytest.mark.broker
@pytest.mark.parametrize(
    "real_runtime",
    ["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672/%2F"],
    indirect=True,
    ids=["redis", "rabbitmq"],
)
async def test_end_to_end_on_a_real_broker(
    real_runtime: WorkerRuntime, factory: Factory, owner_db: Database
) -> None:
    tenant = await factory.tenant()
    person = await factory.user(tenant)
    db = Database.create(real_runtime.settings)
    try:
        pending = await queue_rename(db, tenant.id, person.id, "via-real-broker")
        await send_after_commit(real_runtime.broker, db.sessionmaker, pending)
        # A delayed message through the broker's delay queue as well.
        async with db.session() as session:
            await set_tenant_context(session, system_tenant_context(tenant.id))
            enqueue(
                session,
                "tests.rename_user",
                tenant_id=tenant.id,
                user_id=person.id,
                name="delayed",
                eta=utcnow() + timedelta(seconds=1),
            )
            delayed = list(session.info.pop(PENDING_KEY))
            await session.commit()
        with running(real_runtime.broker):

            async def renamed(expected: str) -> bool:
                return await user_name(owner_db, person.id) == expected

            await wait_for(lambda: renamed("via-real-broker"))
            await send_after_commit(real_runtime.broker, db.sessionmaker, delayed)
            await wait_for(lambda: renamed("delayed"))
    finally:
        await db.dispose()
