"""The application and database walls of tenancy: ORM scoping and stamping, and PostgreSQL RLS."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from tests.conftest import Backend, Factory

from msp_platform.app import assert_owner_bypasses_rls, assert_rls_safe_role
from msp_platform.authz.types import AccessibleTenantId, TenantContext, TenantScopeError
from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.kit.ids import new_id
from msp_platform.models.user import User


def ctx_of(*tenants: object, write: object | None = None) -> TenantContext:
    readable = frozenset(AccessibleTenantId(t.id) for t in tenants)  # type: ignore[attr-defined]
    return TenantContext(tenant_id=AccessibleTenantId(write.id) if write else None, readable=readable)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def app_db(backend: Backend) -> Database:
    db = Database.create(backend.settings)
    yield db  # type: ignore[misc]
    await db.dispose()


class TestOrmScoping:
    async def test_queries_see_only_the_context_tenants(self, factory: Factory, app_db: Database) -> None:
        a, b = await factory.tenant(), await factory.tenant()
        ua, ub = await factory.user(a), await factory.user(b)
        async with app_db.session() as session:
            await set_tenant_context(session, ctx_of(a, write=a))
            seen = set((await session.scalars(select(User.id))).all())
            assert ua.id in seen
            assert ub.id not in seen
            # Even naming B's row explicitly finds nothing.
            assert await session.scalar(select(User).where(User.id == ub.id)) is None

    async def test_cross_tenant_read_view_sees_both_but_cannot_write(
        self, factory: Factory, app_db: Database
    ) -> None:
        a, b = await factory.tenant(), await factory.tenant()
        ua, ub = await factory.user(a), await factory.user(b)
        async with app_db.session() as session:
            await set_tenant_context(session, ctx_of(a, b))
            seen = set((await session.scalars(select(User.id).where(User.id.in_([ua.id, ub.id])))).all())
            assert seen == {ua.id, ub.id}
            session.add(User(email="x@y.example", name="x", role="tenant_user", active=True))
            with pytest.raises(TenantScopeError):
                await session.flush()

    async def test_no_context_is_an_error_not_everything(self, factory: Factory, app_db: Database) -> None:
        await factory.user(await factory.tenant())
        async with app_db.session() as session:
            with pytest.raises(TenantScopeError):
                await session.scalars(select(User))

    async def test_inserts_are_stamped_and_foreign_stamps_refused(
        self, factory: Factory, app_db: Database
    ) -> None:
        a, b = await factory.tenant(), await factory.tenant()
        async with app_db.session() as session:
            await set_tenant_context(session, ctx_of(a, write=a))
            user = User(email=f"{new_id().hex}@a.example", name="n", role="tenant_user", active=True)
            session.add(user)
            await session.flush()
            assert user.tenant_id == a.id
            session.add(User(tenant_id=b.id, email="b@b.example", name="n", role="tenant_user", active=True))
            with pytest.raises(TenantScopeError):
                await session.flush()
            await session.rollback()

    async def test_bulk_update_touches_only_the_write_tenant(
        self, factory: Factory, app_db: Database
    ) -> None:
        a, b = await factory.tenant(), await factory.tenant()
        ua, ub = await factory.user(a), await factory.user(b)
        async with app_db.session() as session:
            await set_tenant_context(session, ctx_of(a, write=a))
            await session.execute(update(User).where(User.id.in_([ua.id, ub.id])).values(name="renamed"))
            await session.commit()
        async with factory.db.dangerously_unscoped_session() as session:
            names = dict(
                (await session.execute(select(User.id, User.name).where(User.id.in_([ua.id, ub.id])))).all()
            )
        assert names[ua.id] == "renamed"
        assert names[ub.id] != "renamed"


@pytest.fixture(scope="module")
async def pg(pg_backend: Backend) -> Database:
    db = Database.create(pg_backend.settings)
    yield db  # type: ignore[misc]
    await db.dispose()


@pytest.fixture(scope="module")
async def seeded(pg_backend: Backend) -> tuple[object, object, object, object]:
    owner = Database.create(pg_backend.settings)
    factory = Factory(owner, None)  # type: ignore[arg-type]  # data only, no HTTP
    a, b = await factory.tenant(), await factory.tenant()
    ua, ub = await factory.user(a), await factory.user(b)
    await owner.dispose()
    return a, b, ua, ub


@pytest.mark.postgres_only
class TestRowLevelSecurity:
    """Raw SQL through the application role: no ORM help, only the database wall."""

    async def _raw(
        self, pg: Database, guc: str | None, sql: str, **params: object
    ) -> list[tuple[object, ...]]:
        async with pg.engine.connect() as conn:
            if guc is not None:
                await conn.execute(
                    text(
                        "SELECT set_config('app.tenant_id', :t, true), set_config('app.tenant_ids', :t, true)"
                    ),
                    {"t": guc},
                )
            rows = (await conn.execute(text(sql), params)).all()
            await conn.rollback()
        return [tuple(r) for r in rows]

    async def test_wrong_tenant_raw_select_sees_nothing(self, pg: Database, seeded: tuple) -> None:  # type: ignore[type-arg]
        a, _b, ua, ub = seeded
        rows = await self._raw(pg, str(a.id), "SELECT id FROM users WHERE id = :id", id=ub.id)
        assert rows == []
        own = await self._raw(pg, str(a.id), "SELECT id FROM users WHERE id = :id", id=ua.id)
        assert own == [(ua.id,)]

    async def test_no_tenant_set_means_no_rows(self, pg: Database, seeded: tuple) -> None:  # type: ignore[type-arg]
        assert await self._raw(pg, None, "SELECT count(*) FROM users") == [(0,)]
        assert await self._raw(pg, "", "SELECT count(*) FROM users") == [(0,)]

    async def test_wrong_tenant_raw_update_and_delete_change_nothing(
        self, pg: Database, seeded: tuple
    ) -> None:  # type: ignore[type-arg]
        a, _b, _ua, ub = seeded
        async with pg.engine.connect() as conn:
            await conn.execute(
                text("SELECT set_config('app.tenant_id', :t, true), set_config('app.tenant_ids', :t, true)"),
                {"t": str(a.id)},
            )
            updated = await conn.execute(
                text("UPDATE users SET name = 'pwned' WHERE id = :id"), {"id": ub.id}
            )
            deleted = await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": ub.id})
            assert updated.rowcount == 0
            assert deleted.rowcount == 0
            await conn.rollback()

    async def test_inserting_a_row_for_another_tenant_is_refused(self, pg: Database, seeded: tuple) -> None:  # type: ignore[type-arg]
        a, b, _, _ = seeded
        async with pg.engine.connect() as conn:
            await conn.execute(
                text("SELECT set_config('app.tenant_id', :t, true), set_config('app.tenant_ids', :t, true)"),
                {"t": str(a.id)},
            )
            with pytest.raises(DBAPIError, match="row-level security"):
                await conn.execute(
                    text(
                        "INSERT INTO users (tenant_id, id, email, name, role, active, created_at, updated_at) "
                        "VALUES (:t, :id, 'x@x.example', 'x', 'tenant_user', true, now(), now())"
                    ),
                    {"t": b.id, "id": new_id()},
                )
            await conn.rollback()

    async def test_the_guc_does_not_leak_to_the_next_transaction(self, pg: Database, seeded: tuple) -> None:  # type: ignore[type-arg]
        a, _, ua, _ = seeded
        async with pg.engine.connect() as conn:
            await conn.execute(text("SELECT set_config('app.tenant_ids', :t, true)"), {"t": str(a.id)})
            assert (
                await conn.execute(text("SELECT count(*) FROM users WHERE id = :id"), {"id": ua.id})
            ).scalar() == 1
            await conn.commit()
            assert (
                await conn.execute(text("SELECT count(*) FROM users WHERE id = :id"), {"id": ua.id})
            ).scalar() == 0
            await conn.rollback()

    async def test_the_app_role_cannot_disable_rls(self, pg: Database) -> None:
        async with pg.engine.connect() as conn:
            with pytest.raises(ProgrammingError):
                await conn.execute(text("ALTER TABLE users DISABLE ROW LEVEL SECURITY"))
            await conn.rollback()

    async def test_every_tenant_table_forces_rls(self, pg_backend: Backend) -> None:
        import msp_platform.models  # noqa: F401
        from msp_platform.db.base import Base, is_tenant_owned

        tenant_tables = {
            mapper.class_.__tablename__ for mapper in Base.registry.mappers if is_tenant_owned(mapper.class_)
        }
        owner = Database.create(pg_backend.settings)
        async with owner.dangerously_unscoped_session() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = ANY(:n)"
                    ),
                    {"n": list(tenant_tables)},
                )
            ).all()
        await owner.dispose()
        assert {r[0] for r in rows} == tenant_tables
        assert all(r[1] and r[2] for r in rows), rows

    async def test_the_api_refuses_a_role_that_bypasses_rls(self, pg_backend: Backend) -> None:
        unsafe = Settings(
            **{
                **pg_backend.settings.model_dump(),
                "database_url": pg_backend.settings.effective_owner_url,
                "secret_key": "x",
            }
        )
        db = Database.create(unsafe)
        with pytest.raises(RuntimeError, match="bypasses row-level security"):
            await assert_rls_safe_role(db)
        await db.dispose()


class TestCompositeForeignKeys:
    """The database itself refuses a row of tenant A that points at tenant B's row (composite foreign keys
    on (tenant_id, id)), even written as the owner with no ORM scoping and no row-level security."""

    async def _attempt(self, owner_db: Database, row: object) -> None:
        async with owner_db.dangerously_unscoped_session() as session:
            session.add(row)
            await session.flush()
            await session.rollback()

    async def test_a_cross_tenant_reference_is_an_integrity_error(
        self, factory: Factory, owner_db: Database, backend: Backend
    ) -> None:
        from msp_platform.kit.time import utcnow
        from msp_platform.models.device import Device
        from msp_platform.models.incident import Incident
        from msp_platform.models.site import Site

        a, b = await factory.tenant(), await factory.tenant()
        ua, ub = await factory.user(a), await factory.user(b)
        site_b = Site(tenant_id=b.id, id=new_id(), code="B1", name="B site")
        async with owner_db.dangerously_unscoped_session() as session:
            session.add(site_b)
            await session.commit()

        def device(**refs: object) -> Device:
            return Device(tenant_id=a.id, id=new_id(), kind="laptop", **refs)

        def incident(**refs: object) -> Incident:
            return Incident(
                tenant_id=a.id,
                id=new_id(),
                number=1,
                key=f"X-{new_id().hex[:6]}",
                title="t",
                reported_by="test",
                channel="portal",
                impact=3,
                urgency=3,
                priority=5,
                priority_matrix_version=1,
                opened_at=utcnow(),
                **refs,
            )

        # The same rows pointing inside tenant A are fine: what fails below is the tenant, nothing else.
        await self._attempt(owner_db, device(assigned_user_id=ua.id))
        for row in (
            device(assigned_user_id=ub.id),
            device(site_id=site_b.id),
            incident(caller_id=ub.id),
            incident(site_id=site_b.id),
            User(tenant_id=a.id, id=new_id(), email="x@a.example", name="x", site_id=site_b.id),
        ):
            with pytest.raises(IntegrityError):
                await self._attempt(owner_db, row)


@pytest.mark.postgres_only
class TestOwnerRole:
    """Cross-tenant sweeps run as the owner URL, which must bypass row-level security."""

    def _settings(self, pg_backend: Backend, owner_url: str, env: str) -> Settings:
        return Settings(
            **{
                **pg_backend.settings.model_dump(),
                "database_owner_url": owner_url,
                "env": env,
                "issuer": "https://msp.example",
                "secret_key": "x",
            }
        )

    @pytest.mark.parametrize("owner", ["unset", "application role"])
    async def test_an_owner_url_that_cannot_bypass_rls_refuses_production(
        self, pg_backend: Backend, owner: str
    ) -> None:
        app_url = pg_backend.settings.effective_database_url
        # The application role under another spelling of its URL: a distinct owner URL that cannot bypass.
        owner_url = "" if owner == "unset" else app_url.replace("@127.0.0.1:", "@localhost:")
        db = Database.create(self._settings(pg_backend, owner_url, "production"))
        try:
            with pytest.raises(RuntimeError, match="MSP_DATABASE_OWNER_URL"):
                await assert_owner_bypasses_rls(db)
        finally:
            await db.dispose()

    async def test_outside_production_it_is_logged_as_an_error(
        self, pg_backend: Backend, caplog: pytest.LogCaptureFixture
    ) -> None:
        db = Database.create(self._settings(pg_backend, "", "development"))
        try:
            with caplog.at_level(logging.ERROR):
                await assert_owner_bypasses_rls(db)
        finally:
            await db.dispose()
        assert any("MSP_DATABASE_OWNER_URL" in record.getMessage() for record in caplog.records)

    async def test_a_superuser_or_bypassrls_owner_passes(self, pg_backend: Backend) -> None:
        db = Database.create(
            self._settings(pg_backend, pg_backend.settings.effective_owner_url, "production")
        )
        try:
            assert await db.owner_rls_problem() is None
            await assert_owner_bypasses_rls(db)
        finally:
            await db.dispose()

    async def test_the_api_refuses_to_start_in_production(self, pg_backend: Backend) -> None:
        from tests.conftest import serving

        from msp_platform.app import create_app

        app = create_app(self._settings(pg_backend, "", "production"))
        with pytest.raises(RuntimeError, match="failed to start"):
            async with serving(app):
                pass
