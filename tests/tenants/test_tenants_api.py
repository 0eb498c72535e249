from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from tests.conftest import Factory, Person
from tests.support.isolation import all_ids, assert_isolated

from msp_platform.audit.service import verify_chain
from msp_platform.db.engine import Database
from msp_platform.models.audit import AuditEvent
from msp_platform.models.tenant import Tenant

API = "/api/v1/tenants"
HOURS = [{"weekday": day, "start": "07:00", "end": "19:00"} for day in range(5)]


def new_tenant(**overrides: Any) -> dict[str, Any]:
    token = uuid.uuid4().hex[:10]
    body: dict[str, Any] = {
        "slug": f"t-{token}",
        "name": f"Hospital {token}",
        "ticket_prefix": "P" + token[:8].upper(),
        "timezone": "America/Chicago",
    }
    body.update(overrides)
    return body


async def msp_admin(factory: Factory) -> dict[str, str]:
    return await factory.headers(await factory.staff(role="msp_admin", tier=None))


async def create(client: AsyncClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post(API, json=new_tenant(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_get_list_update(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    system = await create(client, admin, name="Riverbend Health System")
    calendar = {
        "hours": HOURS,
        "holidays": [
            {"date": "2026-12-25", "name": "Christmas Day"},
            {"date": "2026-07-03", "name": "July 4th"},
        ],
    }
    hospital = await create(
        client,
        admin,
        parent_id=system["id"],
        ticket_prefix="smh" + uuid.uuid4().hex[:6],
        business_calendar=calendar,
    )
    assert hospital["status"] == "active"
    assert hospital["parent_id"] == system["id"]
    assert hospital["ticket_prefix"].startswith("SMH"), "prefixes are stored upper-case"
    assert hospital["business_calendar"]["hours"] == HOURS
    assert [h["date"] for h in hospital["business_calendar"]["holidays"]] == ["2026-07-03", "2026-12-25"]
    assert system["business_calendar"] == {"hours": [], "holidays": []}, "no hours means 24x7"

    got = await client.get(f"{API}/{hospital['id']}", headers=admin)
    assert got.status_code == 200
    assert got.json() == hospital

    children = (await client.get(f"{API}/{system['id']}/children", headers=admin)).json()["items"]
    assert [c["id"] for c in children] == [hospital["id"]]
    by_parent = (await client.get(API, headers=admin, params={"parent_id": system["id"]})).json()["items"]
    assert [c["id"] for c in by_parent] == [hospital["id"]]
    found = (await client.get(API, headers=admin, params={"q": "riverbend HEALTH"})).json()["items"]
    assert system["id"] in {t["id"] for t in found}
    assert hospital["id"] not in {t["id"] for t in found}
    by_slug = (await client.get(API, headers=admin, params={"q": hospital["slug"]})).json()["items"]
    assert [t["id"] for t in by_slug] == [hospital["id"]]

    patched = await client.patch(
        f"{API}/{hospital['id']}", json={"name": "St. Mary's Hospital"}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "St. Mary's Hospital"
    unchanged = {k: v for k, v in hospital.items() if k not in {"name", "updated_at"}}
    assert {k: body[k] for k in unchanged} == unchanged, "fields not sent must not change"

    moved = await client.patch(
        f"{API}/{hospital['id']}",
        json={"parent_id": None, "timezone": "America/Denver", "business_calendar": {"hours": []}},
        headers=admin,
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["parent_id"], moved.json()["timezone"]) == (None, "America/Denver")
    assert moved.json()["business_calendar"] == {"hours": [], "holidays": []}


async def test_list_is_paginated_and_filtered_by_status(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    parent = await create(client, admin)
    made = [await create(client, admin, parent_id=parent["id"]) for _ in range(5)]
    await client.post(f"{API}/{made[0]['id']}/suspend", json={"reason": "contract review"}, headers=admin)
    first = (await client.get(API, headers=admin, params={"parent_id": parent["id"], "limit": 2})).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    assert await all_ids(client, API, admin, {"parent_id": parent["id"]}) == {t["id"] for t in made}
    suspended = await all_ids(client, API, admin, {"parent_id": parent["id"], "status": "suspended"})
    assert suspended == {made[0]["id"]}
    slugs = [
        t["slug"]
        for t in (await client.get(API, headers=admin, params={"parent_id": parent["id"]})).json()["items"]
    ]
    assert slugs == sorted(slugs)
    bad = await client.get(API, headers=admin, params={"status": "deleted"})
    assert bad.status_code in {400, 422}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"slug": "St-Marys"}, "slug"),
        ({"slug": "ab"}, "slug"),
        ({"slug": "bad slug"}, "slug"),
        ({"slug": "-leading"}, "slug"),
        ({"slug": "x" * 64}, "slug"),
        ({"slug": str(uuid.uuid4())}, "slug"),
        ({"name": "   "}, "name"),
        ({"ticket_prefix": "S"}, "ticket_prefix"),
        ({"ticket_prefix": "SMH-1"}, "ticket_prefix"),
        ({"ticket_prefix": "ABCDEFGHIJKLM"}, "ticket_prefix"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "EST5EDT-nope"}, "timezone"),
        ({"parent_id": str(uuid.uuid4())}, "parent_id"),
        (
            {
                "business_calendar": {
                    "hours": [
                        {"weekday": 0, "start": "08:00", "end": "17:00"},
                        {"weekday": 0, "start": "12:00", "end": "20:00"},
                    ]
                }
            },
            "business_calendar.hours[1]",
        ),
        (
            {"business_calendar": {"hours": [{"weekday": 6, "start": "22:00", "end": "08:00"}, HOURS[0]]}},
            "business_calendar.hours[",
        ),
        ({"business_calendar": {"hours": [{"weekday": 7, "start": "08:00", "end": "17:00"}]}}, "weekday"),
        ({"business_calendar": {"hours": [{"weekday": 1, "start": "08:00", "end": "25:00"}]}}, "end"),
        ({"business_calendar": {"hours": [{"weekday": 1, "start": "9am", "end": "17:00"}]}}, "start"),
        ({"business_calendar": {"hours": [{"weekday": 1, "start": "08:00", "end": "08:00"}]}}, "hours[0]"),
        ({"business_calendar": {"holidays": [{"date": "2026-02-30", "name": "x"}]}}, "holidays[0].date"),
        ({"business_calendar": {"hours": [], "weekends": True}}, "weekends"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_bad_input(
    factory: Factory, client: AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    admin = await msp_admin(factory)
    payload = new_tenant(**overrides)
    response = await client.post(API, json=payload, headers=admin)
    assert response.status_code in {400, 422}, response.text
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json().get("errors") or []
    assert any(field in e["field"] or field in e["message"] for e in errors), response.json()
    if "slug" in payload and isinstance(payload["slug"], str):
        listed = (await client.get(API, headers=admin, params={"q": payload["slug"].lower()})).json()["items"]
        assert not [t for t in listed if t["slug"] == payload["slug"]], "nothing was created"


async def test_calendar_problems_are_all_reported(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    response = await client.post(
        API,
        json=new_tenant(
            timezone="Nowhere/Land",
            business_calendar={
                "hours": [
                    {"weekday": 9, "start": "08:00", "end": "17:00"},
                    {"weekday": 1, "start": "x", "end": "y"},
                ],
                "holidays": [{"date": "soon"}],
            },
        ),
        headers=admin,
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {
        "timezone",
        "business_calendar.hours[0].weekday",
        "business_calendar.hours[1].start",
        "business_calendar.hours[1].end",
        "business_calendar.holidays[0].date",
    } <= fields


async def test_duplicates_and_cycles(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    a = await create(client, admin)
    b = await create(client, admin, parent_id=a["id"])
    c = await create(client, admin, parent_id=b["id"])
    for overrides, field in [
        ({"slug": a["slug"]}, "slug"),
        ({"ticket_prefix": a["ticket_prefix"].lower()}, "ticket_prefix"),
    ]:
        response = await client.post(API, json=new_tenant(**overrides), headers=admin)
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field]
    for target, parent in [(a, c), (a, b), (b, b)]:
        cycle = await client.patch(f"{API}/{target['id']}", json={"parent_id": parent["id"]}, headers=admin)
        assert cycle.status_code == 422, cycle.text
        assert cycle.json()["errors"][0]["field"] == "parent_id"
    taken = await client.patch(
        f"{API}/{c['id']}", json={"slug": b["slug"], "ticket_prefix": a["ticket_prefix"]}, headers=admin
    )
    assert taken.status_code == 422
    assert {e["field"] for e in taken.json()["errors"]} == {"slug", "ticket_prefix"}
    same = await client.patch(
        f"{API}/{c['id']}", json={"slug": c["slug"], "ticket_prefix": c["ticket_prefix"]}, headers=admin
    )
    assert same.status_code == 200, "a tenant's own slug and prefix are not duplicates"
    renamed = await client.patch(f"{API}/{c['id']}", json={"slug": c["slug"] + "-x"}, headers=admin)
    assert renamed.status_code == 200
    assert renamed.json()["slug"] == c["slug"] + "-x"
    assert (await client.get(f"{API}/{a['id']}", headers=admin)).json()["parent_id"] is None


async def _tenant_with_people(
    factory: Factory, client: AsyncClient, admin: dict[str, str]
) -> tuple[Tenant, Person, Person, str]:
    tenant = await factory.tenant()
    tenant_admin = await factory.user(tenant, role="tenant_admin")
    user = await factory.user(tenant)
    client_id, secret = await factory.integration_client(tenant)
    return tenant, tenant_admin, user, await factory.client_token(client_id, secret)


async def test_visibility_per_role(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    system = await factory.tenant()
    hospital = await factory.tenant(parent=system)
    clinic = await factory.tenant(parent=system)
    other = await factory.tenant()
    every = {str(t.id) for t in (system, hospital, clinic, other)}

    assert every <= await all_ids(client, API, admin)

    agent = await factory.headers(await factory.staff(grants=[system]))
    assert await all_ids(client, API, agent) == {str(system.id), str(hospital.id), str(clinic.id)}
    assert (await client.get(f"{API}/{hospital.id}", headers=agent)).status_code == 200
    assert (await client.get(f"{API}/{other.id}", headers=agent)).status_code == 404
    kids = await all_ids(client, f"{API}/{system.id}/children", agent)
    assert kids == {str(hospital.id), str(clinic.id)}

    narrow_agent = await factory.headers(await factory.staff(grants=[clinic]))
    assert await all_ids(client, API, narrow_agent) == {str(clinic.id)}
    assert (await client.get(f"{API}/{system.id}", headers=narrow_agent)).status_code == 404

    hospital_admin = await factory.headers(await factory.user(hospital, role="tenant_admin"))
    hospital_user = await factory.headers(await factory.user(hospital))
    client_id, secret = await factory.integration_client(hospital)
    integration = {"Authorization": f"Bearer {await factory.client_token(client_id, secret)}"}
    for headers in (hospital_admin, hospital_user, integration):
        assert await all_ids(client, API, headers) == {str(hospital.id)}
        assert (await client.get(f"{API}/{hospital.id}", headers=headers)).status_code == 200
        for hidden in (system, clinic, other):
            assert (await client.get(f"{API}/{hidden.id}", headers=headers)).status_code == 404
        assert (await client.get(f"{API}/{system.id}/children", headers=headers)).status_code == 404
        filtered = await all_ids(client, API, headers, {"parent_id": str(system.id)})
        assert filtered == {str(hospital.id)}


async def test_only_msp_admins_change_tenants(factory: Factory, client: AsyncClient) -> None:
    granted, other = await factory.tenant(), await factory.tenant()
    agent = await factory.headers(await factory.staff(grants=[granted]))
    tenant_admin = await factory.headers(await factory.user(granted, role="tenant_admin"))
    for headers in (agent, tenant_admin):
        assert (await client.post(API, json=new_tenant(), headers=headers)).status_code == 403
        own = [
            await client.patch(f"{API}/{granted.id}", json={"name": "mine now"}, headers=headers),
            await client.post(f"{API}/{granted.id}/suspend", json={"reason": "x"}, headers=headers),
            await client.post(f"{API}/{granted.id}/offboard", json={"reason": "x"}, headers=headers),
            await client.post(f"{API}/{granted.id}/reactivate", headers=headers),
        ]
        assert [r.status_code for r in own] == [403] * 4, [r.text for r in own]
        assert (
            await client.patch(f"{API}/{other.id}", json={"name": "x"}, headers=headers)
        ).status_code == 404
    admin_person = await factory.staff(role="msp_admin", tier=None)
    read_only = await factory.headers(admin_person, scope="tenants:read")
    refused = await client.patch(f"{API}/{granted.id}", json={"name": "x"}, headers=read_only)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/insufficient-scope")
    assert (await client.post(API, json=new_tenant(), headers=read_only)).status_code == 403
    admin = await msp_admin(factory)
    assert (await client.get(f"{API}/{granted.id}", headers=admin)).json()["name"] == granted.name


async def test_lifecycle_closes_and_reopens_access(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    tenant, tenant_admin, user, client_token = await _tenant_with_people(factory, client, admin)
    callers = [
        await factory.headers(tenant_admin),
        await factory.headers(user),
        {"Authorization": f"Bearer {client_token}"},
    ]
    own = f"{API}/{tenant.id}"

    async def statuses() -> list[int]:
        return [(await client.get(own, headers=h)).status_code for h in callers]

    assert await statuses() == [200, 200, 200]

    missing_reason = await client.post(f"{own}/suspend", json={"reason": "  "}, headers=admin)
    assert missing_reason.status_code == 422
    suspended = await client.post(
        f"{own}/suspend", json={"reason": "Invoice 2026-0042 unpaid"}, headers=admin
    )
    assert suspended.status_code == 200, suspended.text
    body = suspended.json()
    assert (body["status"], body["status_reason"]) == ("suspended", "Invoice 2026-0042 unpaid")
    assert body["suspended_at"] is not None
    for headers in callers:
        refused = await client.get(own, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/tenant-inactive")
    sign_in = await client.post(
        "/api/v1/auth/sign-in", json={"email": user.email, "password": user.password, "tenant": tenant.slug}
    )
    assert sign_in.status_code in {400, 401}

    again = await client.post(f"{own}/suspend", json={"reason": "twice"}, headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    reactivated = await client.post(f"{own}/reactivate", headers=admin)
    assert reactivated.status_code == 200
    assert reactivated.json()["status"] == "active"
    assert reactivated.json()["status_reason"] is None
    assert reactivated.json()["suspended_at"] is None
    assert await statuses() == [200, 200, 200], "reactivation restores access with the same tokens"
    assert (await client.post(f"{own}/reactivate", headers=admin)).status_code == 409

    offboarded = await client.post(
        f"{own}/offboard", json={"reason": "Contract ended 2026-06-30"}, headers=admin
    )
    assert offboarded.status_code == 200
    assert offboarded.json()["status"] == "offboarded"
    assert offboarded.json()["offboarded_at"] is not None
    assert await statuses() == [403, 403, 401], "users: tenant-inactive; the client is revoked"
    for action, payload in [("suspend", {"reason": "x"}), ("offboard", {"reason": "x"})]:
        refused = await client.post(f"{own}/{action}", json=payload, headers=admin)
        assert refused.status_code == 409, (action, refused.text)
    assert (await client.get(own, headers=admin)).json()["status"] == "offboarded", "data is kept"
    offboarded_list = await all_ids(client, API, admin, {"status": "offboarded"})
    assert str(tenant.id) in offboarded_list

    back = await client.post(f"{own}/reactivate", headers=admin)
    assert back.status_code == 200
    # Offboarding revoked the integration client for good (a reactivated tenant creates new ones); the users'
    # short-lived access tokens work again.
    assert await statuses() == [200, 200, 401]

    suspended_then_offboarded = await client.post(f"{own}/suspend", json={"reason": "audit"}, headers=admin)
    assert suspended_then_offboarded.status_code == 200
    assert (await client.post(f"{own}/offboard", json={"reason": "gone"}, headers=admin)).status_code == 200


async def test_hierarchy_rules_for_offboarding(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    system = await create(client, admin)
    hospital = await create(client, admin, parent_id=system["id"])
    refused = await client.post(f"{API}/{system['id']}/offboard", json={"reason": "sold"}, headers=admin)
    assert refused.status_code == 409
    assert "offboard them first" in refused.json()["detail"]
    assert (
        await client.post(f"{API}/{hospital['id']}/offboard", json={"reason": "sold"}, headers=admin)
    ).status_code == 200
    assert (
        await client.post(f"{API}/{system['id']}/offboard", json={"reason": "sold"}, headers=admin)
    ).status_code == 200
    orphan = await client.post(f"{API}/{hospital['id']}/reactivate", headers=admin)
    assert orphan.status_code == 409
    under_offboarded = await client.post(API, json=new_tenant(parent_id=system["id"]), headers=admin)
    assert under_offboarded.status_code == 422
    assert under_offboarded.json()["errors"][0]["field"] == "parent_id"


async def _events(owner_db: Database, tenant_id: str) -> list[AuditEvent]:
    async with owner_db.dangerously_unscoped_session() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.tenant_id == uuid.UUID(tenant_id)).order_by(AuditEvent.seq)
        )
        return list(rows.all())


async def test_tenant_changes_are_audited_in_the_tenants_chain(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    person = await factory.staff(role="msp_admin", tier=None)
    admin = await factory.headers(person)
    tenant = await create(client, admin)
    own = f"{API}/{tenant['id']}"
    assert (
        await client.patch(own, json={"name": "Renamed Medical Center"}, headers=admin)
    ).status_code == 200
    assert (
        await client.patch(own, json={"name": "Renamed Medical Center"}, headers=admin)
    ).status_code == 200
    assert (
        await client.post(f"{own}/suspend", json={"reason": "security incident"}, headers=admin)
    ).status_code == 200
    assert (await client.post(f"{own}/reactivate", headers=admin)).status_code == 200
    assert (
        await client.post(f"{own}/offboard", json={"reason": "contract ended"}, headers=admin)
    ).status_code == 200

    events = await _events(owner_db, tenant["id"])
    assert [e.action for e in events] == [
        "tenant.created",
        "tenant.updated",
        "tenant.suspended",
        "tenant.reactivated",
        "tenant.offboarded",
    ], "an unchanged PATCH records nothing"
    assert {e.actor for e in events} == {f"staff:{person.id}"}
    assert {e.object_id for e in events} == {tenant["id"]}
    assert events[0].changes["slug"] == [None, tenant["slug"]]
    assert events[1].changes["name"] == [tenant["name"], "Renamed Medical Center"]
    assert events[2].changes["status"] == ["active", "suspended"]
    assert events[2].changes["status_reason"] == [None, "security incident"]
    async with owner_db.dangerously_unscoped_session() as session:
        report = await session.run_sync(lambda s: verify_chain(s, tenant["id"]))
    assert report.valid
    assert report.events == 5


async def test_posts_are_idempotent(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    payload = new_tenant()
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    first = await client.post(API, json=payload, headers={**admin, **key})
    replay = await client.post(API, json=payload, headers={**admin, **key})
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers.get("idempotent-replayed") == "true"
    listed = (await client.get(API, headers=admin, params={"q": payload["slug"]})).json()["items"]
    assert [t["id"] for t in listed] == [first.json()["id"]]
    other_body = await client.post(API, json=new_tenant(), headers={**admin, **key})
    assert other_body.status_code == 422
    assert other_body.json()["type"].endswith("/idempotency-key-reused")

    own = f"{API}/{first.json()['id']}"
    suspend_key = {"Idempotency-Key": f"suspend-{uuid.uuid4()}"}
    suspended = await client.post(
        f"{own}/suspend", json={"reason": "unpaid"}, headers={**admin, **suspend_key}
    )
    again = await client.post(f"{own}/suspend", json={"reason": "unpaid"}, headers={**admin, **suspend_key})
    assert suspended.status_code == again.status_code == 200, "a retried suspension replays, it is no 409"
    assert again.json() == suspended.json()
    reactivate_key = {"Idempotency-Key": f"reactivate-{uuid.uuid4()}"}
    for _ in range(2):
        assert (
            await client.post(f"{own}/reactivate", headers={**admin, **reactivate_key})
        ).status_code == 200


async def test_cross_tenant_matrix(factory: Factory, client: AsyncClient) -> None:
    admin = await msp_admin(factory)
    a = await factory.tenant()
    b_body = await create(client, admin, name="Tenant B Oncology Institute")
    b_id = b_body["id"]
    b_child = await create(client, admin, parent_id=b_id, name="Tenant B Satellite Clinic")
    headers_a = await factory.headers(await factory.user(a, role="tenant_admin"))
    await assert_isolated(
        client,
        headers_a,
        foreign_paths=[f"{API}/{b_id}", f"{API}/{b_child['id']}"],
        patch_body={"name": "hijacked"},
        deletable=False,
        lists=[API, f"{API}/{a.id}/children"],
        foreign_ids=[b_id, b_child["id"]],
        secrets=["Tenant B Oncology Institute", "Tenant B Satellite Clinic", b_body["slug"]],
    )
    for action, payload in [
        ("suspend", {"reason": "x"}),
        ("offboard", {"reason": "x"}),
        ("reactivate", None),
    ]:
        response = await client.post(f"{API}/{b_id}/{action}", json=payload, headers=headers_a)
        assert response.status_code == 404, (action, response.text)
        assert "Oncology" not in response.text
    children = await client.get(f"{API}/{b_id}/children", headers=headers_a)
    assert children.status_code == 404
    assert await all_ids(client, API, headers_a) == {str(a.id)}
    assert await all_ids(client, API, headers_a, {"q": "tenant b"}) == set()
    # Naming B as the tenant in the header changes nothing for a tenant-bound caller.
    assert (await client.get(f"{API}/{b_id}", headers={**headers_a, "MSP-Tenant": b_id})).status_code == 404
    still = (await client.get(f"{API}/{b_id}", headers=admin)).json()
    assert (still["name"], still["status"]) == ("Tenant B Oncology Institute", "active")


async def test_openapi_documents_the_tenants_api(client: AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    assert {f"{API}", f"{API}/{{tenant_id}}", f"{API}/{{tenant_id}}/suspend"} <= set(paths)
    assert paths[f"{API}/{{tenant_id}}"]["patch"]["security"] == [{"bearerAuth": ["tenants:write"]}]
    assert {"404", "409", "422"} <= set(paths[f"{API}/{{tenant_id}}/suspend"]["post"]["responses"])
