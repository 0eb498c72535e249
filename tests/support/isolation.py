"""The cross-tenant matrix: tenant A's caller asking for, listing, changing or deleting B's objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from httpx import AsyncClient


async def all_ids(
    client: AsyncClient, path: str, headers: dict[str, str], params: dict[str, Any] | None = None
) -> set[str]:
    """Every ``id`` of a cursor-paginated list, following ``next_cursor`` to the end."""
    ids: set[str] = set()
    cursor: str | None = None
    while True:
        query = {**(params or {}), "limit": 200}
        if cursor:
            query["cursor"] = cursor
        response = await client.get(path, headers=headers, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        ids.update(str(item.get("id") or item.get("client_id")) for item in body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return ids


async def assert_isolated(
    client: AsyncClient,
    headers: dict[str, str],
    *,
    foreign_paths: Iterable[str] = (),
    patch_body: dict[str, Any] | None = None,
    deletable: bool = True,
    lists: Iterable[str] = (),
    foreign_ids: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> None:
    """A's caller gets 404 for each of B's object paths (GET, PATCH, DELETE), never sees B's ids in lists, and
    no response leaks B's data (``secrets``: strings only B's objects contain)."""
    leaks = [s for s in secrets if s]
    for path in foreign_paths:
        responses = [await client.get(path, headers=headers)]
        if patch_body is not None:
            responses.append(await client.patch(path, json=patch_body, headers=headers))
        if deletable:
            responses.append(await client.delete(path, headers=headers))
        for response in responses:
            assert response.status_code == 404, (
                response.request.method,
                path,
                response.status_code,
                response.text,
            )
            assert response.headers["content-type"] == "application/problem+json"
            for secret in leaks:
                assert secret not in response.text, (path, secret)
    foreign = {str(i) for i in foreign_ids}
    for path in lists:
        seen = await all_ids(client, path, headers)
        assert not (seen & foreign), (path, seen & foreign)
        response = await client.get(path, headers=headers, params={"limit": 200})
        for secret in leaks:
            assert secret not in response.text, (path, secret)
