"""``msp``: serve, worker, database, keys and administration commands."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import click

from msp_platform.config import BrokerKind, Settings, SettingsError, get_settings

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:  # a wrong MSP_* variable is a message, not a traceback
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Main)
def main() -> None:
    """msp-platform: multi-tenant MSP platform API."""


# --- serve ------------------------------------------------------------------------------------------------


def ensure_port_free(host: str, port: int) -> None:
    """Refuse to start on an address something already listens on.

    granian binds with SO_REUSEPORT, so a second instance on a busy port would start "successfully" and the
    kernel would split connections between two unrelated servers. A plain bind (SO_REUSEADDR only, which
    tolerates sockets in TIME_WAIT after a restart) fails instead."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot bind {host}:{port}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"{host}:{port} is already in use (another msp serve, or another program). Stop it, or "
                    "choose another port with --port or MSP_PORT."
                ) from exc
            raise click.ClickException(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc


@main.command()
@click.option("--host", default=None, help="Bind address (MSP_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (MSP_PORT, default 8000).")
@click.option("--workers", type=int, default=None, help="API processes (MSP_API_WORKERS).")
@click.option("--demo", is_flag=True, help="First migrate, apply tenants/ and create demo accounts.")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Serve the API with granian."""
    from granian import Granian
    from granian.constants import Interfaces

    settings = get_settings()
    address, bind_port = host or settings.host, port or settings.port
    processes = workers or settings.api_workers
    if processes > 1 and settings.broker_kind is BrokerKind.in_process:
        raise click.UsageError("several API processes need a shared broker: set MSP_BROKER_URL")
    ensure_port_free(address, bind_port)
    if demo:
        from msp_platform.demo import prepare_demo

        _run(prepare_demo(settings, echo=click.echo))
    Granian(
        "msp_platform.asgi:app",
        address=address,
        port=bind_port,
        interface=Interfaces.ASGI,
        workers=processes,
        log_access=False,
    ).serve()


# --- worker -----------------------------------------------------------------------------------------------


@main.command()
@click.option("--threads", type=int, default=None, help="Worker threads (MSP_WORKER_THREADS).")
@click.option("--queues", default="high,default,low", show_default=True)
@click.option("--no-scheduler", is_flag=True, help="Do not run the scheduler and outbox relay here.")
def worker(threads: int | None, queues: str, no_scheduler: bool) -> None:
    """Run Dramatiq workers (plus the scheduler and outbox relay) against MSP_BROKER_URL."""
    import dramatiq

    from msp_platform.kit.logging import configure_logging
    from msp_platform.worker.runtime import BackgroundLoops, WorkerRuntime, create_broker, queue_name

    settings = get_settings()
    if settings.broker_kind is BrokerKind.in_process:
        raise click.UsageError(
            "MSP_BROKER_URL is unset: in embedded mode the API process runs the workers itself. "
            "Set MSP_BROKER_URL=redis://... or amqp://... to run separate workers."
        )
    configure_logging(settings.log_level, json=settings.log_json)
    _run(_check_owner_role(settings))
    broker = create_broker(settings)
    runtime = WorkerRuntime.install(settings, broker)
    work = dramatiq.Worker(
        broker,
        worker_threads=threads or settings.worker_threads,
        queues={queue_name(settings.broker_namespace, q.strip()) for q in queues.split(",") if q.strip()},
        # How often idle consumers wake up, which bounds how late a delayed message (a timer) is picked up.
        worker_timeout=100,
    )
    stop = threading.Event()
    loop_thread: threading.Thread | None = None

    if not no_scheduler:

        def _loops() -> None:
            async def _main() -> None:
                loops = BackgroundLoops(runtime, runtime.database())
                loops.start()
                await asyncio.to_thread(stop.wait)
                await loops.stop()
                await runtime.dispose_current()

            asyncio.run(_main())

        loop_thread = threading.Thread(target=_loops, name="msp-scheduler", daemon=True)

    def _shutdown(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    work.start()
    if loop_thread is not None:
        loop_thread.start()
    click.echo(f"worker running: broker={settings.broker_kind.value} queues={queues}", err=True)
    stop.wait()
    work.stop(timeout=30_000)
    if loop_thread is not None:
        loop_thread.join(timeout=15)
    broker.close()


async def _check_owner_role(settings: Settings) -> None:
    from msp_platform.app import assert_owner_bypasses_rls
    from msp_platform.db.engine import Database

    db = Database.create(settings)
    try:
        await assert_owner_bypasses_rls(db)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        await db.dispose()


# --- db ---------------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic, as the owner role)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    from msp_platform.db import migrate

    settings = get_settings()
    _run(migrate.upgrade(settings, revision))
    click.echo(f"database at {_run(migrate.current(settings))}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    from msp_platform.db import migrate

    settings = get_settings()
    _run(migrate.downgrade(settings, revision))
    click.echo(f"database at {_run(migrate.current(settings))}")


@db.command("current")
def db_current() -> None:
    from msp_platform.db import migrate

    click.echo(_run(migrate.current(get_settings())) or "empty")


# --- keys -------------------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Access-token signing keys."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key active; the old one stays published until its tokens expire."""
    from msp_platform.auth.keys import KeyStore

    async def _go(settings: Settings) -> str:
        async with _owner_session(settings) as session:
            kid = await KeyStore(settings).rotate(session)
            await session.commit()
            return kid

    click.echo(f"active key: {_run(_go(get_settings()))}")


# --- admin ------------------------------------------------------------------------------------------------


@main.group()
def staff() -> None:
    """MSP staff accounts."""


@staff.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["msp_admin", "msp_agent"]), default="msp_agent", show_default=True)
@click.option("--tier", type=click.IntRange(1, 3), default=None)
@click.option("--password", envvar="MSP_NEW_PASSWORD", default=None, help="Prompted for when omitted.")
def staff_create(email: str, name: str, role: str, tier: int | None, password: str | None) -> None:
    from msp_platform.identity.service import create_staff

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def _go(settings: Settings) -> str:
        async with _owner_session(settings) as session:
            member = await create_staff(
                session, email=email, name=name, role=role, tier=tier, password=password
            )
            await session.commit()
            return str(member.id)

    click.echo(f"staff member {_run(_go(get_settings()))} created")


