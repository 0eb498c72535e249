"""Liveness and readiness (database reachable and migrated, broker reachable; in embedded mode also the
in-process worker threads and the scheduler loop alive)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get, head
from litestar.datastructures import State
from sqlalchemy import text

from msp_platform.config import BrokerKind
from msp_platform.db import migrate
from msp_platform.kit.errors import PROBLEM_MEDIA_TYPE, ServiceUnavailable
from msp_platform.kit.problems import problem_body
from msp_platform.state import AppServices
from msp_platform.worker.runtime import BackgroundLoops, InProcessWorker

CHECK_TIMEOUT = 3.0


class HealthStatus(msgspec.Struct):
    status: str
    checks: dict[str, str] = {}


async def _check_database(services: AppServices) -> str:
    async with services.db.engine.connect() as conn:
        current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    head = migrate.head_revision(services.settings)
    if current != head:
        raise RuntimeError(f"schema at {current}, code expects {head}: run `msp db upgrade`")
    return "ok"


def _check_broker_sync(services: AppServices) -> str:
    kind = services.settings.broker_kind
    broker: Any = services.broker
    if kind is BrokerKind.in_process:
        return "ok (in-process)"
    if kind is BrokerKind.redis:
        broker.client.ping()
        return "ok (redis)"
    import pika

    params = pika.URLParameters(services.settings.broker_url)
    params.socket_timeout = CHECK_TIMEOUT
    params.blocked_connection_timeout = CHECK_TIMEOUT
    pika.BlockingConnection(params).close()
    return "ok (rabbitmq)"


STATE_WORKER = "in_process_worker"
STATE_LOOPS = "background_loops"


def _embedded_probes(state: State, services: AppServices) -> dict[str, Callable[[], Awaitable[str]]]:
    """Embedded mode: the worker threads and the scheduler/outbox loop live in this process, so readiness
    means they are alive (a dead one would leave every job and timer waiting forever)."""
    if services.settings.broker_kind is not BrokerKind.in_process:
        return {}
    if not services.settings.embedded_worker:
        # Deliberately off (tests, or an operator running no jobs): nothing here is expected to run.
        return {}
    worker: InProcessWorker | None = state.get(STATE_WORKER)
    loops: BackgroundLoops | None = state.get(STATE_LOOPS)

    async def _worker() -> str:
        problem = "not running" if worker is None else worker.problem()
        if problem is not None:
            raise RuntimeError(problem)
        assert worker is not None
        return worker.describe()

    async def _scheduler() -> str:
        problem = "not running" if loops is None else loops.problem()
        if problem is not None:
            raise RuntimeError(problem)
        return "ok (scheduler and outbox relay)"

    return {"worker": _worker, "scheduler": _scheduler}


class HealthController(Controller):
    tags = ["Health"]
    opt = {"public": True, "idempotent": False}
    include_in_schema = True

    @get("/healthz", summary="Liveness: the process serves requests")
    async def healthz(self) -> HealthStatus:
        return HealthStatus(status="ok")

    @head("/healthz", summary="Liveness, without a body (for load balancers that probe with HEAD)")
    async def healthz_head(self) -> None:
        return None

    @get("/readyz", summary="Readiness: database (migrated) and broker reachable")
    async def readyz(self, state: State) -> Response[Any]:
        services: AppServices = state.services
        checks: dict[str, str] = {}
        failed = False
        probes: dict[str, Callable[[], Awaitable[str]]] = {
            "database": lambda: _check_database(services),
            "broker": lambda: anyio.to_thread.run_sync(_check_broker_sync, services),
            **_embedded_probes(state, services),
        }
        for name, run in probes.items():
            try:
                checks[name] = await asyncio.wait_for(run(), timeout=CHECK_TIMEOUT)
            except Exception as exc:
                failed = True
                reason = (
                    str(exc)[:200]
                    if isinstance(exc, RuntimeError)
                    else f"{type(exc).__name__}: {str(exc)[:200]}"
                )
                checks[name] = f"failed: {reason}"
        if not failed:
            return Response(HealthStatus(status="ok", checks=checks))
        error = ServiceUnavailable(
            "Not ready: " + "; ".join(f"{k} {v}" for k, v in checks.items() if "failed" in v)
        )
        body = problem_body(
            type_uri=error.problem.uri,
            title=error.problem.title,
            status=503,
            detail=error.detail,
            instance="/readyz",
            extra={"checks": checks},
        )
        return Response(msgspec.json.encode(body), status_code=503, media_type=PROBLEM_MEDIA_TYPE)
