from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient
from tests.conftest import Factory, Person

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

    async def as_admin(self) -> dict[str, str]:
        return await self.factory.headers(self.admin)

    async def as_user(self) -> dict[str, str]:
        return await self.factory.headers(self.user)

    async def as_agent(self) -> dict[str, str]:
        return await self.factory.headers(self.agent, tenant=self.tenant)

    async def as_l3(self) -> dict[str, str]:
        return await self.factory.headers(self.l3, tenant=self.tenant)

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
