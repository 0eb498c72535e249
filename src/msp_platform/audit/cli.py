"""``msp audit verify``: recompute every hash chain (as the owner, so every tenant's chain is readable)."""

from __future__ import annotations

import asyncio
import sys

import click

from msp_platform.config import get_settings


@click.group("audit")
def audit_cli() -> None:
    """The hash-chained audit log."""


@audit_cli.command("verify")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant's chain (slug).")
def verify(tenant_slug: str | None) -> None:
    """Exit status 1 if any chain was tampered with."""
    from sqlalchemy import select

    from msp_platform.audit.service import chains, verify_chain
    from msp_platform.db.engine import Database
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
                        click.echo(f"no audit events for tenant {tenant_slug}", err=True)
                ok = True
                for chain in todo:
                    report = await session.run_sync(verify_chain, chain)
                    label = names.get(chain, chain)
                    if report.valid:
                        click.echo(f"ok       {label}: {report.events} events")
                    else:
                        ok = False
                        click.echo(f"TAMPERED {label}: {report.problem} (seq {report.first_bad_seq})")
                return ok
        finally:
            await db.dispose()

    if not asyncio.run(_go()):
        sys.exit(1)
