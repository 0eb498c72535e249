"""``msp serve --demo``: a ready-to-try embedded installation (migrated, demo tenants, demo accounts)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from sqlalchemy import select

from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.identity.service import create_client_for_slug, create_staff
from msp_platform.models.staff import StaffMember

DEMO_ADMIN = "admin@msp.example"


async def prepare_demo(settings: Settings, *, echo: Callable[[str], None] = print) -> dict[str, str]:
    await migrate.upgrade(settings)
    db = Database.create(settings)
    credentials_file = settings.var_dir / "demo-credentials.json"
    try:
        try:
            from msp_platform.tenants.manifest import apply_directory  # type: ignore[import-untyped,unused-ignore]
        except ImportError:  # tenants arrive with the tenants issue
            apply_directory = None
        if apply_directory is not None:
            await apply_directory(db, settings.tenants_dir, echo=echo)
        credentials: dict[str, str] = {}
        if credentials_file.exists():
            credentials = json.loads(credentials_file.read_text())
        async with db.dangerously_unscoped_session() as session:
            exists = await session.scalar(select(StaffMember.id).where(StaffMember.email == DEMO_ADMIN))
            if exists is None:
                password = secrets.token_urlsafe(12)
                await create_staff(
                    session,
                    email=DEMO_ADMIN,
                    name="Demo MSP Admin",
                    role="msp_admin",
                    tier=3,
                    password=password,
                )
                credentials["msp_admin_email"] = DEMO_ADMIN
                credentials["msp_admin_password"] = password
            if "client_id" not in credentials and apply_directory is not None:
                client_id, secret = await create_client_for_slug(
                    session, tenant_slug="st-marys", name="Demo integration", scopes="", created_by="demo"
                )
                credentials["client_id"] = client_id
                credentials["client_secret"] = secret
            await session.commit()
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(credentials, indent=2))
        credentials_file.chmod(0o600)
    finally:
        await db.dispose()
    echo(f"demo credentials (also in {credentials_file}):")
    for key, value in credentials.items():
        echo(f"  {key}: {value}")
    return credentials
