"""``msp serve --demo``: a ready-to-try embedded installation (migrated, demo tenants, demo accounts)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from sqlalchemy import select

from msp_platform.auth.passwords import hash_password
from msp_platform.authz.service import system_tenant_context
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.identity.service import create_client_for_slug, create_staff
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User, UserRole
from msp_platform.tenants.manifest import apply_directory

DEMO_ADMIN = "admin@msp.example"
DEMO_TENANT = "st-marys"
DEMO_TENANT_ADMIN = "demo-admin@stmarys.example"


async def _demo_tenant_admin(db: Database, credentials: dict[str, str]) -> None:
    """A tenant administrator of st-marys with a known password. Created once; if the credentials file lost
    its password (or the database was reset), a new one is set: the demo always prints one that works."""
    async with db.dangerously_unscoped_session() as session:
        tenant = await session.scalar(select(Tenant).where(Tenant.slug == DEMO_TENANT))
        if tenant is None:
            return
        # Scoped from here: the user query sees this tenant only and the new row is stamped with it.
        session.info["unscoped"] = False
        await set_tenant_context(session, system_tenant_context(tenant.id))
        user = await session.scalar(select(User).where(User.email == DEMO_TENANT_ADMIN))
        known = credentials.get("tenant_admin_email") == DEMO_TENANT_ADMIN
        if user is not None and known and credentials.get("tenant_admin_password"):
            return
        password = secrets.token_urlsafe(12)
        if user is None:
            user = User(
                email=DEMO_TENANT_ADMIN,
                name="Demo St. Mary's IT Admin",
                role=UserRole.tenant_admin,
                title="IT Manager",
                department="Information Services",
                active=True,
            )
            session.add(user)
        user.password_hash = hash_password(password)
        await session.commit()
    credentials["tenant_admin_tenant"] = DEMO_TENANT
    credentials["tenant_admin_email"] = DEMO_TENANT_ADMIN
    credentials["tenant_admin_password"] = password


async def prepare_demo(settings: Settings, *, echo: Callable[[str], None] = print) -> dict[str, str]:
    await migrate.upgrade(settings)
    db = Database.create(settings)
    credentials_file = settings.var_dir / "demo-credentials.json"
    try:
        await apply_directory(db, settings.tenants_dir, echo=echo)
        credentials: dict[str, str] = {}
        if credentials_file.exists():
            credentials = json.loads(credentials_file.read_text())
        async with db.dangerously_unscoped_session() as session:
            admin = await session.scalar(select(StaffMember).where(StaffMember.email == DEMO_ADMIN))
            if admin is not None and not credentials.get("msp_admin_password"):
                # The credentials file was lost: a new password, so the one printed below works.
                password = secrets.token_urlsafe(12)
                admin.password_hash = hash_password(password)
                credentials["msp_admin_email"] = DEMO_ADMIN
                credentials["msp_admin_password"] = password
            if admin is None:
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
            has_tenant = await session.scalar(select(Tenant.id).where(Tenant.slug == DEMO_TENANT))
            has_client = await session.scalar(
                select(OAuthClient.client_id).where(OAuthClient.client_id == credentials.get("client_id", ""))
            )
            if has_client is None and has_tenant is not None:
                client_id, secret = await create_client_for_slug(
                    session, tenant_slug=DEMO_TENANT, name="Demo integration", scopes="", created_by="demo"
                )
                credentials["client_id"] = client_id
                credentials["client_secret"] = secret
            await session.commit()
        await _demo_tenant_admin(db, credentials)
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(credentials, indent=2))
        credentials_file.chmod(0o600)
    finally:
        await db.dispose()
    echo(f"demo credentials (also in {credentials_file}):")
    for key, value in credentials.items():
        echo(f"  {key}: {value}")
    return credentials
