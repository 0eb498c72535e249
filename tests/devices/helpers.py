"""Shared helpers of the device tests."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient
from tests.conftest import Factory, Person

from msp_platform.models.tenant import Tenant

DEVICES = "/api/v1/devices"
IMPORT = "/api/v1/devices/import"


@dataclass
class TenantSetup:
    tenant: Tenant
    admin: Person
    headers: dict[str, str]


async def admin_of_new_tenant(factory: Factory) -> TenantSetup:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    return TenantSetup(tenant, admin, await factory.headers(admin))


async def make_site(
    client: AsyncClient, headers: dict[str, str], code: str, name: str = ""
) -> dict[str, Any]:
    response = await client.post("/api/v1/sites", json={"code": code, "name": name or code}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_device(client: AsyncClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    payload = {"kind": "workstation", **fields}
    if not any(payload.get(k) for k in ("serial", "asset_tag", "hostname")):
        payload["serial"] = f"SN-{uuid.uuid4().hex[:12]}"
    response = await client.post(DEVICES, json=payload, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def walk(
    client: AsyncClient, headers: dict[str, str], params: dict[str, Any] | None = None, *, limit: int = 200
) -> list[dict[str, Any]]:
    """Every item of the device list, following ``next_cursor`` page by page (in order)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        query: dict[str, Any] = {**(params or {}), "limit": limit}
        if cursor:
            query["cursor"] = cursor
        response = await client.get(DEVICES, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("the cursor never ended")


def to_csv(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue().encode()


def csv_headers(headers: dict[str, str], content_type: str = "text/csv") -> dict[str, str]:
    return {**headers, "content-type": content_type}


async def post_csv(client: AsyncClient, headers: dict[str, str], body: bytes, **params: Any) -> Any:
    query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}
    return await client.post(IMPORT, content=body, headers=csv_headers(headers), params=query)
