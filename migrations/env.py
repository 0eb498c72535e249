"""Alembic environment: runs as the database owner; on PostgreSQL also keeps the app role's grants current."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection, make_url

import msp_platform.models  # noqa: F401  (registers every table)
from msp_platform.config import Settings
from msp_platform.db.base import Base
from msp_platform.db.engine import build_engine
from msp_platform.db.rls import ensure_app_role

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    given = config.attributes.get("settings")
    return given if isinstance(given, Settings) else Settings()


def _app_role(settings: Settings) -> str:
    app_user = make_url(settings.effective_database_url).username or ""
    owner_user = make_url(settings.effective_owner_url).username or ""
    return app_user if app_user and app_user != owner_user else ""


def _run(connection: Connection, settings: Settings) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "postgresql":
        if connection.in_transaction():
            connection.commit()
        with connection.begin():
            ensure_app_role(connection, _app_role(settings))


async def _run_async(settings: Settings) -> None:
    engine = build_engine(settings.effective_owner_url, settings, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run, settings)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    settings = _settings()
    existing: Any = config.attributes.get("connection")
    if existing is not None:
        _run(existing, settings)
        return
    asyncio.run(_run_async(settings))


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `msp db upgrade`")
run_migrations_online()
