"""Sites under pressure: deleting a site something still refers to (incidents too), concurrent creates of one
code, and searches with LIKE wildcards in them."""

from __future__ import annotations

import asyncio
from typing import Any

from httpx import AsyncClient
from tests.conftest import Factory

SITES = "/api/v1/sites"


async def _admin(factory: Factory) -> tuple[Any, dict[str, str]]:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    return tenant, await factory.headers(admin)


async def _site(client: AsyncClient, headers: dict[str, str], code: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(SITES, json={"code": code, "name": f"Site {code}", **extra}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_site_an_incident_refers_to_is_not_deleted(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _admin(factory)
    site = await _site(client, headers, "RAD")
    incident = await client.post(
        "/api/v1/incidents",
        json={"title": "PACS viewer frozen in Radiology", "impact": 2, "urgency": 2, "site_id": site["id"]},
        headers=headers,
    )
    assert incident.status_code == 201, incident.text
    refused = await client.delete(f"{SITES}/{site['id']}", headers=headers)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert problem["detail"].startswith("Site RAD is still used by 1 incidents")
    assert "deactivate" in problem["detail"]
    assert problem["in_use"] == {"incidents": 1}
    assert (await client.get(f"{SITES}/{site['id']}", headers=headers)).status_code == 200, "nothing deleted"
    # Deactivating is the way out; the incident keeps its site.
    off = await client.patch(f"{SITES}/{site['id']}", json={"active": False}, headers=headers)
    assert off.status_code == 200


async def test_the_conflict_names_everything_that_uses_the_site(
    factory: Factory, client: AsyncClient
) -> None:
    _, headers = await _admin(factory)
    site = await _site(client, headers, "ICU")
    await _site(client, headers, "ICU-B", parent_id=site["id"])
    for email in ("a@icu.example", "b@icu.example"):
        created = await client.post(
            "/api/v1/users", json={"email": email, "name": email, "site_id": site["id"]}, headers=headers
        )
        assert created.status_code == 201
    device = await client.post(
        "/api/v1/devices",
        json={"kind": "workstation", "serial": "ICU-WS-1", "site_id": site["id"]},
        headers=headers,
    )
    assert device.status_code == 201
    refused = await client.delete(f"{SITES}/{site['id']}", headers=headers)
    assert refused.status_code == 409
    assert refused.json()["in_use"] == {"users": 2, "devices": 1, "sub-sites": 1}
    assert "2 users, 1 devices, 1 sub-sites" in refused.json()["detail"]
    assert (await client.get(f"{SITES}/{site['id']}", headers=headers)).status_code == 200


async def test_concurrent_creates_of_one_code_store_one_site(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _admin(factory)
    responses = await asyncio.gather(
        *(
            client.post(SITES, json={"code": "RACE-1", "name": f"Racer {i}"}, headers=headers)
            for i in range(20)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409, 422}, statuses
    for response in responses:
        if response.status_code != 201:
            assert response.headers["content-type"] == "application/problem+json"
            assert "RACE-1" in response.text, response.text
    listed = (await client.get(SITES, headers=headers, params={"q": "race-1"})).json()["items"]
    assert len(listed) == 1


async def test_search_treats_like_wildcards_literally(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _admin(factory)
    await _site(client, headers, "WARD_1")
    await _site(client, headers, "WARD-2", name="Ward 100% ready")
    await _site(client, headers, "WARDX3", name=r"Back\slash ward")

    async def codes(q: str) -> list[str]:
        response = await client.get(SITES, headers=headers, params={"q": q})
        assert response.status_code == 200
        return [s["code"] for s in response.json()["items"]]

    assert await codes("_") == ["WARD_1"]
    assert await codes("%") == ["WARD-2"]
    assert await codes("d_1") == ["WARD_1"]
    assert await codes("\\") == ["WARDX3"]
    assert len(await codes("ward")) == 3
