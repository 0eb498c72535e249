"""Migrations upgrade and downgrade cleanly on both backends, and match the models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from tests.conftest import _create_pg_database, base_settings, drop_pg_database, require_postgres

import msp_platform.models  # noqa: F401
from msp_platform.db import migrate
from msp_platform.db.base import Base
from msp_platform.db.engine import build_engine


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "postgres":
        require_postgres()
        app_url, owner_url = await _create_pg_database()
        settings = base_settings(tmp_path, database_url=app_url, database_owner_url=owner_url)
        yield settings
        await drop_pg_database(owner_url)
    else:
        yield base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


async def _tables(settings) -> set[str]:  # type: ignore[no-untyped-def]
    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(fresh) -> None:  # type: ignore[no-untyped-def]
    await migrate.upgrade(fresh)
    assert await migrate.current(fresh) == migrate.head_revision(fresh)
    assert {t.name for t in Base.metadata.sorted_tables} <= await _tables(fresh)
    await migrate.downgrade(fresh, "base")
    assert await _tables(fresh) <= {"alembic_version"}
    await migrate.upgrade(fresh)
    assert await migrate.current(fresh) == migrate.head_revision(fresh)


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
