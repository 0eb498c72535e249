"""``msp audit verify``: recompute every hash chain (as the owner, so every tenant's chain is readable)."""

from __future__ import annotations

import asyncio
import sys
import uuid

import click

from msp_platform.config import get_settings


@click.group("audit")
def audit_cli() -> None:
    """The hash-chained audit log."""


@audit_cli.command("verify")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant's chain (slug).")
def verify(tenant_slug: str | None) -> None:
    """Exit status 1 if any chain was tampered with.

    Every tenant's chain is checked (also one whose head row is gone), plus any other chain that has a head,
    plus the platform chain. Needs the MSP_SECRET_KEY the application uses: the events' hashes are keyed."""
    from sqlalchemy import select

    from msp_platform.audit.service import chains, verify_chain
    from msp_platform.authz.service import system_tenant_context
    from msp_platform.db.engine import Database
    from msp_platform.db.session import set_tenant_context
    from msp_platform.models.tenant import Tenant

    async def _go() -> bool:
        db = Database.create(get_settings())
        try:
            async with db.dangerously_unscoped_session() as session:
                names = {str(t.id): t.slug for t in (await session.scalars(select(Tenant))).all()}
                todo = await session.run_sync(chains)
                if tenant_slug is not None:
                    todo = [c for c in todo if names.get(c) == tenant_slug]
                    if not todo:
                        click.echo(f"no tenant {tenant_slug!r}", err=True)
                        return False
                ok = True
                for chain in todo:
                    tenant_id = _uuid(chain)
                    if tenant_id is not None:
                        # Row-level security binds a non-superuser owner too: read as the chain's tenant.
                        await set_tenant_context(session, system_tenant_context(tenant_id))
                    report = await session.run_sync(verify_chain, chain)
                    label = names.get(chain, chain)
                    if report.valid:
                        click.echo(f"ok       {label}: {report.events} events")
                    else:
                        ok = False
                        where = f" (seq {report.first_bad_seq})" if report.first_bad_seq is not None else ""
                        click.echo(f"TAMPERED {label}: {report.problem}{where}")
                return ok
        finally:
            await db.dispose()

    if not asyncio.run(_go()):
        sys.exit(1)


@audit_cli.command("restore")
@click.option("--tenant", "tenant_slug", default=None, help="The tenant whose chain head is gone (slug).")
@click.option("--platform", "platform", is_flag=True, help="The platform chain instead of a tenant's.")
@click.option("--reason", required=True, help="What was examined and why writing may resume (recorded).")
@click.option("--by", "operator", default=None, help="Who restores it (recorded; default: the OS user).")
def restore(tenant_slug: str | None, platform: bool, reason: str, operator: str | None) -> None:
    """Let a tenant's changes be recorded again after its chain head was deleted.

    While a chain's head row is gone, every change of that tenant is refused (503 audit-log-broken). After
    examining the log (``msp audit verify``), this puts the head back at the last stored event and appends an
    ``audit_chain.restored`` event with what was found, the reason and the operator; altered or missing
    events keep failing ``verify``. A chain whose head is present is left alone."""
    import getpass

    from sqlalchemy import select

    from msp_platform.audit.service import ACTOR, PLATFORM_CHAIN, restore_head
    from msp_platform.authz.service import system_tenant_context
    from msp_platform.db.engine import Database
    from msp_platform.db.session import set_tenant_context
    from msp_platform.models.tenant import Tenant

    if platform == (tenant_slug is not None):
        raise click.UsageError("name one chain: --tenant SLUG or --platform")
    if not reason.strip():
        raise click.UsageError("--reason must say what was examined")
    actor = f"operator:{(operator or getpass.getuser()).strip()[:120]}"

    async def _go() -> bool:
        db = Database.create(get_settings())
        try:
            async with db.dangerously_unscoped_session() as session:
                chain = PLATFORM_CHAIN
                if tenant_slug is not None:
                    tenant = await session.scalar(select(Tenant).where(Tenant.slug == tenant_slug))
                    if tenant is None:
                        click.echo(f"no tenant {tenant_slug!r}", err=True)
                        return False
                    chain = str(tenant.id)
                    await set_tenant_context(session, system_tenant_context(tenant.id))
                session.info[ACTOR] = actor
                outcome = await session.run_sync(restore_head, chain, reason=reason.strip())
                await session.commit()
                label = tenant_slug or PLATFORM_CHAIN
                found = "" if outcome.report.valid else f" (found: {outcome.report.problem})"
                click.echo(
                    f"{'restored' if outcome.restored else 'unchanged'} {label}: {outcome.message}{found}"
                )
                return outcome.restored or outcome.report.valid
        finally:
            await db.dispose()

    if not asyncio.run(_go()):
        sys.exit(1)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
