"""Programmatic Alembic: ``msp db upgrade`` / ``downgrade`` and the test suite go through here."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from msp_platform.config import PROJECT_ROOT, Settings
from msp_platform.db.engine import build_engine

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def alembic_config(settings: Settings, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["settings"] = settings
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(settings: Settings, revision: str = "head") -> None:
    await _run(settings, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(settings: Settings, revision: str) -> None:
    await _run(settings, lambda cfg: command.downgrade(cfg, revision))


async def current(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


def migration_engine(settings: Settings) -> AsyncEngine:
    """The owner's engine for Alembic; on SQLite without FK enforcement (see ``migrations/env.py``, which
    checks the foreign keys after every revision instead)."""
    return build_engine(settings.effective_owner_url, settings, pool_size=1, sqlite_foreign_keys=False)


async def _run(settings: Settings, fn: object) -> None:
    engine = migration_engine(settings)
    try:
        async with engine.connect() as conn:

            def _go(sync_conn: Connection) -> None:
                fn(alembic_config(settings, sync_conn))  # type: ignore[operator]

            await conn.run_sync(_go)
            await conn.commit()
    finally:
        await engine.dispose()
