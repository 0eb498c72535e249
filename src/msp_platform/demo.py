"""``msp serve --demo``: a ready-to-try embedded installation (migrated, demo tenants with their SLA policies,
demo accounts, and on-call and escalation for St. Mary's).

Everything is created through the services the API uses (their checks, their audit events), once: running the
demo again finds what it made by email or name and leaves it alone, also when it was edited through the API.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import set_actor
from msp_platform.auth.passwords import hash_password
from msp_platform.authz.service import system_tenant_context
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.escalations import service as escalations_service
from msp_platform.escalations.repository import EscalationRepository
from msp_platform.escalations.schemas import PolicyIn as EscalationPolicyIn
from msp_platform.identity.repository import StaffRepository
from msp_platform.identity.service import create_client_for_slug, create_staff, grant_tenant
from msp_platform.kit.errors import PlatformError
from msp_platform.kit.time import utcnow
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User, UserRole
from msp_platform.oncall import service as oncall_service
from msp_platform.oncall.repository import OncallRepository
from msp_platform.oncall.schemas import ScheduleCreate
from msp_platform.tenants.manifest import apply_directory

DEMO_ADMIN = "admin@msp.example"
DEMO_TENANT = "st-marys"
DEMO_TENANT_ADMIN = "demo-admin@stmarys.example"
DEMO_ACTOR = "cli:demo"

# MSP engineers who work St. Mary's: (email, name, tier). No passwords: the demo's MSP admin sees and
# acknowledges their pages; set one with `msp staff` commands to sign in as them.
DEMO_AGENTS = (
    ("jordan.reyes@msp.example", "Jordan Reyes", 1),
    ("sam.whitaker@msp.example", "Sam Whitaker", 1),
    ("avery.kim@msp.example", "Avery Kim", 2),
    ("morgan.ellis@msp.example", "Morgan Ellis", 3),
)
DEMO_SCHEDULE = "St. Mary's primary on-call"
DEMO_ESCALATION = "St. Mary's P1 and SLA breaches"
# The weekly rotation hands off on Mondays at 08:00 Chicago time, counted from a Monday well in the past so
# that someone is on call whenever the demo runs.
ROTATION_START = "2025-01-06T08:00:00-06:00"


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


async def _demo_agents(session: AsyncSession, tenant: Tenant) -> dict[str, StaffMember]:
    """The MSP engineers of St. Mary's, each granted the tenant (the grant is what lets them be scheduled and
    paged for it). Staff are not tenant rows: the session is unscoped here."""
    agents: dict[str, StaffMember] = {}
    repo = StaffRepository(session)
    for email, name, tier in DEMO_AGENTS:
        member = await session.scalar(select(StaffMember).where(StaffMember.email == email))
        if member is None:
            member = await create_staff(
                session, email=email, name=name, role="msp_agent", tier=tier, password=None
            )
        if await repo.grant(member.id, tenant.id) is None:
            await grant_tenant(session, member.id, tenant.id, include_children=False)
        agents[email] = member
    return agents


def _schedule_body(agents: dict[str, StaffMember]) -> ScheduleCreate:
    """One weekly layer rotating the tier 1 and tier 2 engineers: one of them carries the pager for a week."""
    rotation = [agents[email] for email, _, tier in DEMO_AGENTS if tier in (1, 2)]
    return msgspec.convert(
        {
            "name": DEMO_SCHEDULE,
            "timezone": "America/Chicago",
            "description": "Primary pager for St. Mary's clinical systems; weekly handoff Monday 08:00.",
            "layers": [
                {
                    "name": "Weekly primary",
                    "start_at": datetime.fromisoformat(ROTATION_START),
                    "turn_length": {"count": 1, "unit": "weeks"},
                    "participants": [{"staff_id": a.id} for a in rotation],
                }
            ],
        },
        ScheduleCreate,
    )


def _escalation_body(schedule_id: uuid.UUID) -> EscalationPolicyIn:
    """A P1, or any breached response or resolution target, pages whoever is on call now; nobody
    acknowledging within 15 minutes pages every tier-3 engineer with access to the tenant; then once more."""
    return msgspec.convert(
        {
            "name": DEMO_ESCALATION,
            "repeat_count": 1,
            "triggers": [
                {"type": "incident_created", "priorities": [1]},
                {"type": "sla_breached"},
            ],
            "levels": [
                {"delay_minutes": 0, "targets": [{"kind": "schedule", "schedule_id": schedule_id}]},
                {"delay_minutes": 15, "targets": [{"kind": "tier_group", "tier": 3}]},
            ],
        },
        EscalationPolicyIn,
    )


async def _demo_oncall(db: Database, echo: Callable[[str], None]) -> None:
    """St. Mary's on-call: engineers granted the tenant, a published weekly schedule (it passes the gap check)
    and an escalation policy paging it, each created once."""
    async with db.dangerously_unscoped_session() as session:
        set_actor(session, DEMO_ACTOR)
        tenant = await session.scalar(select(Tenant).where(Tenant.slug == DEMO_TENANT))
        if tenant is None:
            return
        agents = await _demo_agents(session, tenant)
        await session.commit()
        # Scoped from here: schedules and policies are the tenant's rows.
        session.info["unscoped"] = False
        await set_tenant_context(session, system_tenant_context(tenant.id))
        try:
            schedule = await OncallRepository(session).by_name(DEMO_SCHEDULE)
            if schedule is None:
                schedule = await oncall_service.create_schedule(session, tenant.id, _schedule_body(agents))
                await oncall_service.publish(session, schedule)
                echo(f"+ on-call schedule {DEMO_SCHEDULE!r} (published)")
            policy = await EscalationRepository(session).policy_by_name(DEMO_ESCALATION)
            if policy is None:
                await escalations_service.save_policy(session, tenant.id, _escalation_body(schedule.id))
                echo(f"+ escalation policy {DEMO_ESCALATION!r}")
        except PlatformError as exc:
            # Something made through the API since (an unpublished edit of the schedule...): the demo still
            # starts, without the part that no longer fits.
            await session.rollback()
            fields = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
            echo(f"! on-call for {DEMO_TENANT} not set up: {exc.detail} {fields}".rstrip())
            return
        on_call = await oncall_service.paging_on_call(session, schedule.id, utcnow())
        names = {a.id: a.name for a in agents.values()}
        who = ", ".join(names.get(p.staff_id, p.key) for p in on_call.people if p.staff_id) or "nobody"
        await session.commit()
    echo(f"on call for {DEMO_TENANT} now: {who}")


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
        await _demo_oncall(db, echo)
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(credentials, indent=2))
        credentials_file.chmod(0o600)
    finally:
        await db.dispose()
    echo(f"demo credentials (also in {credentials_file}):")
    for key, value in credentials.items():
        echo(f"  {key}: {value}")
    return credentials
