"""Engines and session factories for the embedded (SQLite) and production (PostgreSQL) modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from msp_platform.config import Settings
from msp_platform.db.session import TenantSession

SQLITE_BEGIN_OPTION = "msp_sqlite_begin"


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    """SQLite: WAL, FK enforcement, and explicit BEGIN so writers queue instead of failing.

    A deferred transaction that reads and then writes fails at once (SQLITE_BUSY_SNAPSHOT) when another
    writer committed meanwhile; ``BEGIN IMMEDIATE`` takes the write lock up front so writers wait on the
    busy timeout instead. Read-only units of work opt into ``DEFERRED`` to run beside a writer.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def build_engine(url: str, settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": settings.database_echo, "pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)
        _install_sqlite_hooks(engine)
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
        return cls(settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine))

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
            self._owner_sessionmaker = make_sessionmaker(self._owner_engine)
        session = self._owner_sessionmaker()
        session.info["unscoped"] = True
        return session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._owner_engine is not None and self._owner_engine is not self.engine:
            await self._owner_engine.dispose()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    import msp_platform.audit.service  # noqa: F401  (registers audit capture on every session)

    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=TenantSession, autoflush=True
    )
