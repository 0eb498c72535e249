"""/api/v1/users: create, read, list, update; validation, PATCH semantics, who may do what."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from httpx import AsyncClient
from tests.conftest import Factory
from tests.identity.common import USERS, stored_users, tenant_admin
from tests.support.isolation import all_ids

from msp_platform.db.engine import Database


async def _site(client: AsyncClient, headers: dict[str, str], code: str = "SMH") -> str:
    response = await client.post(
        "/api/v1/sites", json={"code": code, "name": f"Site {code}"}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_create_get_and_list(factory: Factory, client: AsyncClient) -> None:
    tenant, headers = await tenant_admin(factory)
    site_id = await _site(client, headers)
    created = await client.post(
        USERS,
        json={
            "email": "  Dr.House@Example.ORG ",
            "name": "Gregory House",
            "role": "tenant_user",
            "title": "Head of Diagnostics",
            "department": "Diagnostics",
            "site_id": site_id,
            "phone": "+1 (609) 555-0100 x42",
            "vip": True,
            "clinical": True,
            "employee_id": "E-0042",
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "dr.house@example.org"
    assert body["tenant_id"] == str(tenant.id)
    assert (body["vip"], body["clinical"], body["active"], body["has_password"]) == (True, True, True, False)
    assert body["site_id"] == site_id
    assert "password_hash" not in body
    fetched = await client.get(f"{USERS}/{body['id']}", headers=headers)
    assert fetched.status_code == 200
    assert fetched.json() == body
    minimal = await client.post(USERS, json={"email": "nurse@example.org", "name": "Nurse"}, headers=headers)
    assert minimal.status_code == 201
    assert (minimal.json()["role"], minimal.json()["vip"], minimal.json()["title"]) == (
        "tenant_user",
        False,
        None,
    )


async def test_list_filters_order_and_pagination(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    site_id = await _site(client, headers, "ER")
    people: list[dict[str, Any]] = [
        {"email": "c@x.org", "name": "Carla Espinosa", "department": "Nursing", "clinical": True},
        {"email": "a@x.org", "name": "Perry Cox", "department": "Medicine", "vip": True, "site_id": site_id},
        {"email": "b@x.org", "name": "Bob Kelso", "role": "tenant_admin", "department": "Administration"},
        {"email": "d@x.org", "name": "J.D. 100%_sure", "department": "medicine", "clinical": True},
    ]
    ids = {}
    for person in people:
        response = await client.post(USERS, json=person, headers=headers)
        assert response.status_code == 201, response.text
        ids[person["email"]] = response.json()["id"]
    await client.post(f"{USERS}/{ids['c@x.org']}/deactivate", headers=headers)

    async def emails(**params: Any) -> list[str]:
        response = await client.get(USERS, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return [u["email"] for u in response.json()["items"] if u["email"].endswith("@x.org")]

    assert await emails() == ["a@x.org", "b@x.org", "c@x.org", "d@x.org"]
    assert await emails(role="tenant_admin") == ["b@x.org"]
    assert await emails(active="false") == ["c@x.org"]
    assert await emails(site_id=site_id) == ["a@x.org"]
    assert await emails(department="MEDICINE") == ["a@x.org", "d@x.org"]
    assert await emails(vip="true") == ["a@x.org"]
    assert await emails(clinical="true") == ["c@x.org", "d@x.org"]
    assert await emails(q="kelso") == ["b@x.org"]
    assert await emails(q="B@X") == ["b@x.org"]
    assert await emails(q="0%_s") == ["d@x.org"], "LIKE wildcards in q are literal"
    assert await emails(q="%kelso") == []
    bad_role = await client.get(USERS, headers=headers, params={"role": "root"})
    assert bad_role.status_code in {400, 422}

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(USERS, headers=headers, params=params)).json()
        seen += [u["email"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 5  # the four above and the admin
    tampered = await client.get(USERS, headers=headers, params={"cursor": "garbage"})
    assert tampered.status_code == 400


async def test_bad_input(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    _, other_headers = await tenant_admin(factory)
    foreign_site = await _site(client, other_headers, "FOREIGN")
    await client.post(USERS, json={"email": "taken@x.org", "name": "Taken"}, headers=headers)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"email": "not-an-email", "name": "x"}, "email"),
        ({"email": "two@@x.org", "name": "x"}, "email"),
        ({"email": "TAKEN@x.org", "name": "dup, other case"}, "email"),
        ({"email": "n@x.org", "name": "   "}, "name"),
        ({"email": "n@x.org", "name": "x" * 201}, "name"),
        ({"email": "n@x.org", "name": "x", "role": "msp_admin"}, "role"),
        ({"email": "n@x.org", "name": "x", "site_id": str(uuid.uuid4())}, "site_id"),
        ({"email": "n@x.org", "name": "x", "site_id": foreign_site}, "site_id"),
        ({"email": "n@x.org", "name": "x", "site_id": "not-a-uuid"}, "site_id"),
        ({"email": "n@x.org", "name": "x", "phone": "call me maybe"}, "phone"),
        ({"email": "n@x.org", "name": "x", "title": "t" * 121}, "title"),
        ({"email": "n@x.org", "name": "x", "vip": "very"}, "vip"),
        ({"email": "n@x.org"}, "name"),
        # No mass assignment: whatever the model has but the API does not offer is refused.
        ({"email": "n@x.org", "name": "x", "tenant_id": str(uuid.uuid4())}, "tenant_id"),
        ({"email": "n@x.org", "name": "x", "id": str(uuid.uuid4())}, "id"),
        ({"email": "n@x.org", "name": "x", "password_hash": "$argon2id$..."}, "password_hash"),
        ({"email": "n@x.org", "name": "x", "password": "correct horse battery"}, "password"),
        ({"email": "n@x.org", "name": "x", "active": False}, "active"),
    ]
    for payload, field in cases:
        response = await client.post(USERS, json=payload, headers=headers)
        assert response.status_code == 422, (payload, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert any(field in e["field"] or field in e["message"] for e in problem["errors"]), (
            payload,
            problem,
        )
        if field == "site_id" and "uuid" not in str(payload["site_id"]):
            assert "FOREIGN" not in response.text
    site_problem = await client.post(
        USERS, json={"email": "n@x.org", "name": "x", "site_id": foreign_site}, headers=headers
    )
    assert site_problem.json()["errors"] == [{"field": "site_id", "message": "no such site"}]
    emails = {u["email"] for u in (await client.get(USERS, headers=headers)).json()["items"]}
    assert "n@x.org" not in emails


async def test_patch_changes_only_the_fields_sent(factory: Factory, client: AsyncClient) -> None:
    _, headers = await tenant_admin(factory)
    site_id = await _site(client, headers)
    user = (
        await client.post(
            USERS,
            json={"email": "p@x.org", "name": "P", "title": "Nurse", "site_id": site_id, "vip": True},
            headers=headers,
        )
    ).json()
    other = (await client.post(USERS, json={"email": "o@x.org", "name": "O"}, headers=headers)).json()
    path = f"{USERS}/{user['id']}"

    renamed = await client.patch(path, json={"name": "Patricia"}, headers=headers)
    assert renamed.status_code == 200, renamed.text
    after = renamed.json()
    assert after["name"] == "Patricia"
    unchanged = {k: v for k, v in after.items() if k not in {"name", "updated_at"}}
    assert unchanged == {k: v for k, v in user.items() if k not in {"name", "updated_at"}}

    cleared = (await client.patch(path, json={"title": None, "site_id": None}, headers=headers)).json()
    assert (cleared["title"], cleared["site_id"], cleared["vip"]) == (None, None, True)
    promoted = (await client.patch(path, json={"role": "tenant_admin"}, headers=headers)).json()
    assert promoted["role"] == "tenant_admin"
    moved = (await client.patch(path, json={"email": "Patricia@X.org"}, headers=headers)).json()
    assert moved["email"] == "patricia@x.org"
    same_email = await client.patch(path, json={"email": "patricia@x.org"}, headers=headers)
    assert same_email.status_code == 200

    taken = await client.patch(path, json={"email": "O@x.org"}, headers=headers)
    assert taken.status_code == 422
    assert taken.json()["errors"][0]["field"] == "email"
    for bad in (
        {"name": ""},
        {"name": None},
        {"role": "owner"},
        {"site_id": str(uuid.uuid4())},
        {"tenant_id": str(uuid.uuid4())},
        {"active": False},
        {"password_hash": "x"},
        {"email": "nope"},
    ):
        response = await client.patch(path, json=bad, headers=headers)
        assert response.status_code == 422, (bad, response.text)
    assert (await client.get(f"{USERS}/{other['id']}", headers=headers)).json()["email"] == "o@x.org"
    assert (await client.get(path, headers=headers)).json()["email"] == "patricia@x.org"
    missing = await client.patch(f"{USERS}/{uuid.uuid4()}", json={"name": "x"}, headers=headers)
    assert missing.status_code == 404


async def test_an_admin_cannot_demote_or_deactivate_themselves(factory: Factory, client: AsyncClient) -> None:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    headers = await factory.headers(admin)
    demote = await client.patch(f"{USERS}/{admin.id}", json={"role": "tenant_user"}, headers=headers)
    assert demote.status_code == 409, demote.text
    assert "your own administrator role" in demote.json()["detail"]
    deactivate = await client.post(f"{USERS}/{admin.id}/deactivate", headers=headers)
    assert deactivate.status_code == 409
    assert "your own account" in deactivate.json()["detail"]
    me = (await client.get(f"{USERS}/{admin.id}", headers=headers)).json()
    assert (me["role"], me["active"]) == ("tenant_admin", True)
    # Other changes to one's own account are fine, and another admin may demote them.
    assert (
        await client.patch(f"{USERS}/{admin.id}", json={"title": "CIO"}, headers=headers)
    ).status_code == 200
    second = await factory.user(tenant, role="tenant_admin")
    demoted = await client.patch(
        f"{USERS}/{admin.id}", json={"role": "tenant_user"}, headers=await factory.headers(second)
    )
    assert demoted.status_code == 200
    assert demoted.json()["role"] == "tenant_user"


async def test_scopes_and_roles(factory: Factory, client: AsyncClient) -> None:
    tenant, admin_headers = await tenant_admin(factory)
    plain = await factory.user(tenant)
    plain_headers = await factory.headers(plain)
    assert (await client.get(USERS, headers=plain_headers)).status_code == 403
    assert (await client.get(f"{USERS}/{plain.id}", headers=plain_headers)).status_code == 403
    refused = await client.post(USERS, json={"email": "x@x.org", "name": "x"}, headers=plain_headers)
    assert refused.status_code == 403
    assert (await client.post(f"{USERS}/{plain.id}/invitations", headers=plain_headers)).status_code == 403
    read_only = await factory.headers(await factory.user(tenant, role="tenant_admin"), scope="users:read")
    assert (await client.get(USERS, headers=read_only)).status_code == 200
    no_write = await client.patch(f"{USERS}/{plain.id}", json={"name": "y"}, headers=read_only)
    assert no_write.status_code == 403
    assert no_write.json()["type"] == "/problems/insufficient-scope"
    assert (await client.get(f"{USERS}/{plain.id}", headers=admin_headers)).json()["name"] != "y"


async def test_staff_act_through_msp_tenant(factory: Factory, client: AsyncClient) -> None:
    a, b = await factory.tenant(), await factory.tenant()
    admin = await factory.staff(role="msp_admin", tier=None)
    for tenant in (a, b):
        created = await client.post(
            USERS,
            json={"email": "same@example.org", "name": f"Same person at {tenant.slug}"},
            headers=await factory.headers(admin, tenant=tenant),
        )
        assert created.status_code == 201, created.text
        assert created.json()["tenant_id"] == str(tenant.id)
    no_tenant = await client.post(
        USERS, json={"email": "x@example.org", "name": "x"}, headers=await factory.headers(admin)
    )
    assert no_tenant.status_code == 400
    assert "MSP-Tenant" in no_tenant.json()["detail"]

    agent = await factory.staff(role="msp_agent", grants=[a])
    agent_a = await factory.headers(agent, tenant=a)
    listed = (await client.get(USERS, headers=agent_a)).json()["items"]
    assert {u["tenant_id"] for u in listed} == {str(a.id)}
    write = await client.post(USERS, json={"email": "y@example.org", "name": "y"}, headers=agent_a)
    assert write.status_code == 403, "agents read users but do not manage them"
    ungranted = await client.get(USERS, headers=await factory.headers(agent, tenant=b))
    assert ungranted.status_code == 404


async def test_fifty_concurrent_creates_with_one_idempotency_key_make_one_user(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    keyed = {**headers, "Idempotency-Key": "onboard-burst-1"}
    payload = {"email": "burst@x.org", "name": "Burst"}
    responses = await asyncio.gather(*(client.post(USERS, json=payload, headers=keyed) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {201}, [r.text for r in responses if r.status_code != 201][:3]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(1 for r in responses if r.headers.get("idempotent-replayed") == "true") == 49
    assert await stored_users(owner_db, tenant, email="burst@x.org") == 1
    # Without a key, the second create is refused by the email check, not stored twice.
    again = await client.post(USERS, json=payload, headers=headers)
    assert again.status_code == 422
    assert len(await all_ids(client, USERS, headers)) == 2


async def test_concurrent_creates_of_one_email_store_one_and_never_500(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await tenant_admin(factory)
    payload = {"email": "race@x.org", "name": "Race"}
    responses = await asyncio.gather(*(client.post(USERS, json=payload, headers=headers) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, [r.text for r in responses]
    assert set(statuses) <= {201, 409, 422}, [r.text for r in responses if r.status_code >= 500]
    assert await stored_users(owner_db, tenant, email="race@x.org") == 1


async def test_the_staff_list_filters_by_role_and_refuses_an_unknown_one(
    factory: Factory, client: AsyncClient
) -> None:
    admin = await factory.headers(await factory.staff(role="msp_admin", tier=None))
    agent = await factory.staff(role="msp_agent")
    agents = await client.get("/api/v1/staff", params={"role": "msp_agent", "limit": 200}, headers=admin)
    assert agents.status_code == 200, agents.text
    assert {s["role"] for s in agents.json()["items"]} == {"msp_agent"}
    assert str(agent.id) in {s["id"] for s in agents.json()["items"]}
    # An empty or unknown role is the caller's mistake, not a server error (it was a 500).
    for role in ("", "root"):
        refused = await client.get("/api/v1/staff", params={"role": role, "active": "true"}, headers=admin)
        assert refused.status_code == 422, (role, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
