"""The webhook endpoints API: who may use it, validation, secrets shown once and never stored in clear
elsewhere, the cross-tenant matrix, Idempotency-Key."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from tests.conftest import Factory
from tests.support.isolation import all_ids, assert_isolated

from msp_platform.db.engine import Database
from msp_platform.models.oncall import WebhookEndpoint
from msp_platform.models.tenant import Tenant

HOOK = "https://hooks.example.org/msp"


async def tenant_admin(factory: Factory) -> tuple[Tenant, dict[str, str]]:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    return tenant, await factory.headers(admin)


async def create(client: AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/webhooks", json={"url": HOOK, "event_types": ["incident.*"], **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_lifecycle_and_the_secret_is_shown_once(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    created = await create(client, headers, description="Pager bridge", event_types=["incident.*", "page.*"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert (created["url"], created["active"], created["tenant_id"]) == (HOOK, True, str(tenant.id))
    path = f"/api/v1/webhooks/{created['id']}"

    fetched = await client.get(path, headers=headers)
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert secret not in fetched.text
    listed = await client.get("/api/v1/webhooks", headers=headers)
    assert [e["id"] for e in listed.json()["items"]] == [created["id"]]
    assert secret not in listed.text

    patched = await client.patch(
        path, json={"event_types": ["incident.sla_*"], "active": False}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["event_types"], patched.json()["active"], patched.json()["description"]) == (
        ["incident.sla_*"],
        False,
        "Pager bridge",
    )
    assert [
        e["id"]
        for e in (await client.get("/api/v1/webhooks", params={"active": True}, headers=headers)).json()[
            "items"
        ]
    ] == []

    rotated = await client.post(f"{path}/rotate-secret", headers=headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    assert rotated.json()["previous_secret_expires_at"]

    # At rest: encrypted, never in clear.
    async with owner_db.dangerously_unscoped_session() as session:
        row = await session.scalar(
            select(WebhookEndpoint).where(WebhookEndpoint.id == uuid.UUID(created["id"]))
        )
        assert row is not None
        assert secret not in row.secret_encrypted
        assert new_secret not in row.secret_encrypted
        sealed = row.secret_encrypted

    # The audit log records the endpoint's life, never a secret (clear or sealed).
    audit = await client.get("/api/v1/audit-events", params={"limit": 200}, headers=headers)
    assert audit.status_code == 200, audit.text
    actions = {e["action"] for e in audit.json()["items"] if e["object_id"] == created["id"]}
    assert {"webhook_endpoint.created", "webhook_endpoint.updated"} <= actions
    for value in (secret, new_secret, sealed, "secret_encrypted"):
        assert value not in audit.text

    assert (await client.delete(path, headers=headers)).status_code == 204
    assert (await client.get(path, headers=headers)).status_code == 404
    assert (await client.delete(path, headers=headers)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.org/x"}, "url"),
        ({"url": "ftp://hooks.example.org/x"}, "url"),
        ({"url": "https://user:secret@hooks.example.org/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["Incident.*"]}, "event_types[0]"),
        ({"event_types": ["incident.*", "incident..x"]}, "event_types[1]"),
        ({"event_types": ["incident.?"]}, "event_types[0]"),
        ({"event_types": ["page.*", "page.*"]}, "event_types[1]"),
        ({"description": "x" * 201}, "description"),
    ],
)
async def test_bad_endpoints_are_refused(
    factory: Factory, client: AsyncClient, body: dict[str, Any], field: str
) -> None:
    _, headers = await tenant_admin(factory)
    response = await client.post(
        "/api/v1/webhooks", json={"url": HOOK, "event_types": ["incident.*"], **body}, headers=headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert (await client.get("/api/v1/webhooks", headers=headers)).json()["items"] == []


async def test_bad_updates_and_unknown_fields_are_refused(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    created = await create(client, headers)
    path = f"/api/v1/webhooks/{created['id']}"
    for body, field in (
        ({"url": "http://example.org/x"}, "url"),
        ({"event_types": ["*", "bad pattern"]}, "event_types[1]"),
        ({"active": None}, "active"),
    ):
        response = await client.patch(path, json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]
    assert (await client.patch(path, json={"secret": "whsec_mine"}, headers=headers)).status_code in {
        400,
        422,
    }
    assert (
        await client.post(
            "/api/v1/webhooks", json={"url": HOOK, "event_types": ["*"], "secret": "whsec_x"}, headers=headers
        )
    ).status_code in {400, 422}
    assert (await client.get(path, headers=headers)).json()["url"] == HOOK


async def test_who_may_manage_webhooks(factory: Factory, client: AsyncClient) -> None:
    tenant, admin_headers = await tenant_admin(factory)
    created = await create(client, admin_headers)
    # MSP admins act on the tenant with MSP-Tenant.
    msp_admin = await factory.staff(role="msp_admin", tier=None)
    staff_headers = await factory.headers(msp_admin, tenant=tenant)
    assert (await client.get(f"/api/v1/webhooks/{created['id']}", headers=staff_headers)).status_code == 200
    by_staff = await client.post(
        "/api/v1/webhooks", json={"url": HOOK, "event_types": ["page.*"]}, headers=staff_headers
    )
    assert by_staff.status_code == 201, by_staff.text
    # ...and must name it.
    no_tenant = await client.get("/api/v1/webhooks", headers=await factory.headers(msp_admin))
    assert no_tenant.status_code == 400
    # Agents, tenant users: no.
    agent = await factory.staff(role="msp_agent", grants=[tenant])
    user = await factory.user(tenant)
    for headers in (await factory.headers(agent, tenant=tenant), await factory.headers(user)):
        assert (await client.get("/api/v1/webhooks", headers=headers)).status_code == 403
        assert (
            await client.post("/api/v1/webhooks", json={"url": HOOK, "event_types": ["*"]}, headers=headers)
        ).status_code == 403
    # Integration clients may read, never write.
    client_id, client_secret = await factory.integration_client(tenant, scopes="clients:read")
    token = await factory.client_token(client_id, client_secret)
    bearer = {"Authorization": f"Bearer {token}"}
    listed = await client.get("/api/v1/webhooks", headers=bearer)
    assert listed.status_code == 200
    assert {e["id"] for e in listed.json()["items"]} == {created["id"], by_staff.json()["id"]}
    assert (
        await client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=bearer)
    ).status_code == 403


async def test_cross_tenant_matrix(factory: Factory, client: AsyncClient) -> None:
    mine, my_headers = await tenant_admin(factory)
    _theirs, their_headers = await tenant_admin(factory)
    their_hook = await create(
        client, their_headers, url="https://theirs.example.org/secret-path-b", description="B's bridge"
    )
    mine_hook = await create(client, my_headers)
    test = await client.post(f"/api/v1/webhooks/{their_hook['id']}/test", headers=their_headers)
    assert test.status_code == 202, test.text
    their_delivery = test.json()["id"]
    my_test = await client.post(f"/api/v1/webhooks/{mine_hook['id']}/test", headers=my_headers)
    my_delivery = my_test.json()["id"]
    base = f"/api/v1/webhooks/{their_hook['id']}"
    secrets = ["theirs.example.org", "B's bridge", their_hook["secret"]]

    # A's tenant admin, and an MSP admin acting on A.
    msp_admin = await factory.staff(role="msp_admin", tier=None)
    for headers in (my_headers, await factory.headers(msp_admin, tenant=mine)):
        await assert_isolated(
            client,
            headers,
            foreign_paths=[base],
            patch_body={"description": "mine now"},
            lists=["/api/v1/webhooks", f"/api/v1/webhooks/{mine_hook['id']}/deliveries"],
            foreign_ids=[their_hook["id"], their_delivery],
            secrets=secrets,
        )
        for method, path in (
            ("GET", f"{base}/deliveries"),
            ("GET", f"{base}/deliveries/{their_delivery}"),
            ("POST", f"{base}/deliveries/{their_delivery}/replay"),
            ("POST", f"{base}/rotate-secret"),
            ("POST", f"{base}/test"),
            # A's own endpoint with B's delivery, and B's endpoint with A's delivery.
            ("GET", f"/api/v1/webhooks/{mine_hook['id']}/deliveries/{their_delivery}"),
            ("POST", f"/api/v1/webhooks/{mine_hook['id']}/deliveries/{their_delivery}/replay"),
            ("GET", f"{base}/deliveries/{my_delivery}"),
        ):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 404, (method, path, response.text)
            for secret in secrets:
                assert secret not in response.text
    # B's endpoint is untouched and its secret did not change hands.
    after = await client.get(base, headers=their_headers)
    assert after.json()["description"] == "B's bridge"
    assert their_hook["id"] in await all_ids(client, "/api/v1/webhooks", their_headers)


async def test_idempotency_key_replays_the_creation(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    body = {"url": HOOK, "event_types": ["incident.*"]}
    keyed = {**headers, "Idempotency-Key": f"create-hook-{uuid.uuid4()}"}
    first = await client.post("/api/v1/webhooks", json=body, headers=keyed)
    again = await client.post("/api/v1/webhooks", json=body, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()  # the same endpoint (and the same, once-shown, secret)
    assert [e["id"] for e in (await client.get("/api/v1/webhooks", headers=headers)).json()["items"]] == [
        first.json()["id"]
    ]
    other = await client.post("/api/v1/webhooks", json={**body, "event_types": ["page.*"]}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
