"""Alembic environment: runs as the database owner; on PostgreSQL also keeps the app role's grants current."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SAWarning

import msp_platform.models  # noqa: F401  (registers every table)
from msp_platform.config import Settings
from msp_platform.db.base import Base
from msp_platform.db.migrate import migration_engine
from msp_platform.db.rls import ensure_app_role

# SQLite batch migrations reflect tables (and their foreign-key targets) and cannot read expression indexes;
# those indexes are created by their own migrations and never rebuilt by a batch, so the warning is noise.
warnings.filterwarnings(
    "ignore", message="Skipped unsupported reflection of expression-based index", category=SAWarning
)

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    given = config.attributes.get("settings")
    return given if isinstance(given, Settings) else Settings()


def _app_role(settings: Settings) -> str:
    app_user = make_url(settings.effective_database_url).username or ""
    owner_user = make_url(settings.effective_owner_url).username or ""
    return app_user if app_user and app_user != owner_user else ""


def _check_sqlite_foreign_keys(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """Migrations run on SQLite with FK enforcement off (table rebuilds need it); instead, each revision
    must leave no dangling reference, checked inside its own transaction so a violation rolls it back."""
    assert ctx.connection is not None
    rows = ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if rows:
        found = ", ".join(f"{r[0]} row {r[1]} -> {r[2]}" for r in rows[:10])
        raise RuntimeError(
            f"revision {step.up_revision_id if step.is_upgrade else step.down_revision_ids} leaves "
            f"{len(rows)} broken foreign key reference(s): {found}"
        )


def _run(connection: Connection, settings: Settings) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        enforced = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        if connection.in_transaction():
            connection.commit()
        if enforced:
            raise RuntimeError("run migrations through msp_platform.db.migrate (foreign keys must be off)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
        transaction_per_migration=True,
        on_version_apply=_check_sqlite_foreign_keys if sqlite else None,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "postgresql":
        if connection.in_transaction():
            connection.commit()
        with connection.begin():
            ensure_app_role(connection, _app_role(settings))


async def _run_async(settings: Settings) -> None:
    engine = migration_engine(settings)
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
