from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from httpx import AsyncClient
from sqlalchemy import update
from tests.conftest import Factory, Person

from msp_platform.db.engine import Database
from msp_platform.models.tenant import Tenant


@dataclass
class Desk:
    """A tenant with the people who work its incidents."""

    tenant: Tenant
    admin: Person
    user: Person
    agent: Person  # L1, granted this tenant
    l3: Person
    client: AsyncClient
    factory: Factory
    _msp_admin: Person | None = field(default=None, repr=False)
    _groups: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    async def as_admin(self) -> dict[str, str]:
        return await self.factory.headers(self.admin)

    async def as_user(self) -> dict[str, str]:
        return await self.factory.headers(self.user)

    async def as_agent(self) -> dict[str, str]:
        return await self.factory.headers(self.agent, tenant=self.tenant)

    async def as_l3(self) -> dict[str, str]:
        return await self.factory.headers(self.l3, tenant=self.tenant)

    async def as_msp_admin(self, *, tenant: bool = True) -> dict[str, str]:
        if self._msp_admin is None:
            self._msp_admin = await self.factory.staff(role="msp_admin", tier=None)
        return await self.factory.headers(self._msp_admin, tenant=self.tenant if tenant else None)

    async def group(
        self, label: str = "L1", *, tier: int = 1, members: Sequence[Person] = (), **fields: Any
    ) -> dict[str, Any]:
        """An assignment group (names are global, so each desk's are made unique), with members."""
        if label in self._groups:
            return self._groups[label]
        headers = await self.as_msp_admin(tenant=False)
        created = await self.client.post(
            "/api/v1/assignment-groups",
            json={"name": f"{label} {uuid.uuid4().hex[:8]}", "tier": tier, **fields},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        group = dict(created.json())
        for person in members:
            added = await self.client.post(
                f"/api/v1/assignment-groups/{group['id']}/members",
                json={"staff_id": str(person.id)},
                headers=headers,
            )
            assert added.status_code == 201, added.text
        self._groups[label] = group
        return group

    async def history(self, incident: dict[str, Any], headers: dict[str, str] | None = None) -> list[Any]:
        """Every event of the incident (all pages)."""
        items: list[Any] = []
        params: dict[str, Any] = {"limit": 200}
        while True:
            response = await self.client.get(
                f"/api/v1/incidents/{incident['id']}/events",
                params=params,
                headers=headers or await self.as_agent(),
            )
            assert response.status_code == 200, response.text
            body = response.json()
            items.extend(body["items"])
            if not body["next_cursor"]:
                return items
            params["cursor"] = body["next_cursor"]

    async def raise_incident(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        body = {"title": "Printer on 3 West is jammed", "impact": 3, "urgency": 3, **fields}
        response = await self.client.post(
            "/api/v1/incidents", json=body, headers=headers or await self.as_admin()
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def move(
        self, incident: dict[str, Any], to: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> Any:
        body: dict[str, Any] = {"to": to, **extra}
        if to == "on_hold":
            body.setdefault("on_hold_reason", "awaiting_caller")
        if to == "resolved":
            body.setdefault("resolution_code", "solved_permanently")
            body.setdefault("resolution_notes", "Cleared the jam and tested a page.")
        if to == "cancelled":
            body.setdefault("reason", "Raised by mistake")
        return await self.client.post(
            f"/api/v1/incidents/{incident['id']}/transitions",
            json=body,
            headers=headers or await self.as_agent(),
        )


async def set_tenant_calendar(
    db: Database, desk: Desk, calendar: dict[str, Any], timezone: str = "UTC"
) -> None:
    """Set the desk's tenant's business calendar and time zone directly in the database."""
    async with db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Tenant)
            .where(Tenant.id == desk.tenant.id)
            .values(timezone=timezone, business_calendar=calendar)
        )
        await session.commit()
