"""Input no endpoint may answer with a 500: NUL characters, values a column cannot hold, concurrent
writes racing on a unique key. Each gets a 4xx problem and stores nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
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


# --- hand-made cursors ----------------------------------------------------------------------------------

REPOSITORY_MODULES = (
    "audit",
    "devices",
    "escalations",
    "identity",
    "incidents",
    "integrations",
    "oncall",
    "sites",
    "tenants",
)
_UUID = "0190a000-0000-7000-8000-000000000001"
_AWARE = "2024-01-01T00:00:00+00:00"
_WRONG_FOR_EVERY_KEY: list[Any] = [5, "x", None, ["x"], ["z", 1], ["n", None], ["s", None], {"a": 1}]
_WRONG_BY_KIND: dict[str, list[Any]] = {
    "datetime": [["s", _AWARE], ["i", 1], ["t", "2024-01-01T00:00:00"], ["t", 1], ["t", "garbage"]],
    "uuid": [["s", _UUID], ["u", "not-a-uuid"], ["u", 1], ["i", 1], ["t", _AWARE]],
    "int": [["s", "1"], ["i", "1"], ["i", 1.5], ["i", True], ["i", 2**64], ["t", _AWARE], ["u", _UUID]],
    "str": [["i", 1], ["s", 1], ["s", "a\u0000b"], ["u", _UUID], ["b", True]],
}


def _orderings() -> list[tuple[str, Any]]:
    import importlib

    from msp_platform.kit.pagination import Ordering

    found: dict[tuple[str, str], Ordering] = {}

    def walk(value: Any) -> Iterator[Ordering]:
        if isinstance(value, Ordering):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(getattr(value, "ordering", None), Ordering):
            yield value.ordering

    for name in REPOSITORY_MODULES:
        module = importlib.import_module(f"msp_platform.{name}.repository")
        for value in vars(module).values():
            for ordering in walk(value):
                found[(name, ordering.name + str(id(ordering)))] = ordering
    return [(f"{module}:{ordering.name}", ordering) for (module, _), ordering in sorted(found.items())]


def _kind(key: Any) -> tuple[str, Any]:
    from sqlalchemy import DateTime, Integer, String, Uuid
    from sqlalchemy.types import TypeDecorator

    column_type = key.column.type
    base = column_type.impl_instance if isinstance(column_type, TypeDecorator) else column_type
    if isinstance(base, DateTime):
        return "datetime", ["t", _AWARE]
    if isinstance(base, Uuid):
        return "uuid", ["u", _UUID]
    if isinstance(base, Integer):
        return "int", ["i", 1]
    if isinstance(base, String):
        enum_cls = getattr(column_type, "enum_cls", None)
        return "str", ["s", next(iter(enum_cls)).value if enum_cls else "a"]
    raise AssertionError(f"a sort key of an unexpected type: {column_type!r}")


def _cursor(scope: str, ordering_name: str, values: list[Any]) -> str:
    import base64 as b64

    import msgspec

    return b64.urlsafe_b64encode(msgspec.json.encode([scope, ordering_name, values])).rstrip(b"=").decode()


def test_every_ordering_refuses_cursor_values_of_the_wrong_type() -> None:
    from msp_platform.kit.errors import BadRequest
    from msp_platform.kit.pagination import decode_cursor

    orderings = _orderings()
    assert len(orderings) >= 15
    for label, ordering in orderings:
        kinds = [_kind(key) for key in ordering.keys]
        good = [sample for _, sample in kinds]
        decoded = decode_cursor(_cursor("scope", ordering.name, good), "scope", ordering)
        assert len(decoded) == len(ordering.keys), label
        for position, (kind, _) in enumerate(kinds):
            for wrong in _WRONG_FOR_EVERY_KEY + _WRONG_BY_KIND[kind]:
                values = [*good[:position], wrong, *good[position + 1 :]]
                try:
                    decode_cursor(_cursor("scope", ordering.name, values), "scope", ordering)
                except BadRequest:
                    continue
                raise AssertionError(f"{label}: {wrong!r} accepted at position {position}")
        with pytest.raises(BadRequest):
            decode_cursor(_cursor("scope", ordering.name, good[:-1]), "scope", ordering)
        with pytest.raises(BadRequest):
            decode_cursor(_cursor("scope", ordering.name, {"a": 1}), "scope", ordering)  # type: ignore[arg-type]


LIST_CURSORS = {
    "/api/v1/users": ("users", "email", [["s", "a@b.example"], ["u", _UUID]]),
    "/api/v1/sites": ("sites", "code", [["s", "A"], ["u", _UUID], ["u", _UUID]]),
    "/api/v1/devices": ("devices", "created", [["t", _AWARE], ["u", _UUID]]),
    "/api/v1/incidents": (
        "incidents:priority",
        "priority",
        [["i", 1], ["t", _AWARE], ["u", _UUID], ["u", _UUID]],
    ),
}


@pytest.mark.parametrize("path", sorted(LIST_CURSORS))
async def test_hand_made_cursors_with_wrong_value_types_are_400(
    factory: Factory, client: AsyncClient, path: str
) -> None:
    tenant = await factory.tenant()
    headers = await factory.headers(await factory.user(tenant, role="tenant_admin"))
    scope, name, good = LIST_CURSORS[path]
    assert (
        await client.get(path, params={"cursor": _cursor(scope, name, good)}, headers=headers)
    ).status_code == 200
    wrong_first = {"t": ["t", "2024-01-01T00:00:00"], "u": ["s", "x"], "s": ["i", 1], "i": ["s", "x"]}
    wrongs = [
        [wrong_first[good[0][0]], *good[1:]],
        [*good[:-1], ["s", "not-a-uuid"]],
        [*good[:-1], ["u", "not-a-uuid"]],
        [*good[:-1], ["i", 2**70]],
    ]
    for values in wrongs:
        response = await client.get(path, params={"cursor": _cursor(scope, name, values)}, headers=headers)
        assert response.status_code == 400, (values, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "cursor" in response.json()["detail"]


async def test_database_errors_do_not_carry_statement_parameters(owner_db: Any) -> None:
    """Error messages (and so the error log) never include the values a statement was given."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as caught:
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                text("INSERT INTO tenants (id, slug) VALUES (:id, :slug)"),
                {"id": uuid.uuid4(), "slug": "patient-jane-doe@example.org"},
            )
    assert "patient-jane-doe" not in str(caught.value)
    assert "hidden" in str(caught.value)
