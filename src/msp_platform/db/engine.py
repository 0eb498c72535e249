"""Engines and session factories for the embedded (SQLite) and production (PostgreSQL) modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from msp_platform.config import Settings
from msp_platform.db.session import TenantSession

SQLITE_BEGIN_OPTION = "msp_sqlite_begin"


def _install_sqlite_hooks(engine: AsyncEngine, *, foreign_keys: bool = True) -> None:
    """SQLite: WAL, FK enforcement, and explicit BEGIN so writers queue instead of failing.

    Migrations connect with ``foreign_keys=False``: rebuilding a table (``batch_alter_table``) drops and
    renames it, which SQLite refuses under FK enforcement once rows reference it. The pragma only takes
    effect outside a transaction, hence here, at connect time.

    A deferred transaction that reads and then writes fails at once (SQLITE_BUSY_SNAPSHOT) when another
    writer committed meanwhile; ``BEGIN IMMEDIATE`` takes the write lock up front so writers wait on the
    busy timeout instead. Read-only units of work opt into ``DEFERRED`` to run beside a writer.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def build_engine(
    url: str, settings: Settings, *, pool_size: int | None = None, sqlite_foreign_keys: bool = True
) -> AsyncEngine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "echo": settings.database_echo,
        "pool_pre_ping": True,
        # Statement parameters (emails, names, free text) stay out of error messages and logs unless the
        # SQL is echoed for debugging anyway.
        "hide_parameters": not settings.database_echo,
    }
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)
        _install_sqlite_hooks(engine, foreign_keys=sqlite_foreign_keys)
        return engine
    kwargs["pool_size"] = pool_size or settings.database_pool_size
    kwargs["max_overflow"] = settings.database_max_overflow
    kwargs["connect_args"] = {"server_settings": {"application_name": "msp-platform"}}
    return create_async_engine(url, **kwargs)


@dataclass
class Database:
    """The app's engine (RLS-bound role) and, lazily, the owner engine for explicitly unscoped work."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    _owner_engine: AsyncEngine | None = field(default=None, repr=False)
    _owner_sessionmaker: async_sessionmaker[AsyncSession] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> Database:
        engine = build_engine(settings.effective_database_url, settings)
        return cls(settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine, settings))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> AsyncSession:
        return self.sessionmaker()

    def dangerously_unscoped_session(self) -> AsyncSession:
        """A session as the database owner: RLS does not apply. Only for cross-tenant system sweeps that list
        ids and hand each one to a tenant-scoped job; never for request handling."""
        if self._owner_sessionmaker is None:
            if self.settings.effective_owner_url == self.settings.effective_database_url:
                self._owner_engine = self.engine
            else:
                self._owner_engine = build_engine(
                    self.settings.effective_owner_url, self.settings, pool_size=2
                )
            self._owner_sessionmaker = make_sessionmaker(self._owner_engine, self.settings)
        session = self._owner_sessionmaker()
        session.info["unscoped"] = True
        return session

    async def owner_rls_problem(self) -> str | None:
        """Why ``dangerously_unscoped_session`` would not see every tenant's rows on PostgreSQL, or None.

        FORCE ROW LEVEL SECURITY binds table owners too, so only a superuser or a BYPASSRLS role reads
        across tenants; through any other role a cross-tenant sweep (escalation timers, integrations)
        silently finds nothing."""
        if self.dialect != "postgresql":
            return None
        if self.settings.effective_owner_url == self.settings.effective_database_url:
            return (
                "MSP_DATABASE_OWNER_URL is unset, so cross-tenant system jobs would run as the application "
                "role, which row-level security confines to no tenant at all"
            )
        try:
            async with self.dangerously_unscoped_session() as session:
                row = (
                    await session.execute(
                        text(
                            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles "
                            "WHERE rolname = current_user"
                        )
                    )
                ).one()
        except (OSError, DBAPIError) as exc:
            return f"cannot connect with MSP_DATABASE_OWNER_URL ({type(exc).__name__}: {str(exc)[:200]})"
        user, superuser, bypass = row
        if superuser or bypass:
            return None
        return (
            f"MSP_DATABASE_OWNER_URL connects as {user!r}, which is neither superuser nor BYPASSRLS; FORCE "
            "ROW LEVEL SECURITY binds table owners too, so cross-tenant system jobs would see no rows "
            f"(ALTER ROLE {user} BYPASSRLS)"
        )

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._owner_engine is not None and self._owner_engine is not self.engine:
            await self._owner_engine.dispose()


def make_sessionmaker(
    engine: AsyncEngine, settings: Settings | None = None
) -> async_sessionmaker[AsyncSession]:
    import msp_platform.audit.service as audit  # registers audit capture on every session

    # The audit chain's HMAC key (derived from MSP_SECRET_KEY) travels in every session's info.
    info = audit.session_info(settings) if settings is not None else {}
    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=TenantSession, autoflush=True, info=info
    )
