"""Escalations on a real Redis broker with separate worker processes: exactly once under duplicate
delivery and concurrent workers, and firing after a broker outage."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from httpx import AsyncClient
from sqlalchemy import func, select, update
from tests.conftest import Backend, Factory, serving

from msp_platform.app import create_app
from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import IncidentEvent
from msp_platform.models.oncall import Escalation, Page
from msp_platform.models.timer import Timer
from msp_platform.worker.runtime import WorkerRuntime, create_broker

pytestmark = [pytest.mark.broker, pytest.mark.slow]
REDIS = "redis://127.0.0.1:6379/0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        message = f"Redis not reachable at {url}: {exc}"
        if os.environ.get("MSP_REQUIRE_BROKERS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _env(settings: Settings) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MSP_")},
        "MSP_DATABASE_URL": settings.effective_database_url,
        "MSP_DATABASE_OWNER_URL": settings.effective_owner_url,
        "MSP_VAR_DIR": str(settings.var_dir),
        "MSP_SECRET_KEY": "test-secret-key",
        "MSP_BROKER_URL": settings.broker_url,
        "MSP_BROKER_NAMESPACE": settings.broker_namespace,
        "MSP_LOG_LEVEL": "WARNING",
        "MSP_ARGON2_PROFILE": "test",
    }


@contextmanager
def workers(settings: Settings, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "msp_platform", "worker", "--threads", "4"],
            env=_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[AsyncClient]:
    async with serving(create_app(settings)) as http:
        yield http


async def wait_until(check: Any, within: float = 40.0) -> None:
    import anyio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await anyio.sleep(0.25)
    raise AssertionError("not reached in time")


async def setup_tenant(factory: Factory, http: AsyncClient) -> tuple[Any, dict[str, str], Any, Any]:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    agent = await factory.staff(tier=1, grants=[tenant])
    l2 = await factory.staff(tier=2, grants=[tenant])
    local = Factory(factory.db, http)
    agent_headers = await local.headers(agent, tenant=tenant)
    policy = {
        "name": "P1",
        "triggers": [{"type": "incident_created", "priorities": [1]}],
        "levels": [
            {"delay_minutes": 0, "targets": [{"kind": "person", "staff_id": str(agent.id)}]},
            {"delay_minutes": 10, "targets": [{"kind": "person", "staff_id": str(l2.id)}]},
        ],
    }
    created = await http.post("/api/v1/escalation-policies", json=policy, headers=agent_headers)
    assert created.status_code == 201, created.text
    return tenant, await local.headers(admin), agent, l2


async def count_pages(db: Database, incident_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, int, int]]:
    async with db.dangerously_unscoped_session() as session:
        rows = await session.execute(
            select(Page.incident_id, Page.level, func.count())
            .where(Page.incident_id.in_(incident_ids))
            .group_by(Page.incident_id, Page.level)
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_exactly_once_with_duplicates_and_two_workers(
    backend: Backend, factory: Factory, owner_db: Database
) -> None:
    if not backend.is_postgres:
        pytest.skip("runs once, on PostgreSQL")
    _require_redis(REDIS)
    namespace = f"msp-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        **{
            **backend.settings.model_dump(),
            "broker_url": REDIS,
            "broker_namespace": namespace,
            "embedded_worker": False,
        }
    )
    broker = create_broker(settings)
    WorkerRuntime.install(settings, broker)
    try:
        async with api(settings) as http:
            _, admin_headers, _, _ = await setup_tenant(factory, http)
            incidents = []
            for i in range(10):
                response = await http.post(
                    "/api/v1/incidents",
                    json={"title": f"ED down {i}", "impact": 1, "urgency": 1},
                    headers=admin_headers,
                )
                assert response.status_code == 201
                incidents.append(uuid.UUID(response.json()["id"]))
            with workers(settings, 2):

                async def level0_fired() -> bool:
                    return len([r for r in await count_pages(owner_db, incidents) if r[1] == 0]) == len(
                        incidents
                    )

                await wait_until(level0_fired)
                # Every level-1 timer becomes due, and each is delivered eleven times to two competing workers.
                async with owner_db.dangerously_unscoped_session() as session:
                    escalations = (
                        await session.scalars(
                            select(Escalation.id).where(Escalation.incident_id.in_(incidents))
                        )
                    ).all()
                    timers = (
                        await session.execute(
                            select(Timer.tenant_id, Timer.id).where(
                                Timer.subject_id.in_(escalations), Timer.fired_at.is_(None)
                            )
                        )
                    ).all()
                    await session.execute(
                        update(Timer)
                        .where(Timer.id.in_([t[1] for t in timers]))
                        .values(due_at=utcnow() - timedelta(seconds=1))
                    )
                    await session.commit()
                from dramatiq import Message

                for tenant_id, timer_id in timers:
                    for _ in range(11):
                        broker.enqueue(
                            Message(
                                queue_name=broker.get_actor("timers.fire").queue_name,
                                actor_name="timers.fire",
                                args=(),
                                kwargs={"tenant_id": str(tenant_id), "timer_id": str(timer_id)},
                                options={},
                            )
                        )

                async def level1_fired() -> bool:
                    return len([r for r in await count_pages(owner_db, incidents) if r[1] == 1]) == len(
                        incidents
                    )

                await wait_until(level1_fired)
                await anyio.sleep(2)  # let any straggling duplicate run
            pages = await count_pages(owner_db, incidents)
            assert sorted((r[1], r[2]) for r in pages) == [(0, 1)] * 10 + [(1, 1)] * 10
            async with owner_db.dangerously_unscoped_session() as session:
                paged_events = await session.scalar(
                    select(func.count())
                    .select_from(IncidentEvent)
                    .where(IncidentEvent.incident_id.in_(incidents), IncidentEvent.type == "paged")
                )
            assert paged_events == 20
    finally:
        broker.flush_all()
        broker.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A Redis of our own that the test can stop and start (the machine's Redis is shared)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("MSP_REQUIRE_BROKERS") == "1":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    state: dict[str, subprocess.Popen[bytes] | None] = {"proc": None}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop() -> None:
        proc = state["proc"]
        if proc is not None:
            proc.kill()
            proc.wait()
            state["proc"] = None

    start()
    yield f"redis://127.0.0.1:{port}/0", (start, stop)
    stop()


async def test_an_escalation_fires_after_the_broker_comes_back(
    backend: Backend, factory: Factory, owner_db: Database, private_redis: tuple[str, Any]
) -> None:
    """One worker keeps running through a broker outage; the level that falls due during the outage fires
    once the broker is back (the worker's sweep leases it and re-queues it through the outbox)."""
    if not backend.is_postgres:
        pytest.skip("runs once, on PostgreSQL")
    url, (start_redis, stop_redis) = private_redis
    settings = Settings(
        **{
            **backend.settings.model_dump(),
            "broker_url": url,
            "broker_namespace": "outage",
            "embedded_worker": False,
        }
    )
    broker = create_broker(settings)
    WorkerRuntime.install(settings, broker)
    try:
        async with api(settings) as http:
            _, admin_headers, _, l2 = await setup_tenant(factory, http)
            with workers(settings, 1) as (worker,):
                response = await http.post(
                    "/api/v1/incidents",
                    json={"title": "Telemetry down", "impact": 1, "urgency": 1},
                    headers=admin_headers,
                )
                incident = uuid.UUID(response.json()["id"])

                async def level0() -> bool:
                    return any(r[1] == 0 for r in await count_pages(owner_db, [incident]))

                await wait_until(level0)
                # The broker dies (no persistence: the delayed messages it held are gone); the worker runs on.
                stop_redis()
                async with owner_db.dangerously_unscoped_session() as session:
                    escalation = await session.scalar(
                        select(Escalation.id).where(Escalation.incident_id == incident)
                    )
                    due = utcnow() + timedelta(seconds=2)
                    await session.execute(
                        update(Timer)
                        .where(Timer.subject_id == escalation, Timer.fired_at.is_(None))
                        .values(due_at=due, lease_until=due + timedelta(seconds=3))
                    )
                    await session.commit()
                # A request during the outage still succeeds: its jobs wait in the outbox.
                during = await http.post(
                    "/api/v1/incidents", json={"title": "During outage"}, headers=admin_headers
                )
                assert during.status_code == 201
                await anyio.sleep(8)  # the level falls due, and its lease ends, while the broker is down
                assert worker.poll() is None, "the worker survives the outage"
                assert [r for r in await count_pages(owner_db, [incident]) if r[1] == 1] == []
                start_redis()

                async def level1() -> bool:
                    return any(r[1] == 1 for r in await count_pages(owner_db, [incident]))

                await wait_until(level1, within=60)
                assert worker.poll() is None
            async with owner_db.dangerously_unscoped_session() as session:
                page = await session.scalar(select(Page).where(Page.incident_id == incident, Page.level == 1))
                pages = await count_pages(owner_db, [incident])
            assert page is not None
            assert page.staff_id == l2.id
            assert sorted((r[1], r[2]) for r in pages) == [(0, 1), (1, 1)]
    finally:
        with suppress(Exception):  # the private Redis may already be gone
            broker.flush_all()
        broker.close()
