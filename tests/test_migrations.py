"""Migrations upgrade and downgrade cleanly on both backends, and match the models exactly."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, text
from tests.conftest import base_settings

import msp_platform.models  # noqa: F401
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.base import Base
from msp_platform.db.engine import Database, build_engine
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.device import Device
from msp_platform.models.idempotency import IdempotencyRecord
from msp_platform.models.incident import Incident
from msp_platform.models.site import Site
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User


async def _tables(settings) -> set[str]:  # type: ignore[no-untyped-def]
    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _seed(settings: Settings) -> uuid.UUID:
    """A tenant with a site, a user at that site, a device assigned to the user and an incident: rows that
    reference each other, so table rebuilds and drops meet real foreign keys."""
    db = Database.create(settings)
    tenant_id = new_id()
    try:
        async with db.dangerously_unscoped_session() as session:
            session.add(Tenant(id=tenant_id, slug=f"m-{tenant_id.hex[:8]}", name="M", ticket_prefix="MIG"))
            await session.flush()
            site = Site(tenant_id=tenant_id, id=new_id(), code="HQ", name="Head office")
            session.add(site)
            await session.flush()
            user = User(tenant_id=tenant_id, id=new_id(), email="u@m.example", name="U", site_id=site.id)
            session.add(user)
            await session.flush()
            session.add(
                Device(
                    tenant_id=tenant_id, id=new_id(), kind="laptop", site_id=site.id, assigned_user_id=user.id
                )
            )
            session.add(
                Incident(
                    tenant_id=tenant_id,
                    id=new_id(),
                    number=1,
                    key="MIG-1",
                    title="Seeded",
                    reported_by="test",
                    caller_id=user.id,
                    site_id=site.id,
                    channel="portal",
                    impact=3,
                    urgency=3,
                    priority=5,
                    priority_matrix_version=1,
                    opened_at=utcnow(),
                )
            )
            await session.commit()
    finally:
        await db.dispose()
    return tenant_id


async def _tenant_count(settings: Settings) -> int:
    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM tenants"))).scalar_one())
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_with_data(fresh) -> None:  # type: ignore[no-untyped-def]
    await migrate.upgrade(fresh)
    assert await migrate.current(fresh) == migrate.head_revision(fresh)
    assert {t.name for t in Base.metadata.sorted_tables} <= await _tables(fresh)
    await _seed(fresh)
    # Back to the first revision: every later table rebuild and drop meets rows that reference each other.
    await migrate.downgrade(fresh, "0001_foundation")
    assert await _tenant_count(fresh) == 1
    await migrate.upgrade(fresh)
    assert await migrate.current(fresh) == migrate.head_revision(fresh)
    assert await _tenant_count(fresh) == 1
    await migrate.downgrade(fresh, "base")
    assert await _tables(fresh) <= {"alembic_version"}
    await migrate.upgrade(fresh)
    assert await migrate.current(fresh) == migrate.head_revision(fresh)


async def test_sqlite_migrations_refuse_to_leave_broken_references(tmp_path: Path) -> None:
    """Foreign keys are off while SQLite migrates; the check after each revision takes their place."""
    settings = base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'fk.db'}")
    await migrate.upgrade(settings, "0004_sla_oncall")
    engine = migrate.migration_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (tenant_id, id, email, name, role, active, vip, clinical, created_at, "
                    "updated_at) VALUES (:t, :i, 'x@y.example', 'x', 'tenant_user', 1, 0, 0, '2024-01-01', "
                    "'2024-01-01')"
                ),
                {"t": new_id().hex, "i": new_id().hex},
            )
    finally:
        await engine.dispose()
    with pytest.raises(RuntimeError, match="broken foreign key"):
        await migrate.upgrade(settings)
    assert await migrate.current(settings) == "0004_sla_oncall", "the failing revision was rolled back"


async def test_models_and_migrations_agree(fresh) -> None:  # type: ignore[no-untyped-def]
    await migrate.upgrade(fresh)
    engine = build_engine(fresh.effective_owner_url, fresh, pool_size=1)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == [], f"models and migrations differ (write a migration): {diff}"


async def test_plain_text_idempotency_bodies_do_not_survive_the_upgrade(fresh) -> None:  # type: ignore[no-untyped-def]
    """Bodies are encrypted from 0005 on; the plain ones stored before (client secrets...) are deleted."""
    await migrate.upgrade(fresh, "0004_sla_oncall")
    engine = migrate.migration_engine(fresh)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(IdempotencyRecord).values(
                    id=new_id(),
                    tenant_scope="",
                    principal="p",
                    key="k",
                    fingerprint="f" * 64,
                    status_code=201,
                    response_body=b'{"client_secret":"cs_plain"}',
                    created_at=utcnow(),
                )
            )
        await migrate.upgrade(fresh)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM idempotency_records"))).scalar_one() == 0
    finally:
        await engine.dispose()
