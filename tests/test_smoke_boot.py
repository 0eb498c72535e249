from __future__ import annotations

from httpx import AsyncClient
from tests.conftest import Factory


async def test_health(client: AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def test_client_credentials_reach_protected_endpoint(factory: Factory, client: AsyncClient) -> None:
    tenant = await factory.tenant()
    client_id, secret = await factory.integration_client(tenant)
    token = await factory.client_token(client_id, secret)
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == str(tenant.id)
