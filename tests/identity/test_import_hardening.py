"""Bulk imports: the MSP_IMPORT_MAX_BODY_BYTES setting bounds them, encodings are recognised by their
byte-order mark, and the OpenAPI document describes their request bodies."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from litestar import Litestar
from tests.conftest import Backend, Factory, serving
from tests.identity.common import USERS, tenant_admin

from msp_platform.app import create_app

IMPORT = f"{USERS}/import"
DEVICE_IMPORT = "/api/v1/devices/import"


def _csv(rows: int, *, pad: int = 0) -> bytes:
    lines = ["email,name,title"]
    lines += [f"p{i}-{uuid.uuid4().hex[:6]}@x.example,Person {i},{'x' * pad}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


async def test_the_import_body_limit_is_the_setting(backend: Backend, factory: Factory) -> None:
    small = create_app(backend.settings.model_copy(update={"import_max_body_bytes": 4096}))
    http: AsyncClient
    async with serving(small) as http:
        # Tokens come from the shared app's factory; both apps use one database and signing keys.
        _, headers = await tenant_admin(factory)
        fits = _csv(10)
        assert len(fits) < 4096
        ok = await http.post(IMPORT, content=fits, headers={**headers, "content-type": "text/csv"})
        assert ok.status_code == 200, ok.text
        big = _csv(10, pad=500)
        assert len(big) > 4096
        cases: list[tuple[str, dict[str, Any]]] = [
            (IMPORT, {"content": big, "headers": {"content-type": "text/csv"}}),
            (IMPORT, {"json": [{"email": f"j{i}@x.example", "name": "x" * 200} for i in range(40)]}),
            (IMPORT, {"files": {"file": ("people.csv", big, "text/csv")}}),
            (DEVICE_IMPORT, {"content": b"kind,serial,notes\n" + b"laptop,S1," + b"n" * 5000 + b"\n"}),
        ]
        for path, kwargs in cases:
            extra_headers = kwargs.pop("headers", {})
            if "content" in kwargs and not extra_headers:
                extra_headers = {"content-type": "text/csv"}
            response = await http.post(path, headers={**headers, **extra_headers}, **kwargs)
            assert response.status_code == 413, (path, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        # Other endpoints keep the general request limit.
        assert (await http.get(USERS, headers=headers)).status_code == 200


def test_the_import_request_bodies_are_documented(app: Litestar) -> None:
    paths = app.openapi_schema.to_schema()["paths"]
    for path, required_column in ((IMPORT, "email"), (DEVICE_IMPORT, "kind")):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"text/csv", "application/json", "multipart/form-data"}, path
        as_json = body["content"]["application/json"]["schema"]["oneOf"]
        rows = as_json[0]
        assert rows["type"] == "array"
        assert rows["maxItems"] == 10_000
        assert required_column in rows["items"]["required"]
        assert as_json[1]["required"] == ["rows"]
        assert body["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    users_row = paths[IMPORT]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert "boolean" in users_row["items"]["properties"]["vip"]["type"]
    assert set(users_row["items"]["properties"]) >= {"email", "name", "role", "site", "active"}


TEXT = "email,name,title\nzoe@x.example,Zoë Łukasiewicz,Pédiatrie\n"


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-32-le", b"\xff\xfe\x00\x00"),
        ("utf-32-be", b"\x00\x00\xfe\xff"),
        ("utf-8", b"\xef\xbb\xbf"),
    ],
)
async def test_the_encoding_is_recognised_by_its_byte_order_mark(
    factory: Factory, client: AsyncClient, encoding: str, bom: bytes
) -> None:
    _, headers = await tenant_admin(factory)
    body = bom + TEXT.encode(encoding)
    response = await client.post(IMPORT, content=body, headers={**headers, "content-type": "text/csv"})
    assert response.status_code == 200, response.text
    stored = (await client.get(USERS, headers=headers, params={"q": "zoe@"})).json()["items"]
    assert [(u["name"], u["title"]) for u in stored] == [("Zoë Łukasiewicz", "Pédiatrie")]
    devices = bom + "kind,serial,notes\nlaptop,BOM-1,Zoë's laptop\n".encode(encoding)
    imported = await client.post(
        DEVICE_IMPORT, content=devices, headers={**headers, "content-type": "text/csv"}
    )
    assert imported.status_code == 200, imported.text
    device = (await client.get("/api/v1/devices", headers=headers, params={"q": "bom-1"})).json()["items"]
    assert [d["notes"] for d in device] == ["Zoë's laptop"]


async def test_utf16_without_a_byte_order_mark_gets_a_hint(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    response = await client.post(
        IMPORT, content=TEXT.encode("utf-16-le"), headers={**headers, "content-type": "text/csv"}
    )
    assert response.status_code == 422
    assert "charset=utf-16le" in response.json()["detail"]
    named = await client.post(
        IMPORT,
        content=TEXT.encode("utf-16-le"),
        headers={**headers, "content-type": "text/csv; charset=utf-16le"},
    )
    assert named.status_code == 200, named.text


async def test_accept_invitation_attempts_are_rate_limited(backend: Backend) -> None:
    limited = create_app(backend.settings.model_copy(update={"rate_limit_per_minute": 3}))
    http: AsyncClient
    async with serving(limited) as http:
        body = {"token": "msp_inv_" + "0" * 32 + "_" + "A" * 43, "password": "a long enough passphrase"}
        # 8 attempts: whatever minute boundary falls between them, one window holds more than 3.
        responses = [await http.post("/api/v1/auth/accept-invitation", json=body) for _ in range(8)]
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {400, 429}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