@main.group()
def clients() -> None:
    """OAuth2 integration clients."""


@clients.command("create")
@click.option("--tenant", "tenant_slug", required=True, help="Tenant slug.")
@click.option("--name", required=True)
@click.option(
    "--scope", "scopes", default="", help="Space-separated scopes (default: all a client may hold)."
)
def clients_create(tenant_slug: str, name: str, scopes: str) -> None:
    """Create a client_credentials client; prints the secret once."""
    from msp_platform.identity.service import create_client_for_slug

    async def _go(settings: Settings) -> tuple[str, str]:
        async with _owner_session(settings) as session:
            client_id, secret = await create_client_for_slug(
                session, tenant_slug=tenant_slug, name=name, scopes=scopes, created_by="cli"
            )
            await session.commit()
            return client_id, secret

    client_id, secret = _run(_go(get_settings()))
    click.echo(f"client_id={client_id}\nclient_secret={secret}")


@main.group()
def tenants() -> None:
    """Tenant manifests (YAML in tenants/)."""


@tenants.command("apply")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--dry-run", is_flag=True, help="Show what would change; store nothing.")
def tenants_apply(path: Path | None, dry_run: bool) -> None:
    """Create or update the tenants, sites and users described by the manifests at PATH (a file or a
    directory; default: MSP_TENANTS_DIR). Everything is validated first and applied in one transaction."""
    from msp_platform.db.engine import Database
    from msp_platform.tenants.manifest import ManifestError, apply_directory

    settings = get_settings()

    async def _go() -> None:
        db = Database.create(settings)
        try:
            await apply_directory(db, path or settings.tenants_dir, echo=click.echo, dry_run=dry_run)
        finally:
            await db.dispose()

    try:
        _run(_go())
    except ManifestError as exc:
        click.echo(f"{len(exc.problems)} problem(s); nothing was applied:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)


class _owner_session:
    def __init__(self, settings: Settings) -> None:
        from msp_platform.db.engine import Database

        self.db = Database.create(settings)

    async def __aenter__(self) -> Any:
        self.session = self.db.dangerously_unscoped_session()
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.db.dispose()


@main.group()
def demo() -> None:
    """Helpers for trying the platform."""


@demo.command("onboarding-csv")
@click.option(
    "--tenant", "tenant_slug", default="st-marys", show_default=True, help="A manifest in tenants/."
)
@click.option("--users", type=int, default=1000, show_default=True)
@click.option("--devices", type=int, default=1000, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Directory  [default: MSP_VAR_DIR]"
)
def demo_onboarding_csv(tenant_slug: str, users: int, devices: int, out: Path | None) -> None:
    """Write users.csv and devices.csv for POST /api/v1/users/import and /api/v1/devices/import, using the
    tenant's site codes from its manifest."""
    import yaml

    from msp_platform.onboarding_csv import write_onboarding_files

    settings = get_settings()
    manifest_path = settings.tenants_dir / f"{tenant_slug}.yaml"
    if not manifest_path.exists():
        raise click.UsageError(f"no manifest {manifest_path}")
    manifest = yaml.safe_load(manifest_path.read_text())
    codes = [site["code"] for site in manifest.get("sites", [])] or [""]
    domain = f"{tenant_slug.replace('-', '')}.example"
    users_path, devices_path = write_onboarding_files(
        out or settings.var_dir, domain=domain, site_codes=codes, users=users, devices=devices
    )
    click.echo(f"{users_path} ({users} users)\n{devices_path} ({devices} devices)")


def _register_domain_commands() -> None:
    from msp_platform.audit.cli import audit_cli

    main.add_command(audit_cli)


_register_domain_commands()
