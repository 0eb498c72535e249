"""POST /api/v1/users/import: bulk onboarding from CSV or JSON, with a per-row report."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from tests.conftest import Factory
from tests.identity.common import USERS, stored_users, tenant_admin

from msp_platform.db.engine import Database
from msp_platform.models.audit import AuditEvent
from msp_platform.models.tenant import Tenant

IMPORT = "/api/v1/users/import"
HEADER = "email,name,role,title,department,site,phone,vip,clinical,employee_id,active"
CSV = "text/csv"


async def _sites(client: AsyncClient, headers: dict[str, str], *codes: str) -> dict[str, str]:
    ids = {}
    for code in codes:
        response = await client.post("/api/v1/sites", json={"code": code, "name": code}, headers=headers)
        assert response.status_code == 201, response.text
        ids[code] = response.json()["id"]
    return ids


async def _import(
    client: AsyncClient,
    headers: dict[str, str],
    body: str | bytes,
    *,
    content_type: str = CSV,
    **params: Any,
) -> Any:
    content = body.encode() if isinstance(body, str) else body
    return await client.post(
        IMPORT, content=content, params=params, headers={**headers, "content-type": content_type}
    )


def _csv(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def _people(count: int, *, site: str = "", title: str = "Nurse") -> list[str]:
    return [
        f"person{i:05d}@x.org,Person {i},tenant_user,{title},Ward {i % 7},{site},+1 555 {i:04d},no,"
        f"{'yes' if i % 2 else 'no'},E{i},yes"
        for i in range(count)
    ]


def _statuses(report: dict[str, Any]) -> dict[int, str]:
    return {r["row"]: r["status"] for r in report["rows"]}


def _errors(report: dict[str, Any]) -> dict[int, list[dict[str, str]]]:
    return {r["row"]: r["errors"] for r in report["rows"] if r["status"] == "error"}


async def test_create_then_reimport_unchanged_then_update(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    await _sites(client, headers, "SMH", "CLINIC-2")
    body = _csv(_people(1200, site="smh"))
    first = await _import(client, headers, body)
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["mode"], report["dry_run"], report["committed"]) == ("atomic", False, True)
    assert (report["total"], report["created"], report["failed"]) == (1200, 1200, 0)
    assert report["rows"][0]["row"] == 2, "rows are numbered by file line; the header is line 1"
    assert report["rows"][0]["key"] == "person00000@x.org"
    assert await stored_users(owner_db, tenant) == 1201

    listed = (await client.get(USERS, headers=headers, params={"q": "person00001@"})).json()["items"]
    assert len(listed) == 1
    one = listed[0]
    assert one["id"] == report["rows"][1]["id"]
    assert (one["name"], one["department"], one["phone"], one["clinical"], one["vip"]) == (
        "Person 1",
        "Ward 1",
        "+1 555 0001",
        True,
        False,
    )
    assert one["has_password"] is False

    again = await _import(client, headers, body)
    assert again.status_code == 200
    assert (again.json()["unchanged"], again.json()["created"], again.json()["updated"]) == (1200, 0, 0)
    assert [r["id"] for r in again.json()["rows"]] == [r["id"] for r in report["rows"]]

    changed = _csv(
        [
            # Other case, new title, another site, promoted: updated.
            "PERSON00001@X.ORG,Person 1,tenant_admin,Charge Nurse,Ward 1,clinic-2,+1 555 0001,no,yes,E1,yes",
            # Empty optional text clears it; empty role/vip/clinical/active keep the stored values.
            "person00002@x.org,Person 2,,,,,,,,,",
            "person00003@x.org,Person 3,tenant_user,Nurse,Ward 3,SMH,+1 555 0003,no,yes,E3,yes",
            "brand.new@x.org,Brand New,,,,,,,,,",
            "person00004@x.org,Person 4,tenant_user,Nurse,Ward 4,SMH,+1 555 0004,no,no,E4,no",
        ]
    )
    updated = await _import(client, headers, changed)
    assert updated.status_code == 200, updated.text
    assert _statuses(updated.json()) == {
        2: "updated",
        3: "updated",
        4: "unchanged",
        5: "created",
        6: "updated",
    }
    by_email = {
        u["email"]: u
        for u in (await client.get(USERS, headers=headers, params={"limit": 200, "q": "@x.org"})).json()[
            "items"
        ]
    }
    p1, p2, p4, new = (
        by_email["person00001@x.org"],
        by_email["person00002@x.org"],
        by_email["person00004@x.org"],
        by_email["brand.new@x.org"],
    )
    assert (p1["role"], p1["title"]) == ("tenant_admin", "Charge Nurse")
    assert (p2["title"], p2["department"], p2["site_id"], p2["phone"], p2["employee_id"]) == (None,) * 5
    assert (p2["role"], p2["vip"], p2["clinical"], p2["active"]) == ("tenant_user", False, False, True)
    assert (p4["active"], p4["deactivated_at"] is not None) == (False, True)
    assert (new["role"], new["vip"], new["active"]) == ("tenant_user", False, True)


async def test_bad_rows_are_reported_and_atomic_stores_nothing(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    await _sites(client, headers, "SMH")
    await client.post(USERS, json={"email": "existing@x.org", "name": "Existing"}, headers=headers)
    rows = [
        "good@x.org,Good,tenant_user,,,SMH,,no,no,,yes",  # 2
        "not-an-email,Bad Email,,,,,,,,,",  # 3
        "dup@x.org,Dup One,,,,,,,,,",  # 4
        "DUP@x.org,Dup Two,,,,,,,,,",  # 5
        "site@x.org,Unknown Site,,,,NOPE,,,,,",  # 6
        "role@x.org,Bad Role,superuser,,,,,,,,",  # 7
        "bool@x.org,Bad Bool,,,,,,maybe,,,",  # 8
        ",No Email,,,,,,,,,",  # 9
        "noname@x.org,,,,,,,,,,",  # 10
        "long@x.org," + "n" * 201 + ",,,,,,,,,",  # 11
        "phone@x.org,Bad Phone,,,,,call me,,,,",  # 12
        "extra@x.org,Extra,,,,,,,,,,surplus",  # 13
        "existing@x.org,Existing,,,,,,,,,",  # 14: fine (unchanged)
    ]
    response = await _import(client, headers, _csv(rows))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/import-failed"
    assert response.headers["content-type"] == "application/problem+json"
    report = problem["report"]
    assert report["committed"] is False
    errors = _errors(report)
    assert set(errors) == {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
    assert errors[3][0]["field"] == "email"
    assert "appears more than once" in errors[4][0]["message"]
    assert "rows 4, 5" in errors[5][0]["message"]
    assert errors[6] == [{"field": "site", "message": "no such site code NOPE"}]
    assert errors[7][0]["field"] == "role"
    assert errors[8] == [{"field": "vip", "message": "'maybe' is not yes/no"}]
    assert errors[9][0]["field"] == "email"
    assert errors[10][0]["field"] == "name"
    assert errors[11][0]["field"] == "name"
    assert errors[12][0]["field"] == "phone"
    assert errors[13][0]["field"] == "row"
    assert _statuses(report)[2] == "valid", "nothing was stored, so no row claims to be created"
    assert _statuses(report)[14] == "valid"
    assert await stored_users(owner_db, tenant) == 2

    partial = await _import(client, headers, _csv(rows), mode="partial")
    assert partial.status_code == 200, partial.text
    report = partial.json()
    assert (report["committed"], report["created"], report["unchanged"], report["failed"]) == (True, 1, 1, 11)
    assert _statuses(report)[2] == "created"
    assert await stored_users(owner_db, tenant) == 3
    good = (await client.get(USERS, headers=headers, params={"q": "good@"})).json()["items"]
    assert len(good) == 1


async def test_dry_run_reports_without_storing(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    ok = await _import(client, headers, _csv(_people(20)), dry_run="true")
    assert ok.status_code == 200, ok.text
    report = ok.json()
    # A preview: every good row is "valid" (nothing stored) and says what storing it would do.
    assert (report["dry_run"], report["committed"], report["created"], report["valid"], report["total"]) == (
        True,
        False,
        0,
        20,
        20,
    )
    assert {(r["status"], r["would"]) for r in report["rows"]} == {("valid", "created")}
    assert {r["id"] for r in report["rows"]} == {None}, "no id of a user that will never exist"
    assert await stored_users(owner_db, tenant) == 1
    await _import(client, headers, _csv(_people(2)))
    preview = await _import(client, headers, _csv(_people(3, title="RN")), dry_run="true")
    assert {r["row"]: r["would"] for r in preview.json()["rows"]} == {
        2: "updated",
        3: "updated",
        4: "created",
    }
    assert preview.json()["rows"][0]["id"] is not None, "an existing user keeps its id"
    unchanged = (await _import(client, headers, _csv(_people(2)), dry_run="true")).json()
    assert [r["would"] for r in unchanged["rows"]] == ["unchanged", "unchanged"]
    before_events = await _audit_count(owner_db, tenant)
    bad = await _import(client, headers, _csv([*_people(3), "x,,,,,,,,,,"]), dry_run="true", mode="partial")
    assert bad.status_code == 200
    assert (bad.json()["failed"], bad.json()["committed"]) == (1, False)
    atomic_bad = await _import(client, headers, _csv([*_people(3), "x,,,,,,,,,,"]), dry_run="true")
    assert atomic_bad.status_code == 422
    assert await stored_users(owner_db, tenant) == 3
    titles = {
        u["title"] for u in (await client.get(USERS, headers=headers, params={"q": "person"})).json()["items"]
    }
    assert titles == {"Nurse"}
    assert await _audit_count(owner_db, tenant) == before_events


async def test_formats_json_and_multipart(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    await _sites(client, headers, "SMH")
    rows: list[Any] = [
        {"email": "j1@x.org", "name": "Json One", "vip": True, "site": "smh"},
        {"email": "j2@x.org", "name": "Json Two", "clinical": "yes", "title": None},
        {"email": "j3@x.org", "name": "Bad", "site_id": str(uuid.uuid4())},
        {"email": "j4@x.org", "name": "Bad", "tenant_id": str(uuid.uuid4())},
        "not an object",
    ]
    response = await client.post(IMPORT, json={"rows": rows}, headers=headers, params={"mode": "partial"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert _statuses(report) == {1: "created", 2: "created", 3: "error", 4: "error", 5: "error"}
    assert _errors(report)[3] == [{"field": "site_id", "message": "unknown field"}]
    assert _errors(report)[4] == [{"field": "tenant_id", "message": "unknown field"}]
    as_array = await client.post(IMPORT, json=rows[:2], headers=headers)
    assert as_array.status_code == 200
    assert as_array.json()["unchanged"] == 2

    upload = await client.post(
        IMPORT,
        files={"file": ("people.csv", _csv(_people(5)).encode(), "text/csv")},
        headers=headers,
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["created"] == 5
    missing = await client.post(
        IMPORT, files={"other": ("x.csv", b"email,name\n", "text/csv")}, headers=headers
    )
    assert missing.status_code == 422
    unsupported = await _import(client, headers, "email: x", content_type="application/yaml")
    assert unsupported.status_code == 415


async def test_encodings(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    text = _csv(["zoe@x.org,Zoë Müller-Façade,,Infirmière,,,,,,,"])
    latin = text.encode("windows-1252")
    refused = await _import(client, headers, latin)
    assert refused.status_code == 422, refused.text
    assert "UTF-8" in refused.json()["detail"]
    assert "line 2" in refused.json()["detail"]
    accepted = await _import(client, headers, latin, content_type="text/csv; charset=windows-1252")
    assert accepted.status_code == 200, accepted.text
    user = (await client.get(USERS, headers=headers, params={"q": "zoe@"})).json()["items"][0]
    assert (user["name"], user["title"]) == ("Zoë Müller-Façade", "Infirmière")
    bom = await _import(client, headers, b"\xef\xbb\xbf" + text.encode())
    assert bom.status_code == 200
    assert bom.json()["unchanged"] == 1
    upload = await client.post(
        IMPORT,
        files={"file": ("people.csv", latin, "text/csv; charset=windows-1252")},
        headers=headers,
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["unchanged"] == 1
    unknown_charset = await _import(client, headers, latin, content_type="text/csv; charset=klingon")
    assert unknown_charset.status_code == 415


async def test_malformed_files(factory: Factory, client: AsyncClient, owner_db: Database) -> None:
    tenant, headers = await tenant_admin(factory)
    cases: list[tuple[bytes | str, int, str]] = [
        ("", 422, "empty"),
        ("\n\n", 422, "empty"),
        (_csv(['a@x.org,"unterminated,,,,,,,,,']), 422, "Malformed CSV"),
        (b"email,name\na@x.org,A\x00B\n", 422, "NUL"),
        (_csv(["a@x.org,A"], header="email,name,favourite_colour"), 422, "columns"),
        (_csv(["a@x.org"], header="email"), 422, "columns"),
        (_csv(["A"], header="name"), 422, "columns"),
        (_csv(["a@x.org,A,B"], header="email,name,name"), 422, "columns"),
        (b'{"rows": 5}', 422, "JSON"),
    ]
    for body, status, words in cases:
        content_type = "application/json" if isinstance(body, bytes) and body.startswith(b"{") else CSV
        response = await _import(client, headers, body, content_type=content_type)
        assert response.status_code == status, (body[:60], response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert words in response.text, (words, response.text)
    unknown = await _import(client, headers, _csv(["a@x.org,A,blue"], header="email,name,favourite_colour"))
    assert {"field": "favourite_colour", "message": unknown.json()["errors"][0]["message"]} in unknown.json()[
        "errors"
    ]
    missing = await _import(client, headers, _csv(["a@x.org"], header="email"))
    assert {"field": "name", "message": "required column is missing"} in missing.json()["errors"]
    bad_json = await _import(client, headers, b"[{", content_type="application/json")
    assert bad_json.status_code == 400
    headers_only = await _import(client, headers, _csv([], header="Email , NAME"))
    assert headers_only.status_code == 200, "header names are normalised; no rows is an empty report"
    assert headers_only.json()["total"] == 0
    bad_mode = await _import(client, headers, _csv(_people(1)), mode="sometimes")
    assert bad_mode.status_code in {400, 422}
    assert await stored_users(owner_db, tenant) == 1


async def test_more_than_ten_thousand_rows_is_413(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    response = await _import(client, headers, _csv(_people(10_001)))
    assert response.status_code == 413, response.text
    assert response.json()["type"] == "/problems/payload-too-large"
    as_json = await client.post(
        IMPORT, json=[{"email": f"j{i}@x.org", "name": "J"} for i in range(10_001)], headers=headers
    )
    assert as_json.status_code == 413
    assert await stored_users(owner_db, tenant) == 1


async def test_self_protection_and_deactivation_through_import(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    headers = await factory.headers(admin)
    person = await factory.user(tenant)
    session = (
        await client.post(
            "/api/v1/auth/sign-in",
            json={"email": person.email, "password": person.password, "tenant": tenant.slug},
        )
    ).json()
    rows = [
        f"{admin.email},Admin,tenant_user,,,,,,,,",
        f"{admin.email.upper()},Admin,,,,,,,,,no",
    ]
    for row in rows:
        response = await _import(client, headers, _csv([row]))
        assert response.status_code == 422
        assert "your own" in response.json()["report"]["rows"][0]["errors"][0]["message"]
    deactivate = await _import(client, headers, _csv([f"{person.email},Someone,,,,,,,,,no"]))
    assert deactivate.status_code == 200, deactivate.text
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert me.status_code == 401
    refresh = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": session["refresh_token"],
            "client_id": "msp-console",
        },
    )
    assert refresh.status_code == 400
    reactivate = await _import(client, headers, _csv([f"{person.email},Someone,,,,,,,,,yes"]))
    assert reactivate.json()["updated"] == 1
    found = (await client.get(f"{USERS}/{person.id}", headers=headers)).json()
    assert (found["active"], found["deactivated_at"]) == (True, None)


async def test_staff_import_into_the_named_tenant(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    a, b = await factory.tenant(), await factory.tenant()
    admin = await factory.staff(role="msp_admin", tier=None)
    response = await _import(client, await factory.headers(admin, tenant=a), _csv(_people(3)))
    assert response.status_code == 200, response.text
    assert await stored_users(owner_db, a) == 3
    assert await stored_users(owner_db, b) == 0
    no_tenant = await _import(client, await factory.headers(admin), _csv(_people(3)))
    assert no_tenant.status_code == 400


@pytest.mark.slow
async def test_ten_thousand_rows_in_a_few_seconds(
    factory: Factory, client: AsyncClient, owner_db: Database, backend: Any
) -> None:
    tenant, headers = await tenant_admin(factory)
    await _sites(client, headers, "SMH")
    body = _csv(_people(10_000, site="SMH"))
    started = time.perf_counter()
    response = await _import(client, headers, body)
    created_in = time.perf_counter() - started
    assert response.status_code == 200, response.text[:500]
    assert response.json()["created"] == 10_000
    started = time.perf_counter()
    again = await _import(client, headers, _csv(_people(10_000, site="SMH", title="RN")))
    updated_in = time.perf_counter() - started
    assert again.json()["updated"] == 10_000
    print(f"\n10,000-row import on {backend.name}: create {created_in:.2f}s, update {updated_in:.2f}s")  # noqa: T201
    # About 4 s each on an idle laptop-class machine (both backends); the bound only catches a pathological
    # (e.g. quadratic) regression, since a shared CI box can be several times slower.
    assert created_in < 120
    assert updated_in < 120
    assert await stored_users(owner_db, tenant) == 10_001
    assert await _audit_count(owner_db, tenant) >= 20_000


async def _audit_count(owner_db: Database, tenant: Tenant) -> int:
    async with owner_db.dangerously_unscoped_session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.tenant_id == tenant.id)
            )
            or 0
        )
