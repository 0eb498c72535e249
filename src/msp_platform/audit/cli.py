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


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
