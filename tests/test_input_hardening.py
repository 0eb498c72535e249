"""Input no endpoint may answer with a 500: NUL characters, values a column cannot hold, concurrent
writes racing on a unique key. Each gets a 4xx problem and stores nothing."""

from __future__ import annotations

import asyncio
import uuid

from httpx import AsyncClient
from tests.conftest import Backend, Factory


async def _admin(factory: Factory) -> dict[str, str]:
    tenant = await factory.tenant()
    return await factory.headers(await factory.user(tenant, role="tenant_admin"))


async def test_nul_characters_are_refused_everywhere(factory: Factory, client: AsyncClient) -> None:
    headers = await _admin(factory)
    refused = [
        await client.post("/api/v1/sites", json={"code": "N1", "name": "nul\u0000byte"}, headers=headers),
        await client.get("/api/v1/users", params={"q": "a\u0000b"}, headers=headers),
        await client.get("/api/v1/incidents/SMH-%00", headers=headers),
        await client.post("/api/v1/auth/sign-in", json={"email": "a\u0000@b.example", "password": "x"}),
    ]
    for response in refused:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "NUL" in response.json()["detail"]
    listed = (await client.get("/api/v1/sites", headers=headers)).json()["items"]
    assert listed == [], "nothing was stored"


async def test_an_escaped_backslash_before_u0000_is_ordinary_text(
    factory: Factory, client: AsyncClient
) -> None:
    headers = await _admin(factory)
    # The JSON text "C:\\u0000" is the characters C, :, \, u, 0, 0, 0, 0: no NUL in it.
    raw = b'{"code": "BS1", "name": "C:\\\\u0000"}'
    response = await client.post(
        "/api/v1/sites", content=raw, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "C:\\u0000"


async def test_concurrent_creates_on_one_unique_key_never_answer_500(
    factory: Factory, client: AsyncClient, backend: Backend
) -> None:
    headers = await _admin(factory)
    code = f"R{uuid.uuid4().hex[:6].upper()}"
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/sites", json={"code": code, "name": "Race"}, headers=headers)
            for _ in range(12)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409, 422}, statuses
    for response in responses:
        if response.status_code != 201:
            assert response.headers["content-type"] == "application/problem+json"
    listed = (await client.get("/api/v1/sites", headers=headers)).json()["items"]
    assert [s["code"] for s in listed] == [code]
