"""The cross-tenant matrix over every endpoint of the tenants/users/devices/sites/clients/audit/staff domains.

Each probe is tenant A's caller (its administrator, its integration client, an agent granted only A) asking
for, listing, filtering by, changing or deleting tenant B's objects: 404 (or 403 for MSP-only endpoints),
empty lists, "no such ..." for references, and never a byte of B's data. A second test reads the routes from
the OpenAPI document and fails when an endpoint of these domains has no probe here.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient, Response
from litestar import Litestar
from tests.conftest import Factory
from tests.support.isolation import all_ids

from msp_platform.models.tenant import Tenant

API = "/api/v1"
# Route prefixes of the domains this matrix covers.
DOMAINS = (
    f"{API}/tenants",
    f"{API}/users",
    f"{API}/devices",
    f"{API}/sites",
    f"{API}/clients",
    f"{API}/audit-events",
    f"{API}/platform/audit-events",
    f"{API}/staff",
    f"{API}/auth/accept-invitation",
)


@dataclass
class World:
    client: AsyncClient
    a: Tenant
    b: Tenant
    a_admin: dict[str, str]  # A's tenant administrator
    a_client: dict[str, str]  # A's integration client (every client scope)
    a_agent_on_b: dict[str, str]  # an agent granted only A, naming B with MSP-Tenant
    b_admin: dict[str, str]
    b_child: dict[str, Any]
    b_site: dict[str, Any]
    b_user: dict[str, Any]
    b_device: dict[str, Any]
    b_client_id: str
    b_admin_actor: str
    b_staff_id: str
    secrets: list[str]

    @property
    def a_callers(self) -> list[dict[str, str]]:
        return [self.a_admin, self.a_client]

    def clean(self, response: Response, *expected: int) -> None:
        assert response.status_code in expected, (
            response.request.method,
            response.request.url,
            response.status_code,
            response.text,
        )
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.text
        sent = str(response.request.url) + response.request.content.decode(errors="replace")
        for secret in self.secrets:
            if secret not in sent:  # echoing what the caller sent leaks nothing
                assert secret not in response.text, (response.request.url, secret)


Probe = Callable[[World], Awaitable[None]]
PROBES: dict[tuple[str, str], Probe] = {}


def probe(method: str, path: str) -> Callable[[Probe], Probe]:
    def register(fn: Probe) -> Probe:
        PROBES[(method, path)] = fn
        return fn

    return register


async def _not_found(w: World, method: str, path: str, json: Any = None, *, also_agent: bool = True) -> None:
    callers = [*w.a_callers, w.a_agent_on_b] if also_agent else w.a_callers
    for headers in callers:
        response = await w.client.request(method, path, headers=headers, json=json)
        w.clean(response, 404)


async def _never_listed(w: World, path: str, foreign: str, params: dict[str, Any] | None = None) -> None:
    for headers in w.a_callers:
        if params is None:
            assert foreign not in await all_ids(w.client, path, headers), path
        response = await w.client.get(path, headers=headers, params={**(params or {}), "limit": 200})
        w.clean(response, 200)
        assert foreign not in response.text
    w.clean(await w.client.get(path, headers=w.a_agent_on_b), 404)


# --- users ----------------------------------------------------------------------------------------------------


@probe("GET", f"{API}/users")
async def _(w: World) -> None:
    await _never_listed(w, f"{API}/users", w.b_user["id"])
    for params in ({"q": "Surgeon"}, {"site_id": w.b_site["id"]}, {"q": w.b.slug}):
        await _never_listed(w, f"{API}/users", w.b_user["id"], params)


@probe("POST", f"{API}/users")
async def _(w: World) -> None:
    for headers in w.a_callers:
        response = await w.client.post(
            f"{API}/users",
            json={"email": f"{uuid.uuid4().hex[:6]}@a.example", "name": "A", "site_id": w.b_site["id"]},
            headers=headers,
        )
        w.clean(response, 422)
        assert response.json()["errors"] == [{"field": "site_id", "message": "no such site"}]


@probe("GET", f"{API}/users/{{user_id}}")
async def _(w: World) -> None:
    await _not_found(w, "GET", f"{API}/users/{w.b_user['id']}")


@probe("PATCH", f"{API}/users/{{user_id}}")
async def _(w: World) -> None:
    await _not_found(w, "PATCH", f"{API}/users/{w.b_user['id']}", {"name": "hijacked"}, also_agent=True)


@probe("POST", f"{API}/users/{{user_id}}/deactivate")
async def _(w: World) -> None:
    await _not_found(w, "POST", f"{API}/users/{w.b_user['id']}/deactivate")


@probe("POST", f"{API}/users/{{user_id}}/reactivate")
async def _(w: World) -> None:
    await _not_found(w, "POST", f"{API}/users/{w.b_user['id']}/reactivate")


@probe("POST", f"{API}/users/{{user_id}}/invitations")
async def _(w: World) -> None:
    await _not_found(w, "POST", f"{API}/users/{w.b_user['id']}/invitations")


@probe("GET", f"{API}/users/{{user_id}}/invitations")
async def _(w: World) -> None:
    await w.client.post(f"{API}/users/{w.b_user['id']}/invitations", headers=w.b_admin)
    await _not_found(w, "GET", f"{API}/users/{w.b_user['id']}/invitations")


@probe("POST", f"{API}/users/{{user_id}}/invitations/{{invitation_id}}/revoke")
async def _(w: World) -> None:
    invited = await w.client.post(f"{API}/users/{w.b_user['id']}/invitations", headers=w.b_admin)
    invitation_id = invited.json()["id"]
    await _not_found(w, "POST", f"{API}/users/{w.b_user['id']}/invitations/{invitation_id}/revoke")
    # B's invitation under one of A's own users: still nothing.
    a_user = await w.client.post(
        f"{API}/users", json={"email": f"{uuid.uuid4().hex[:6]}@a.example", "name": "A"}, headers=w.a_admin
    )
    await _not_found(
        w, "POST", f"{API}/users/{a_user.json()['id']}/invitations/{invitation_id}/revoke", also_agent=False
    )
    listed = await w.client.get(f"{API}/users/{w.b_user['id']}/invitations", headers=w.b_admin)
    newest = listed.json()["items"][0]
    assert (newest["id"], newest["status"]) == (invitation_id, "pending")


@probe("POST", f"{API}/users/import")
async def _(w: World) -> None:
    body = f"email,name,site\nnew-{uuid.uuid4().hex[:6]}@a.example,New,{w.b_site['code']}\n".encode()
    response = await w.client.post(
        f"{API}/users/import",
        content=body,
        params={"mode": "partial", "dry_run": "true"},
        headers={**w.a_admin, "content-type": "text/csv"},
    )
    w.clean(response, 200)
    assert response.json()["rows"][0]["errors"] == [
        {"field": "site", "message": f"no such site code {w.b_site['code']}"}
    ]


@probe("POST", f"{API}/auth/accept-invitation")
async def _(w: World) -> None:
    invited = await w.client.post(f"{API}/users/{w.b_user['id']}/invitations", headers=w.b_admin)
    token = invited.json()["token"]
    # B's secret under A's tenant id finds nothing (the token's tenant part scopes the lookup).
    forged = f"msp_inv_{w.a.id.hex}_{token[41:]}"
    response = await w.client.post(
        f"{API}/auth/accept-invitation", json={"token": forged, "password": "a long enough passphrase"}
    )
    w.clean(response, 400)
    assert response.json()["reason"] == "invalid"


# --- sites ----------------------------------------------------------------------------------------------------


@probe("GET", f"{API}/sites")
async def _(w: World) -> None:
    await _never_listed(w, f"{API}/sites", w.b_site["id"])
    await _never_listed(w, f"{API}/sites", w.b_site["id"], {"q": w.b_site["code"]})
    await _never_listed(w, f"{API}/sites", w.b_site["id"], {"parent_id": w.b_site["id"]})


@probe("POST", f"{API}/sites")
async def _(w: World) -> None:
    response = await w.client.post(
        f"{API}/sites", json={"code": "A-SUB", "name": "A", "parent_id": w.b_site["id"]}, headers=w.a_admin
    )
    w.clean(response, 422)
    assert response.json()["errors"] == [{"field": "parent_id", "message": "no such site"}]


@probe("GET", f"{API}/sites/{{site_id}}")
async def _(w: World) -> None:
    await _not_found(w, "GET", f"{API}/sites/{w.b_site['id']}")


@probe("PATCH", f"{API}/sites/{{site_id}}")
async def _(w: World) -> None:
    await _not_found(w, "PATCH", f"{API}/sites/{w.b_site['id']}", {"name": "hijacked"})


@probe("DELETE", f"{API}/sites/{{site_id}}")
async def _(w: World) -> None:
    await _not_found(w, "DELETE", f"{API}/sites/{w.b_site['id']}")


# --- devices --------------------------------------------------------------------------------------------------


@probe("GET", f"{API}/devices")
async def _(w: World) -> None:
    await _never_listed(w, f"{API}/devices", w.b_device["id"])
    for params in (
        {"site_id": w.b_site["id"]},
        {"assigned_user_id": w.b_user["id"]},
        {"q": w.b_device["serial"]},
    ):
        await _never_listed(w, f"{API}/devices", w.b_device["id"], params)


@probe("POST", f"{API}/devices")
async def _(w: World) -> None:
    response = await w.client.post(
        f"{API}/devices",
        json={
            "kind": "laptop",
            "serial": f"A-{uuid.uuid4().hex[:8]}",
            "site_id": w.b_site["id"],
            "assigned_user_id": w.b_user["id"],
        },
        headers=w.a_admin,
    )
    w.clean(response, 422)
    assert {e["field"] for e in response.json()["errors"]} == {"site_id", "assigned_user_id"}


@probe("GET", f"{API}/devices/{{device_id}}")
async def _(w: World) -> None:
    await _not_found(w, "GET", f"{API}/devices/{w.b_device['id']}")


@probe("PATCH", f"{API}/devices/{{device_id}}")
async def _(w: World) -> None:
    await _not_found(w, "PATCH", f"{API}/devices/{w.b_device['id']}", {"notes": "hijacked"})


@probe("DELETE", f"{API}/devices/{{device_id}}")
async def _(w: World) -> None:
    await _not_found(w, "DELETE", f"{API}/devices/{w.b_device['id']}")


@probe("POST", f"{API}/devices/import")
async def _(w: World) -> None:
    body = (
        "kind,serial,site,assigned_user\n"
        f"laptop,{w.b_device['serial']},{w.b_site['code']},\n"
        f"laptop,A-{uuid.uuid4().hex[:8]},,{w.b_user['email']}\n"
    ).encode()
    response = await w.client.post(
        f"{API}/devices/import",
        content=body,
        params={"mode": "partial", "dry_run": "true"},
        headers={**w.a_admin, "content-type": "text/csv"},
    )
    w.clean(response, 200)
    rows = response.json()["rows"]
    assert rows[0]["errors"] == [{"field": "site", "message": f"unknown site code {w.b_site['code']}"}]
    assert rows[1]["errors"][0]["field"] == "assigned_user"


# --- integration clients ------------------------------------------------------------------------------------


@probe("GET", f"{API}/clients")
async def _(w: World) -> None:
    for params in ({}, {"include_revoked": "true"}):
        response = await w.client.get(f"{API}/clients", headers=w.a_admin, params=params)
        w.clean(response, 200)
        assert w.b_client_id not in response.text


@probe("POST", f"{API}/clients")
async def _(w: World) -> None:
    response = await w.client.post(f"{API}/clients", json={"name": "A's ERP"}, headers=w.a_admin)
    w.clean(response, 201)
    assert response.json()["tenant_id"] == str(w.a.id)


@probe("GET", f"{API}/clients/{{client_id}}")
async def _(w: World) -> None:
    for headers in (w.a_admin, w.a_agent_on_b):
        w.clean(await w.client.get(f"{API}/clients/{w.b_client_id}", headers=headers), 404, 403)
    w.clean(await w.client.get(f"{API}/clients/{w.b_client_id}", headers=w.a_admin), 404)


@probe("DELETE", f"{API}/clients/{{client_id}}")
async def _(w: World) -> None:
    w.clean(await w.client.delete(f"{API}/clients/{w.b_client_id}", headers=w.a_admin), 404)
    still = await w.client.get(f"{API}/clients/{w.b_client_id}", headers=w.b_admin)
    assert still.status_code == 200
    assert still.json()["revoked_at"] is None


# --- audit log ------------------------------------------------------------------------------------------------


@probe("GET", f"{API}/audit-events")
async def _(w: World) -> None:
    for params in (
        {},
        {"object_id": w.b_site["id"]},
        {"object_id": w.b_user["id"]},
        {"object_id": str(w.b.id)},
        {"actor": w.b_admin_actor},
        {"object_type": "device", "object_id": w.b_device["id"]},
    ):
        response = await w.client.get(
            f"{API}/audit-events", headers=w.a_admin, params={**params, "limit": 200}
        )
        w.clean(response, 200)
        items = response.json()["items"]
        assert {e["tenant_id"] for e in items} <= {str(w.a.id)}, params
        if params:
            assert items == [], params
    w.clean(await w.client.get(f"{API}/audit-events", headers={**w.a_admin, "MSP-Tenant": str(w.b.id)}), 404)


@probe("GET", f"{API}/audit-events/verify")
async def _(w: World) -> None:
    mine = await w.client.get(f"{API}/audit-events/verify", headers=w.a_admin)
    w.clean(mine, 200)
    assert mine.json()["chain"] == str(w.a.id)
    for headers in ({**w.a_admin, "MSP-Tenant": str(w.b.id)}, {**w.a_client, "MSP-Tenant": w.b.slug}):
        w.clean(await w.client.get(f"{API}/audit-events/verify", headers=headers), 404)


@probe("GET", f"{API}/platform/audit-events")
async def _(w: World) -> None:
    for headers in w.a_callers:
        w.clean(await w.client.get(f"{API}/platform/audit-events", headers=headers), 403)


@probe("GET", f"{API}/platform/audit-events/verify")
async def _(w: World) -> None:
    for headers in w.a_callers:
        w.clean(await w.client.get(f"{API}/platform/audit-events/verify", headers=headers), 403)


# --- staff (MSP only: tenant callers are refused outright) --------------------------------------------------


async def _staff_only(w: World, method: str, path: str, json: Any = None) -> None:
    for headers in w.a_callers:
        w.clean(await w.client.request(method, path, headers=headers, json=json), 403)


@probe("GET", f"{API}/staff")
async def _(w: World) -> None:
    await _staff_only(w, "GET", f"{API}/staff")


@probe("POST", f"{API}/staff")
async def _(w: World) -> None:
    await _staff_only(w, "POST", f"{API}/staff", {"email": "x@msp.example", "name": "X"})


@probe("GET", f"{API}/staff/{{staff_id}}")
async def _(w: World) -> None:
    await _staff_only(w, "GET", f"{API}/staff/{w.b_staff_id}")


@probe("PATCH", f"{API}/staff/{{staff_id}}")
async def _(w: World) -> None:
    await _staff_only(w, "PATCH", f"{API}/staff/{w.b_staff_id}", {"name": "x"})


@probe("GET", f"{API}/staff/{{staff_id}}/grants")
async def _(w: World) -> None:
    await _staff_only(w, "GET", f"{API}/staff/{w.b_staff_id}/grants")


@probe("POST", f"{API}/staff/{{staff_id}}/grants")
async def _(w: World) -> None:
    await _staff_only(w, "POST", f"{API}/staff/{w.b_staff_id}/grants", {"tenant_id": str(w.b.id)})


@probe("DELETE", f"{API}/staff/{{staff_id}}/grants/{{grant_tenant_id}}")
async def _(w: World) -> None:
    await _staff_only(w, "DELETE", f"{API}/staff/{w.b_staff_id}/grants/{w.b.id}")


# --- tenants --------------------------------------------------------------------------------------------------


@probe("GET", f"{API}/tenants")
async def _(w: World) -> None:
    for params in ({}, {"q": w.b.slug}, {"parent_id": str(w.b.id)}, {"status": "active"}):
        for headers in w.a_callers:
            response = await w.client.get(f"{API}/tenants", headers=headers, params=params)
            w.clean(response, 200)
            assert {t["id"] for t in response.json()["items"]} <= {str(w.a.id)}, params


@probe("POST", f"{API}/tenants")
async def _(w: World) -> None:
    body = {
        "slug": f"x-{uuid.uuid4().hex[:8]}",
        "name": "X",
        "ticket_prefix": "X" + uuid.uuid4().hex[:6].upper(),
        "timezone": "UTC",
        "parent_id": str(w.b.id),
    }
    for headers in w.a_callers:
        w.clean(await w.client.post(f"{API}/tenants", json=body, headers=headers), 403)


@probe("GET", f"{API}/tenants/{{tenant_id}}")
async def _(w: World) -> None:
    for tenant_id in (w.b.id, w.b_child["id"]):
        await _not_found(w, "GET", f"{API}/tenants/{tenant_id}", also_agent=False)


@probe("PATCH", f"{API}/tenants/{{tenant_id}}")
async def _(w: World) -> None:
    await _not_found(w, "PATCH", f"{API}/tenants/{w.b.id}", {"name": "hijacked"}, also_agent=False)


@probe("GET", f"{API}/tenants/{{tenant_id}}/children")
async def _(w: World) -> None:
    await _not_found(w, "GET", f"{API}/tenants/{w.b.id}/children", also_agent=False)


@probe("POST", f"{API}/tenants/{{tenant_id}}/suspend")
async def _(w: World) -> None:
    await _not_found(w, "POST", f"{API}/tenants/{w.b.id}/suspend", {"reason": "x"}, also_agent=False)


@probe("POST", f"{API}/tenants/{{tenant_id}}/reactivate")
async def _(w: World) -> None:
    await _not_found(w, "POST", f"{API}/tenants/{w.b.id}/reactivate", also_agent=False)


@probe("POST", f"{API}/tenants/{{tenant_id}}/offboard")
async def _(w: World) -> None:
    await _not_found(w, "POST", f"{API}/tenants/{w.b.id}/offboard", {"reason": "x"}, also_agent=False)


# --- the tests ------------------------------------------------------------------------------------------------


async def _world(factory: Factory, client: AsyncClient) -> World:
    a, b = await factory.tenant(), await factory.tenant(name="Tenant B Memorial")
    a_admin = await factory.headers(await factory.user(a, role="tenant_admin"))
    b_person = await factory.user(b, role="tenant_admin")
    b_admin = await factory.headers(b_person)
    site = (
        await client.post(f"{API}/sites", json={"code": "B-ONCOLOGY", "name": "B Oncology"}, headers=b_admin)
    ).json()
    user = (
        await client.post(
            f"{API}/users",
            json={
                "email": "chief.surgeon@tenant-b.example",
                "name": "B Chief Surgeon",
                "site_id": site["id"],
            },
            headers=b_admin,
        )
    ).json()
    device = (
        await client.post(
            f"{API}/devices",
            json={
                "kind": "clinical_device",
                "serial": "B-INFUSION-PUMP-7",
                "hostname": "b-pump-7",
                "site_id": site["id"],
                "assigned_user_id": user["id"],
            },
            headers=b_admin,
        )
    ).json()
    b_client_id, _ = await factory.integration_client(b, scopes="devices:read")
    child = await factory.tenant(parent=b, name="B Child Clinic")
    a_client_id, a_secret = await factory.integration_client(a)
    agent = await factory.staff(grants=[a])
    b_staff = await factory.staff(grants=[b])
    return World(
        client=client,
        a=a,
        b=b,
        a_admin=a_admin,
        a_client={"Authorization": f"Bearer {await factory.client_token(a_client_id, a_secret)}"},
        a_agent_on_b=await factory.headers(agent, tenant=b),
        b_admin=b_admin,
        b_child={"id": str(child.id)},
        b_site=site,
        b_user=user,
        b_device=device,
        b_client_id=b_client_id,
        b_admin_actor=f"user:{b_person.id}",
        b_staff_id=str(b_staff.id),
        secrets=[
            "B Chief Surgeon",
            "chief.surgeon@tenant-b.example",
            "B Oncology",
            "B-INFUSION-PUMP-7",
            "b-pump-7",
            "Tenant B Memorial",
            "B Child Clinic",
        ],  # (ids and slugs a caller names may be echoed in "not found")
    )


async def test_tenant_a_never_reaches_tenant_b(factory: Factory, client: AsyncClient) -> None:
    world = await _world(factory, client)
    for (method, path), run in sorted(PROBES.items()):
        try:
            await run(world)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path}: {exc}") from exc
    # B's objects are untouched.
    after = await client.get(f"{API}/users/{world.b_user['id']}", headers=world.b_admin)
    assert (after.json()["name"], after.json()["active"]) == ("B Chief Surgeon", True)
    device = await client.get(f"{API}/devices/{world.b_device['id']}", headers=world.b_admin)
    assert device.json()["status"] == "active"
    assert (await client.get(f"{API}/sites/{world.b_site['id']}", headers=world.b_admin)).status_code == 200


def test_the_matrix_covers_every_endpoint_of_these_domains(app: Litestar) -> None:
    document = app.openapi_schema.to_schema()
    routes = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if path.startswith(DOMAINS)
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }
    missing = sorted(routes - set(PROBES))
    assert not missing, f"endpoints without a cross-tenant probe in this file: {missing}"
    stale = sorted(set(PROBES) - routes)
    assert not stale, f"probes of endpoints that no longer exist: {stale}"
