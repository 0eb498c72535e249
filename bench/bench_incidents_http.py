"""Create and read incidents through the real HTTP stack (granian, PostgreSQL with RLS) and compare with the
same queries behind a bare Litestar handler on asyncpg (bench/bare_litestar.py).

    .venv/bin/python bench/bench_incidents_http.py [--requests 2000] [--concurrency 32] [--workers 1]
        [--with-worker]

Needs the local PostgreSQL (MSP_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres). Creates and
drops its own database. The load generator runs in this process, on the same machine as the servers, so the
absolute numbers are lower than on separate hosts; the ratio between the two stacks is the useful part.

Scenarios (each on both stacks): create, read by id, and the queue's first page of 50.

The platform runs without its embedded worker by default (MSP_EMBEDDED_WORKER=false): a request still
writes its outbox rows (the bus events SLA, escalations and webhooks subscribe to) in its transaction,
which is part of what is measured, but the jobs those rows describe do not run in the API process and
compete with it for the CPU. ``--with-worker`` measures the embedded (single-process) mode instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.identity.service import create_client
from msp_platform.kit.ids import new_id
from msp_platform.models.tenant import Tenant

ADMIN_DSN = os.environ.get("MSP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url, timeout=1)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def load(
    name: str,
    total: int,
    concurrency: int,
    make: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal failures
            for i in counter:
                started = time.perf_counter()
                response = await make(client, i)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 400:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "name": name,
        "requests": total,
        "failures": failures,
        "rps": total / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'scenario':44} {'req':>6} {'fail':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r['name']:44} {r['requests']:>6} {r['failures']:>5} {r['rps']:>9.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="granian worker processes for both servers")
    parser.add_argument(
        "--with-worker",
        action="store_true",
        help="run the platform's embedded job worker in the API process (embedded mode)",
    )
    args = parser.parse_args()

    db_name = f"msp_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    app_url = f"postgresql+asyncpg://msp_app@127.0.0.1:5432/{db_name}"
    owner_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
    var = Path(f"/tmp/{db_name}")
    settings = Settings(
        database_url=app_url, database_owner_url=owner_url, var_dir=var, secret_key="bench-secret"
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await migrate.upgrade(settings)
        db = Database.create(settings)
        tenant = Tenant(id=new_id(), slug="bench", name="Bench Hospital", ticket_prefix="BEN", timezone="UTC")
        async with db.dangerously_unscoped_session() as session:
            session.add(tenant)
            await session.flush()
            client_row, secret = await create_client(
                session, tenant_id=tenant.id, name="bench", scopes="", created_by="bench"
            )
            await session.commit()
        await db.dispose()

        platform_port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "MSP_DATABASE_URL": app_url,
            "MSP_DATABASE_OWNER_URL": owner_url,
            "MSP_VAR_DIR": str(var),
            "MSP_SECRET_KEY": "bench-secret",
            "MSP_PORT": str(platform_port),
            "MSP_ISSUER": f"http://127.0.0.1:{platform_port}",
            "MSP_LOG_LEVEL": "WARNING",
            "MSP_RATE_LIMIT_PER_MINUTE": "100000000",
            "MSP_DATABASE_POOL_SIZE": "20",
            "MSP_EMBEDDED_WORKER": "true" if args.with_worker else "false",
        }
        msp = [sys.executable, "-m", "msp_platform", "serve", "--workers", str(args.workers)]
        if args.workers > 1:
            env["MSP_BROKER_URL"] = "redis://127.0.0.1:6379/0"
            env["MSP_REDIS_URL"] = "redis://127.0.0.1:6379/1"
        processes.append(
            subprocess.Popen(msp, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        bare_env = {
            **os.environ,
            "MSP_BENCH_DSN": f"postgresql://msp_app@127.0.0.1:5432/{db_name}",
            "MSP_BENCH_TENANT": str(tenant.id),
            "PYTHONPATH": str(ROOT),
        }
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "granian",
                    "--interface",
                    "asgi",
                    "--port",
                    str(bare_port),
                    "--workers",
                    str(args.workers),
                    "--no-ws",
                    "bench.bare_litestar:app",
                ],
                env=bare_env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        base, bare = f"http://127.0.0.1:{platform_port}", f"http://127.0.0.1:{bare_port}"
        await wait_ready(f"{base}/healthz")
        await wait_ready(f"{bare}/incidents/{uuid.uuid4()}")

        async with httpx.AsyncClient() as http:
            token = (
                await http.post(
                    f"{base}/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client_row.client_id, secret),
                )
            ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        platform_ids: list[str] = []
        bare_ids: list[str] = []

        async def create_platform(client: httpx.AsyncClient, i: int) -> httpx.Response:
            response = await client.post(
                f"{base}/api/v1/incidents",
                json={"title": f"Bench incident {i}", "impact": 2, "urgency": 2},
                headers=headers,
            )
            if response.status_code == 201:
                platform_ids.append(response.json()["id"])
            return response

        async def create_bare(client: httpx.AsyncClient, i: int) -> httpx.Response:
            response = await client.post(f"{bare}/incidents", json={"title": f"Bench incident {i}"})
            if response.status_code == 201:
                bare_ids.append(response.json()["id"])
            return response

        async def read_platform(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{base}/api/v1/incidents/{random.choice(platform_ids)}", headers=headers)

        async def read_bare(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{bare}/incidents/{random.choice(bare_ids)}")

        async def queue_platform(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{base}/api/v1/incidents", params={"limit": 50}, headers=headers)

        async def queue_bare(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{bare}/incidents", params={"limit": 50})

        n, c = args.requests, args.concurrency
        rows = [
            await load("create: msp-platform (granian+PG+RLS)", n, c, create_platform),
            await load("create: bare Litestar + asyncpg", n, c, create_bare),
            await load("read by id: msp-platform", n, c, read_platform),
            await load("read by id: bare Litestar + asyncpg", n, c, read_bare),
            await load("queue page (50): msp-platform", n // 4, c, queue_platform),
            await load("queue page (50): bare Litestar + asyncpg", n // 4, c, queue_bare),
        ]
        mode = "embedded worker on" if args.with_worker else "embedded worker off"
        print(
            f"\n{n} requests per scenario ({n // 4} for the queue), concurrency {c}, "
            f"{args.workers} granian worker(s) per server, platform {mode}\n"
        )
        report(rows)
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
