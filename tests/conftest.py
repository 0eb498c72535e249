"""Test fixtures: every API test runs against SQLite and against the machine's PostgreSQL.

PostgreSQL gets a fresh database per run (per xdist worker), migrated as the owner; the app connects as the
non-owner ``msp_app`` role so row-level security applies. Without PostgreSQL those tests skip, unless
``MSP_REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import os

# Before anything imports the password hasher: cheap argon2 parameters for the suite's many sign-ins.
os.environ.setdefault("MSP_ARGON2_PROFILE", "test")

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from dramatiq.brokers.stub import StubBroker
from httpx import ASGITransport, AsyncClient
from litestar import Litestar

from msp_platform.app import create_app
from msp_platform.auth.passwords import hash_password
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.identity.service import create_client
from msp_platform.kit.ids import new_id
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User, UserRole
from msp_platform.state import services_of

if TYPE_CHECKING:
    from tests.support.desk import Desk

PG_ADMIN_DSN = os.environ.get("MSP_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
APP_ROLE = "msp_app"
REQUIRE_PG = os.environ.get("MSP_REQUIRE_POSTGRES") == "1"
TEST_PASSWORD = "correct horse battery staple"
TEST_PASSWORD_HASH = hash_password(TEST_PASSWORD)
BASE_URL = "http://testserver.local"


def _pg_reachable() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_PROBLEM = _pg_reachable()


def require_postgres() -> None:
    if _PG_PROBLEM is None:
        return
    message = f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({_PG_PROBLEM})"
    if REQUIRE_PG:
        pytest.fail(message + " and MSP_REQUIRE_POSTGRES=1")
    pytest.skip(message)


def base_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "testing",
        "var_dir": tmp,
        "secret_key": "test-secret-key",
        "issuer": BASE_URL,
        "embedded_worker": False,
        "log_level": "WARNING",
        "rate_limit_per_minute": 100_000,
        "sign_in_attempts_per_15_minutes": 10_000,
        "broker_url": "",
        "redis_url": "",
    }
    values.update(overrides)
    return Settings(**values)


async def _create_pg_database() -> tuple[str, str]:
    name = f"msp_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    host = "127.0.0.1:5432"
    return (
        f"postgresql+asyncpg://{APP_ROLE}@{host}/{name}",
        f"postgresql+asyncpg://postgres@{host}/{name}",
    )


async def drop_pg_database(owner_url: str) -> None:
    name = owner_url.rsplit("/", 1)[-1]
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Backend:
    name: str
    settings: Settings

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgres"


def _make_backend(name: str, tmp: Path) -> Backend:
    if name == "postgres":
        require_postgres()
        app_url, owner_url = asyncio.run(_create_pg_database())
        settings = base_settings(tmp, database_url=app_url, database_owner_url=owner_url)
    else:
        settings = base_settings(tmp, database_url=f"sqlite+aiosqlite:///{tmp / 'test.db'}")
    asyncio.run(migrate.upgrade(settings))
    return Backend(name, settings)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(request.param)
    made = _make_backend(request.param, tmp)
    yield made
    if made.is_postgres:
        asyncio.run(drop_pg_database(made.settings.effective_owner_url))


@pytest.fixture(scope="session")
def pg_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """PostgreSQL only (row-level security tests)."""
    made = _make_backend("postgres", tmp_path_factory.mktemp("pg-only"))
    yield made
    asyncio.run(drop_pg_database(made.settings.effective_owner_url))


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """An empty database of its own, not migrated (migration tests), on each backend."""
    if request.param == "postgres":
        require_postgres()
        app_url, owner_url = await _create_pg_database()
        yield base_settings(tmp_path, database_url=app_url, database_owner_url=owner_url)
        await drop_pg_database(owner_url)
    else:
        yield base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


@pytest.fixture(scope="session")
async def app(backend: Backend) -> Litestar:
    return create_app(backend.settings)


@pytest.fixture(autouse=True)
def fresh_in_process_broker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with empty in-process queues. A StubBroker worker stopped before a delayed message
    (a retry's backoff, a timer's ETA) is due drops it without marking it done, and every later
    ``broker.join(queue)`` of the session would wait for it forever."""
    yield
    if "app" not in request.fixturenames:
        return
    broker = services_of(request.getfixturevalue("app")).broker
    if not isinstance(broker, StubBroker):
        return
    for queue in broker.queues.values():
        with queue.mutex:
            queue.queue.clear()
            queue.unfinished_tasks = 0
            queue.all_tasks_done.notify_all()
            queue.not_full.notify_all()


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[AsyncClient]:
    """Run the app's lifespan and an HTTP client in *this* event loop (Litestar's AsyncTestClient runs the app
    on a portal thread, which serialises concurrent requests and binds pools to another loop)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        task.cancel()
        raise RuntimeError(f"app failed to start: {started}")
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url=BASE_URL, timeout=60) as http:
            yield http
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncClient]:
    async with serving(app) as http:
        yield http


@pytest.fixture(scope="session")
async def owner_db(backend: Backend) -> AsyncIterator[Database]:
    """The database as its owner (no RLS, no ORM scoping): for arranging test data only."""
    db = Database.create(backend.settings)
    yield db
    await db.dispose()


# --- data factories -----------------------------------------------------------------------------------------


@dataclass
class Person:
    id: uuid.UUID
    email: str
    tenant_slug: str | None
    role: str
    password: str = TEST_PASSWORD


@dataclass
class Factory:
    db: Database
    client: AsyncClient
    _tokens: dict[str, str] = field(default_factory=dict)

    async def tenant(
        self, *, slug: str | None = None, parent: Tenant | None = None, status: str = "active", name: str = ""
    ) -> Tenant:
        slug = slug or f"t-{uuid.uuid4().hex[:10]}"
        tenant = Tenant(
            id=new_id(),
            slug=slug,
            name=name or slug.replace("-", " ").title(),
            status=TenantStatus(status),
            parent_id=parent.id if parent else None,
            ticket_prefix="T" + uuid.uuid4().hex[:7].upper(),
            timezone="America/New_York",
        )
        async with self.db.dangerously_unscoped_session() as session:
            session.add(tenant)
            await session.commit()
        return tenant

    async def user(
        self, tenant: Tenant, *, role: str = "tenant_user", active: bool = True, email: str = ""
    ) -> Person:
        email = email or f"u-{uuid.uuid4().hex[:8]}@{tenant.slug}.example"
        user = User(
            tenant_id=tenant.id,
            id=new_id(),
            email=email,
            name=email.split("@")[0],
            role=UserRole(role),
            password_hash=TEST_PASSWORD_HASH,
            active=active,
        )
        async with self.db.dangerously_unscoped_session() as session:
            session.add(user)
            await session.commit()
        return Person(user.id, email, tenant.slug, role)

    async def staff(
        self, *, role: str = "msp_agent", tier: int | None = 1, grants: list[Tenant] = ()
    ) -> Person:  # type: ignore[assignment]
        email = f"s-{uuid.uuid4().hex[:8]}@msp.example"
        member = StaffMember(
            id=new_id(),
            email=email,
            name=email,
            role=StaffRole(role),
            tier=tier,
            password_hash=TEST_PASSWORD_HASH,
            active=True,
        )
        async with self.db.dangerously_unscoped_session() as session:
            session.add(member)
            await session.flush()
            for tenant in grants:
                session.add(StaffGrant(staff_id=member.id, tenant_id=tenant.id, include_children=True))
            await session.commit()
        return Person(member.id, email, None, role)

    async def integration_client(self, tenant: Tenant, *, scopes: str = "") -> tuple[str, str]:
        async with self.db.dangerously_unscoped_session() as session:
            row, secret = await create_client(
                session, tenant_id=tenant.id, name="test", scopes=scopes, created_by="test"
            )
            await session.commit()
        return row.client_id, secret

    async def sign_in(self, person: Person, *, scope: str | None = None) -> str:
        key = f"{person.id}:{scope}"
        if key not in self._tokens:
            body: dict[str, Any] = {"email": person.email, "password": person.password}
            if person.tenant_slug:
                body["tenant"] = person.tenant_slug
            if scope:
                body["scope"] = scope
            response = await self.client.post("/api/v1/auth/sign-in", json=body)
            assert response.status_code == 200, response.text
            self._tokens[key] = response.json()["access_token"]
        return self._tokens[key]

    async def client_token(self, client_id: str, secret: str, scope: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        response = await self.client.post("/oauth/token", data=data, auth=(client_id, secret))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def headers(
        self, person: Person, *, tenant: Tenant | None = None, scope: str | None = None
    ) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {await self.sign_in(person, scope=scope)}"}
        if tenant is not None:
            headers["MSP-Tenant"] = str(tenant.id)
        return headers


@pytest.fixture(scope="session")
async def factory(owner_db: Database, client: AsyncClient) -> Factory:
    return Factory(owner_db, client)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
async def desk(factory: Factory, client: AsyncClient) -> Desk:
    """A tenant with its admin, a user, an L1 agent and an L3 engineer (both granted the tenant)."""
    from tests.support.desk import Desk

    tenant = await factory.tenant()
    return Desk(
        tenant=tenant,
        admin=await factory.user(tenant, role="tenant_admin"),
        user=await factory.user(tenant),
        agent=await factory.staff(role="msp_agent", tier=1, grants=[tenant]),
        l3=await factory.staff(role="msp_agent", tier=3, grants=[tenant]),
        client=client,
        factory=factory,
    )
