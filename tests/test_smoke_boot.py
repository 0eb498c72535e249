from __future__ import annotations

import pytest
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


def test_an_unknown_broker_scheme_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from msp_platform.config import SettingsError, get_settings

    monkeypatch.setenv("MSP_BROKER_URL", "nats://127.0.0.1:4222")
    with pytest.raises(SettingsError, match="MSP_BROKER_URL: must start with redis://"):
        get_settings()
    monkeypatch.setenv("MSP_BROKER_URL", "amqp://127.0.0.1:5672")
    assert get_settings().broker_kind.value == "rabbitmq"
