"""The worker runtime: broker by URL, actors bound to it, the per-job unit of work, scheduler and relay.

- ``MSP_BROKER_URL`` unset: in-process (a StubBroker consumed by worker threads inside the API process);
  ``redis://``: Redis; ``amqp://``: RabbitMQ.
- Every job gets its own session on an engine owned by the worker's event loop, the tenant context named
  by its message, and commits when it returns; jobs it enqueues are sent after that commit.
- The scheduler loop (periodic jobs, once across processes) and the outbox relay run in every worker process
  and in the embedded API process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage

from msp_platform.audit.service import set_actor
from msp_platform.authz.service import system_tenant_context
from msp_platform.config import BrokerKind, Settings
from msp_platform.db.engine import Database
from msp_platform.db.session import CTX_KEY
from msp_platform.kit.logging import get_logger
from msp_platform.worker.context import JobContext
from msp_platform.worker.outbox import PENDING_KEY, flush_acks, relay_pending, send_after_commit
from msp_platform.worker.registry import ACTORS, ActorSpec, load_task_modules
from msp_platform.worker.scheduler import run_due_periodic_jobs

log = get_logger(__name__)


def create_broker(settings: Settings) -> dramatiq.Broker:
    kind = settings.broker_kind
    broker: dramatiq.Broker
    if kind is BrokerKind.in_process:
        broker = StubBroker()
        broker.emit_after("process_boot")
    elif kind is BrokerKind.redis:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=settings.broker_url, namespace=settings.broker_namespace)  # type: ignore[no-untyped-call]
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    return broker


class WorkerRuntime:
    """What jobs of one broker need: settings, the broker, and one Database per event loop (engines are
    loop-bound). Actors are bound to the broker as closures over their runtime, so several runtimes (an API
    app and a test's Redis worker, say) can live in one process."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker) -> None:
        self.settings = settings
        self.broker = broker
        self._databases: dict[int, Database] = {}
        self._lock = threading.Lock()

    @classmethod
    def install(cls, settings: Settings, broker: dramatiq.Broker) -> WorkerRuntime:
        load_task_modules()
        runtime = cls(settings, broker)
        broker.add_middleware(_DisposeDatabases(runtime))
        bind_actors(broker, runtime)
        return runtime

    def database(self) -> Database:
        loop = asyncio.get_running_loop()
        with self._lock:
            db = self._databases.get(id(loop))
            if db is None:
                db = Database.create(self.settings)
                self._databases[id(loop)] = db
            return db

    def adopt(self, database: Database) -> None:
        """Use an existing Database for the current loop (the API process shares its own)."""
        self._databases[id(asyncio.get_running_loop())] = database

    async def dispose_current(self) -> None:
        await flush_acks()
        with self._lock:
            db = self._databases.pop(id(asyncio.get_running_loop()), None)
        if db is not None:
            await db.dispose()


class _DisposeDatabases(dramatiq.Middleware):
    """Close the worker loop's connection pool before Dramatiq stops that loop."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from dramatiq.asyncio import get_event_loop_thread

        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            try:
                loop_thread.run_coroutine(self.runtime.dispose_current())
            except Exception as exc:  # shutting down regardless
                log.warning("could not dispose worker database", error=str(exc))


async def run_job(runtime: WorkerRuntime, spec: ActorSpec, kwargs: dict[str, Any]) -> None:
    db = runtime.database()
    tenant_raw = kwargs.pop("tenant_id", None)
    tenant_id = uuid.UUID(str(tenant_raw)) if tenant_raw else None
    if spec.tenant_scoped and tenant_id is None:
        raise ValueError(f"{spec.name}: message has no tenant_id")
    message = CurrentMessage.get_current_message()
    session = db.session()
    session.info[CTX_KEY] = system_tenant_context(tenant_id) if tenant_id else None
    set_actor(session, f"job:{spec.name}")
    try:
        ctx = JobContext(
            session=session,
            settings=runtime.settings,
            message_id=message.message_id if message else "direct",
            tenant_id=tenant_id,
            database=db,
            retries=int(message.options.get("retries", 0)) if message else 0,
        )
        await spec.fn(ctx, **kwargs)
        pending = list(session.info.pop(PENDING_KEY, []))
        await session.commit()
    except BaseException:
        await session.rollback()
        session.info.pop(PENDING_KEY, None)
        raise
    finally:
        await session.close()
    await send_after_commit(runtime.broker, db.sessionmaker, pending)


def _make_actor_fn(runtime: WorkerRuntime, spec: ActorSpec) -> Callable[..., Awaitable[None]]:
    async def _actor(**kwargs: Any) -> None:
        await run_job(runtime, spec, kwargs)

    _actor.__name__ = spec.name.replace(".", "_")
    _actor.__qualname__ = _actor.__name__
    return _actor


def queue_name(namespace: str, queue: str) -> str:
    # A namespace other than the default prefixes queue names, so two installations (or test runs) can share
    # a RabbitMQ server; Redis additionally namespaces its keys.
    return queue if namespace == "msp" else f"{namespace}.{queue}"


def bind_actors(broker: dramatiq.Broker, runtime: WorkerRuntime) -> None:
    for spec in ACTORS.values():
        if spec.name in broker.actors:
            continue
        dramatiq.actor(  # type: ignore[call-overload]
            _make_actor_fn(runtime, spec),
            actor_name=spec.name,
            queue_name=queue_name(runtime.settings.broker_namespace, spec.queue.value),
            broker=broker,
            max_retries=spec.max_retries,
            time_limit=spec.time_limit_ms,
            min_backoff=1_000,
            max_backoff=300_000,
        )


class BackgroundLoops:
    """Scheduler ticks and the outbox relay, as asyncio tasks on the loop that owns ``db``."""

    def __init__(self, runtime: WorkerRuntime, db: Database, *, tick: float = 1.0) -> None:
        self.runtime = runtime
        self.db = db
        self.tick = tick
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._heartbeat = 0.0

    def start(self) -> None:
        self._heartbeat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="msp-background-loops")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)

    async def run_once(self) -> None:
        async with self.db.session() as session:
            session.info["unscoped"] = True
            pending = await run_due_periodic_jobs(session)
            queued = list(session.info.pop(PENDING_KEY, []))
            await session.commit()
        await send_after_commit(self.runtime.broker, self.db.sessionmaker, queued)
        if pending:
            log.debug("periodic jobs enqueued", jobs=pending)
        async with self.db.session() as session:
            session.info["unscoped"] = True
            await relay_pending(self.runtime.broker, session)
            await session.commit()

    def problem(self) -> str | None:
        """Why the loop is not doing its work (for readiness), or None."""
        if self._task is None:
            return "not started"
        if self._task.done():
            if self._task.cancelled():
                return "stopped (cancelled)"
            exc = self._task.exception()
            return f"stopped ({type(exc).__name__}: {exc})" if exc else "stopped"
        stalled = time.monotonic() - self._heartbeat
        if stalled > max(60.0, 20 * self.tick):
            return f"stalled: no iteration finished for {stalled:.0f} s"
        return None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the loop must outlive a database or broker outage
                log.warning("background loop iteration failed", error=str(exc))
            # An iteration that failed still finished: an outage shows in the database/broker checks.
            self._heartbeat = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.tick)


class InProcessWorker:
    """Embedded mode: Dramatiq worker threads inside the API process."""

    def __init__(self, broker: dramatiq.Broker, threads: int) -> None:
        self.worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
        self._started = False

    def start(self) -> None:
        self.worker.start()
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return  # stopping twice would shut Dramatiq's event-loop thread down twice
        self._started = False
        self.worker.stop(timeout=10_000)

    def problem(self) -> str | None:
        """Why jobs would not run (for readiness), or None: every worker and consumer thread must be alive."""
        if not self._started:
            return "not running"
        workers = [t for t in self.worker.workers if t.is_alive()]
        consumers = [t for t in self.worker.consumers.values() if t.is_alive()]
        if (
            len(workers) < self.worker.worker_threads
            or not consumers
            or (len(consumers) < len(self.worker.consumers))
        ):
            return (
                f"{len(workers)}/{self.worker.worker_threads} worker threads and "
                f"{len(consumers)}/{len(self.worker.consumers)} queue consumers alive"
            )
        return None

    def describe(self) -> str:
        return f"ok ({self.worker.worker_threads} threads, {len(self.worker.consumers)} queues)"
