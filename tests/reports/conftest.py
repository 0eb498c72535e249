"""Report fixtures: incidents and SLA rows written directly as the owner, with timestamps in the past, so
every expected figure can be computed by hand."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import update
from tests.conftest import Factory, Person

from msp_platform.db.engine import Database
from msp_platform.kit.ids import new_id
from msp_platform.models.incident import Channel, Incident, IncidentState
from msp_platform.models.site import Site, SiteKind
from msp_platform.models.sla import IncidentSla
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant

_numbers = itertools.count(1)


def at(text: str) -> datetime:
    """An ISO 8601 UTC instant: at("2025-03-09T07:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class Seeder:
    db: Database

    async def set_timezone(self, tenant: Tenant, timezone: str) -> None:
        async with self.db.dangerously_unscoped_session() as session:
            await session.execute(update(Tenant).where(Tenant.id == tenant.id).values(timezone=timezone))
            await session.commit()
        tenant.timezone = timezone

    async def site(self, tenant: Tenant, code: str, *, timezone: str | None = None) -> uuid.UUID:
        site = Site(
            tenant_id=tenant.id,
            id=new_id(),
            code=code,
            name=f"{code} campus",
            kind=SiteKind.hospital,
            timezone=timezone,
            active=True,
        )
        async with self.db.dangerously_unscoped_session() as session:
            session.add(site)
            await session.commit()
        return site.id

    async def incident(
        self,
        tenant: Tenant,
        opened_at: datetime,
        *,
        priority: int = 3,
        state: str = "new",
        channel: str = "phone",
        category: str | None = None,
        site_id: uuid.UUID | None = None,
        responded_after: timedelta | None = None,
        resolved_at: datetime | None = None,
        closed_at: datetime | None = None,
        reopen_count: int = 0,
        fcr: bool = False,
        sla: dict[str, str | tuple[str, datetime]] | None = None,
    ) -> uuid.UUID:
        """One incident; ``sla`` maps a target to its stored status (or (status, due_at))."""
        number = next(_numbers)
        incident = Incident(
            tenant_id=tenant.id,
            id=new_id(),
            number=number,
            key=f"R-{number:07d}",
            title="Report fixture",
            description="",
            reported_by="test",
            site_id=site_id,
            category=category,
            channel=Channel(channel),
            impact=3,
            urgency=3,
            patient_care_impact=False,
            priority=priority,
            priority_matrix_version=1,
            tier=1,
            state=IncidentState(state),
            opened_at=opened_at,
            first_response_at=opened_at + responded_after if responded_after is not None else None,
            resolved_at=resolved_at,
            closed_at=closed_at,
            reopen_count=reopen_count,
            first_contact_resolution=fcr,
            version=1,
            sla_policy_version=1 if sla else None,
        )
        rows: list[IncidentSla] = []
        for target, outcome in (sla or {}).items():
            status, due_at = (
                outcome if isinstance(outcome, tuple) else (outcome, opened_at + timedelta(hours=1))
            )
            rows.append(
                IncidentSla(
                    tenant_id=tenant.id,
                    incident_id=incident.id,
                    target=target,
                    policy_version=1,
                    priority=priority,
                    duration_seconds=3600,
                    status=status,
                    due_at=due_at,
                    breached_at=due_at if status == "breached" else None,
                    stopped_at=None,
                    elapsed_seconds=0,
                    paused_seconds=0,
                    computed_at=opened_at,
                    opened_at=opened_at,
                )
            )
        async with self.db.dangerously_unscoped_session() as session:
            session.add(incident)
            await session.flush()
            session.add_all(rows)
            await session.commit()
        return incident.id

    async def staff_with_grants(self, grants: list[tuple[Tenant, bool]]) -> Person:
        """An L1 agent with these (tenant, include_children) grants."""
        email = f"s-{uuid.uuid4().hex[:8]}@msp.example"
        from tests.conftest import TEST_PASSWORD_HASH

        member = StaffMember(
            id=new_id(),
            email=email,
            name=email,
            role=StaffRole.msp_agent,
            tier=1,
            password_hash=TEST_PASSWORD_HASH,
            active=True,
        )
        async with self.db.dangerously_unscoped_session() as session:
            session.add(member)
            await session.flush()
            for tenant, children in grants:
                session.add(StaffGrant(staff_id=member.id, tenant_id=tenant.id, include_children=children))
            await session.commit()
        return Person(member.id, email, None, "msp_agent")


@pytest.fixture
def seed(owner_db: Database) -> Seeder:
    return Seeder(owner_db)


@dataclass
class Reports:
    client: AsyncClient
    factory: Factory

    async def get(
        self,
        report: str,
        headers: dict[str, str],
        *,
        start: str,
        end: str,
        status: int = 200,
        **params: Any,
    ) -> Response:
        response = await self.client.get(
            f"/api/v1/reports/{report}", params={"from": start, "to": end, **params}, headers=headers
        )
        assert response.status_code == status, response.text
        return response

    async def json(self, report: str, headers: dict[str, str], *, start: str, end: str, **params: Any) -> Any:
        return (await self.get(report, headers, start=start, end=end, **params)).json()

    async def admin_of(self, tenant: Tenant) -> dict[str, str]:
        return await self.factory.headers(await self.factory.user(tenant, role="tenant_admin"))


@pytest.fixture
def reports(client: AsyncClient, factory: Factory) -> Reports:
    return Reports(client, factory)


def by_priority(rows: list[dict[str, Any]], **match: Any) -> dict[int | None, dict[str, Any]]:
    """The rows matching ``match``, keyed by priority (None: the total row)."""
    return {r["priority"]: r for r in rows if all(r.get(k) == v for k, v in match.items())}
