"""Optimistic concurrency on PATCH of tenants, users, devices and sites: GET gives an ETag, PATCH with a stale
If-Match answers 412 and changes nothing, a current one applies (and returns the new ETag)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from httpx import AsyncClient
from tests.conftest import Factory

API = "/api/v1"


async def _resources(factory: Factory, client: AsyncClient) -> list[tuple[str, dict[str, str], str]]:
    """(path, headers, a text field) of one tenant, user, device and site."""
    tenant = await factory.tenant()
    admin = await factory.headers(await factory.user(tenant, role="tenant_admin"))
    msp = await factory.headers(await factory.staff(role="msp_admin", tier=None))
    site = (await client.post(f"{API}/sites", json={"code": "ET", "name": "Etag"}, headers=admin)).json()
    user = (
        await client.post(f"{API}/users", json={"email": "e@t.example", "name": "E T"}, headers=admin)
    ).json()
    device = (
        await client.post(
            f"{API}/devices", json={"kind": "laptop", "serial": f"ET-{uuid.uuid4().hex[:6]}"}, headers=admin
        )
    ).json()
    return [
        (f"{API}/tenants/{tenant.id}", msp, "name"),
        (f"{API}/users/{user['id']}", admin, "title"),
        (f"{API}/devices/{device['id']}", admin, "notes"),
        (f"{API}/sites/{site['id']}", admin, "address"),
    ]


async def test_stale_if_match_is_refused_with_412(factory: Factory, client: AsyncClient) -> None:
    for path, headers, field in await _resources(factory, client):
        read = await client.get(path, headers=headers)
        assert read.status_code == 200
        etag = read.headers["ETag"]
        first = await client.patch(path, json={field: "first"}, headers={**headers, "If-Match": etag})
        assert first.status_code == 200, (path, first.text)
        assert first.headers["ETag"] != etag, path
        stale = await client.patch(path, json={field: "second"}, headers={**headers, "If-Match": etag})
        assert stale.status_code == 412, (path, stale.text)
        assert stale.headers["content-type"] == "application/problem+json"
        assert stale.json()["type"] == "/problems/precondition-failed"
        assert stale.headers["ETag"] == first.headers["ETag"]
        current = await client.get(path, headers=headers)
        assert current.json()[field] == "first", "the stale change stored nothing"
        assert current.headers["ETag"] == first.headers["ETag"]
        star = await client.patch(path, json={field: "third"}, headers={**headers, "If-Match": "*"})
        assert star.status_code == 200
        plain = await client.patch(path, json={field: "fourth"}, headers=headers)
        assert plain.status_code == 200, "If-Match is optional"


async def test_concurrent_patches_with_one_etag_let_one_through(
    factory: Factory, client: AsyncClient
) -> None:
    for path, headers, field in await _resources(factory, client):
        etag = (await client.get(path, headers=headers)).headers["ETag"]
        responses: list[Any] = await asyncio.gather(
            *(
                client.patch(path, json={field: f"writer {i}"}, headers={**headers, "If-Match": etag})
                for i in range(5)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 412, 412, 412, 412], (path, statuses)
