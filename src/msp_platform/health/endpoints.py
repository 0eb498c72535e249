"""Liveness and readiness (database reachable and migrated, broker reachable)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from sqlalchemy import text

from msp_platform.config import BrokerKind
from msp_platform.db import migrate
from msp_platform.kit.errors import PROBLEM_MEDIA_TYPE, ServiceUnavailable
from msp_platform.kit.problems import problem_body
from msp_platform.state import AppServices

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


class HealthController(Controller):
    tags = ["Health"]
    opt = {"public": True, "idempotent": False}
    include_in_schema = True

    @get("/healthz", summary="Liveness: the process serves requests")
    async def healthz(self) -> HealthStatus:
        return HealthStatus(status="ok")

    @get("/readyz", summary="Readiness: database (migrated) and broker reachable")
    async def readyz(self, state: State) -> Response[Any]:
        services: AppServices = state.services
        checks: dict[str, str] = {}
        failed = False
        probes: dict[str, Callable[[], Awaitable[str]]] = {
            "database": lambda: _check_database(services),
            "broker": lambda: anyio.to_thread.run_sync(_check_broker_sync, services),
        }
        for name, run in probes.items():
            try:
                checks[name] = await asyncio.wait_for(run(), timeout=CHECK_TIMEOUT)
            except Exception as exc:
                failed = True
                checks[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
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
