from __future__ import annotations

import uuid

from httpx import AsyncClient
from tests.conftest import Factory
from tests.support.isolation import all_ids, assert_isolated


async def _admin(factory: Factory) -> tuple[object, dict[str, str]]:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    return tenant, await factory.headers(admin)


async def test_create_list_get_update_delete(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _admin(factory)
    hospital = await client.post(
        "/api/v1/sites",
        json={"code": "smh", "name": "St Mary's Hospital", "kind": "hospital", "timezone": "America/Chicago"},
        headers=headers,
    )
    assert hospital.status_code == 201, hospital.text
    body = hospital.json()
    assert (body["code"], body["kind"], body["active"]) == ("SMH", "hospital", True)
    ward = await client.post(
        "/api/v1/sites",
        json={
            "code": "SMH-ED",
            "name": "Emergency Department",
            "kind": "department",
            "parent_id": body["id"],
        },
        headers=headers,
    )
    assert ward.status_code == 201
    listed = (await client.get("/api/v1/sites", headers=headers)).json()["items"]
    assert [s["code"] for s in listed] == ["SMH", "SMH-ED"]
    children = (await client.get("/api/v1/sites", headers=headers, params={"parent_id": body["id"]})).json()
    assert [s["code"] for s in children["items"]] == ["SMH-ED"]
    found = (await client.get("/api/v1/sites", headers=headers, params={"q": "emerg"})).json()["items"]
    assert [s["code"] for s in found] == ["SMH-ED"]
    patched = await client.patch(
        f"/api/v1/sites/{body['id']}", json={"name": "St Mary's Medical Center"}, headers=headers
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "St Mary's Medical Center"
    assert patched.json()["timezone"] == "America/Chicago", "fields not sent must not change"
    in_use = await client.delete(f"/api/v1/sites/{body['id']}", headers=headers)
    assert in_use.status_code == 409
    assert (await client.delete(f"/api/v1/sites/{ward.json()['id']}", headers=headers)).status_code == 204
    assert (await client.delete(f"/api/v1/sites/{body['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/sites/{body['id']}", headers=headers)).status_code == 404


async def test_bad_input(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _admin(factory)
    first = (await client.post("/api/v1/sites", json={"code": "A1", "name": "A"}, headers=headers)).json()
    cases = [
        ({"code": "A1", "name": "dup"}, "code"),
        ({"code": "a1", "name": "dup, other case"}, "code"),
        ({"code": "bad code!", "name": "x"}, "code"),
        ({"code": "B1", "name": "  "}, "name"),
        ({"code": "B1", "name": "x", "timezone": "Mars/Olympus"}, "timezone"),
        ({"code": "B1", "name": "x", "parent_id": str(uuid.uuid4())}, "parent_id"),
        ({"code": "B1", "name": "x", "kind": "spaceship"}, "kind"),
    ]
    for payload, field in cases:
        response = await client.post("/api/v1/sites", json=payload, headers=headers)
        assert response.status_code == 422, (payload, response.text)
        assert any(field in e["field"] or field in e["message"] for e in response.json()["errors"]), (
            response.json()
        )
    cycle = await client.patch(
        f"/api/v1/sites/{first['id']}", json={"parent_id": first["id"]}, headers=headers
    )
    assert cycle.status_code == 422
    assert len(await all_ids(client, "/api/v1/sites", headers)) == 1


async def test_tenant_users_read_but_cannot_write(factory: Factory, client: AsyncClient) -> None:
    tenant, headers = await _admin(factory)
    await client.post("/api/v1/sites", json={"code": "S", "name": "S"}, headers=headers)
    user = await factory.user(tenant)
    user_headers = await factory.headers(user)
    assert len((await client.get("/api/v1/sites", headers=user_headers)).json()["items"]) == 1
    refused = await client.post("/api/v1/sites", json={"code": "T", "name": "T"}, headers=user_headers)
    assert refused.status_code == 403


async def test_staff_act_through_msp_tenant(factory: Factory, client: AsyncClient) -> None:
    a, b = await factory.tenant(), await factory.tenant()
    agent = await factory.staff(role="msp_admin", tier=None)
    for tenant in (a, b):
        created = await client.post(
            "/api/v1/sites",
            json={"code": "HQ", "name": f"HQ of {tenant.slug}"},
            headers=await factory.headers(agent, tenant=tenant),
        )
        assert created.status_code == 201
    no_tenant = await client.post(
        "/api/v1/sites", json={"code": "X", "name": "X"}, headers=await factory.headers(agent)
    )
    assert no_tenant.status_code == 400
    assert "MSP-Tenant" in no_tenant.json()["detail"]
    only_a = (await client.get("/api/v1/sites", headers=await factory.headers(agent, tenant=a))).json()[
        "items"
    ]
    assert {s["tenant_id"] for s in only_a} == {str(a.id)}


async def test_cross_tenant_matrix(factory: Factory, client: AsyncClient) -> None:
    _, headers_a = await _admin(factory)
    _, headers_b = await _admin(factory)
    b_site = (
        await client.post(
            "/api/v1/sites", json={"code": "SECRET-B", "name": "Tenant B Cancer Center"}, headers=headers_b
        )
    ).json()
    await assert_isolated(
        client,
        headers_a,
        foreign_paths=[f"/api/v1/sites/{b_site['id']}"],
        patch_body={"name": "hijacked"},
        lists=["/api/v1/sites"],
        foreign_ids=[b_site["id"]],
        secrets=["Tenant B Cancer Center"],
    )
    as_parent = await client.post(
        "/api/v1/sites", json={"code": "C", "name": "C", "parent_id": b_site["id"]}, headers=headers_a
    )
    assert as_parent.status_code == 422
    assert "Tenant B" not in as_parent.text
    still = (await client.get(f"/api/v1/sites/{b_site['id']}", headers=headers_b)).json()
    assert still["name"] == "Tenant B Cancer Center"
