"""The Litestar application factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from sqlalchemy import text

from msp_platform.auth.endpoints import DiscoveryController, OAuthController, SessionController
from msp_platform.auth.keys import KeyStore
from msp_platform.auth.middleware import AuthenticationMiddleware
from msp_platform.auth.server import MSPAuthorizationServer
from msp_platform.auth.tokens import AccessTokenVerifier
from msp_platform.config import BrokerKind, Environment, Settings, get_settings
from msp_platform.db.engine import Database
from msp_platform.health.endpoints import STATE_LOOPS, STATE_WORKER, HealthController
from msp_platform.kit.cors import cors_config
from msp_platform.kit.docs import ProblemDocsController
from msp_platform.kit.idempotency import IdempotentReplay
from msp_platform.kit.input_guard import refuse_nul_characters
from msp_platform.kit.logging import configure_logging, get_logger
from msp_platform.kit.middleware import RequestContextMiddleware, add_request_id_header
from msp_platform.kit.openapi import StrictStructSchemaPlugin, document_problems, openapi_config
from msp_platform.kit.problems import exception_handler
from msp_platform.kit.ratelimit import RateLimiter
from msp_platform.kit.uow import capture_idempotent_response, replay_response
from msp_platform.state import AppServices
from msp_platform.worker.outbox import flush_acks
from msp_platform.worker.runtime import BackgroundLoops, InProcessWorker, WorkerRuntime, create_broker

log = get_logger(__name__)


def _version() -> str:
    try:
        return version("msp-platform")
    except PackageNotFoundError:  # pragma: no cover - running from an unpacked tree
        return "0.0.0"


def route_handlers() -> list[Any]:
    from msp_platform.api import API_CONTROLLERS

    return [
        HealthController,
        ProblemDocsController,
        OAuthController,
        DiscoveryController,
        SessionController,
        *API_CONTROLLERS,
    ]


async def assert_rls_safe_role(db: Database) -> None:
    """Refuse to serve on PostgreSQL through a role that row-level security would not bind."""
    if db.dialect != "postgresql":
        return
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT r.rolsuper, r.rolbypassrls, "
                    "(SELECT count(*) FROM pg_tables t WHERE t.schemaname = current_schema() "
                    " AND t.tableowner = current_user) FROM pg_roles r WHERE r.rolname = current_user"
                )
            )
        ).one()
    superuser, bypass, owned = row
    if superuser or bypass or owned:
        raise RuntimeError(
            "MSP_DATABASE_URL connects as a role that bypasses row-level security (superuser, BYPASSRLS or "
            "table owner). Connect as the application role (e.g. msp_app) and keep the owner in "
            "MSP_DATABASE_OWNER_URL for migrations."
        )


async def assert_owner_bypasses_rls(db: Database) -> None:
    """Cross-tenant system sweeps (``dangerously_unscoped_session``) need an owner URL that bypasses
    row-level security. In production a missing bypass refuses to start; elsewhere it is logged loudly."""
    problem = await db.owner_rls_problem()
    if problem is None:
        return
    if db.settings.env is Environment.production:
        raise RuntimeError(problem)
    log.error("cross-tenant system jobs will see no rows", problem=problem)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        # Again here: the server may have installed its own logging after importing the app.
        configure_logging(settings.log_level, json=settings.log_json)
        db = Database.create(settings)
        await assert_rls_safe_role(db)
        await assert_owner_bypasses_rls(db)
        keys = KeyStore(settings)
        async with db.session() as session:
            await keys.ensure(session)
            await session.commit()
        broker = create_broker(settings)
        runtime = WorkerRuntime.install(settings, broker)
        runtime.adopt(db)
        services = AppServices(
            settings=settings,
            db=db,
            keys=keys,
            verifier=AccessTokenVerifier(settings, keys),
            oauth=MSPAuthorizationServer(settings),
            limiter=RateLimiter(settings.redis_url),
            broker=broker,
        )
        app.state.services = services
        worker: InProcessWorker | None = None
        loops: BackgroundLoops | None = None
        if settings.broker_kind is BrokerKind.in_process and settings.embedded_worker:
            worker = InProcessWorker(broker, settings.worker_threads)
            worker.start()
            loops = BackgroundLoops(runtime, db)
            loops.start()
        # Readiness checks these are alive (health.endpoints).
        app.state[STATE_WORKER] = worker
        app.state[STATE_LOOPS] = loops
        log.info(
            "msp-platform started",
            database=db.dialect,
            broker=settings.broker_kind.value,
            embedded_worker=worker is not None,
        )
        try:
            yield
        finally:
            if loops is not None:
                await loops.stop()
            if worker is not None:
                worker.stop()
            await flush_acks()
            await services.limiter.close()
            await db.dispose()

    handlers = route_handlers()
    document_problems(handlers)

    def _replay_handler(_: Request[Any, Any, Any], exc: IdempotentReplay) -> Response[bytes]:
        return replay_response(exc.stored)

    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        middleware=[RequestContextMiddleware(), AuthenticationMiddleware()],
        exception_handlers={IdempotentReplay: _replay_handler, Exception: exception_handler},
        before_request=refuse_nul_characters,
        after_request=capture_idempotent_response,
        before_send=[add_request_id_header],
        openapi_config=openapi_config(_version()),
        plugins=[StrictStructSchemaPlugin()],
        request_max_body_size=settings.request_max_body_bytes,
        cors_config=cors_config(settings.cors_origin_list),
        state=State({"settings": settings}),
        debug=False,
    )
