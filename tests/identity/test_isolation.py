"""The cross-tenant matrix for /api/v1/users, invitations, imports and accept-invitation."""

from __future__ import annotations

from httpx import AsyncClient
from tests.conftest import Factory
from tests.identity.common import ACCEPT, USERS, tenant_admin
from tests.support.isolation import all_ids, assert_isolated

PASSWORD = "a long enough new passphrase"


async def test_cross_tenant_matrix(factory: Factory, client: AsyncClient) -> None:
    a, headers_a = await tenant_admin(factory)
    b, headers_b = await tenant_admin(factory)
    site_b = await client.post("/api/v1/sites", json={"code": "ONCOLOGY-B", "name": "B"}, headers=headers_b)
    b_user = (
        await client.post(
            USERS,
            json={
                "email": "chief.surgeon@tenant-b.example",
                "name": "Tenant B Chief Surgeon",
                "site_id": site_b.json()["id"],
            },
            headers=headers_b,
        )
    ).json()
    secrets = ["Tenant B Chief Surgeon", "chief.surgeon@tenant-b.example", "ONCOLOGY-B"]
    path = f"{USERS}/{b_user['id']}"
    await assert_isolated(
        client,
        headers_a,
        foreign_paths=[path],
        patch_body={"name": "hijacked", "role": "tenant_admin"},
        deletable=False,
        lists=[USERS],
        foreign_ids=[b_user["id"]],
        secrets=secrets,
    )
    for action in ("deactivate", "reactivate", "invitations"):
        response = await client.post(f"{path}/{action}", headers=headers_a)
        assert response.status_code == 404, (action, response.text)
        assert not any(s in response.text for s in secrets)
    for params in ({"q": "surgeon"}, {"site_id": site_b.json()["id"]}, {"q": "tenant-b"}):
        assert not (await client.get(USERS, headers=headers_a, params=params)).json()["items"]

    # A's import naming B's site code: unknown site. Naming B's user's email: a new user of A.
    imported = await client.post(
        f"{USERS}/import",
        content=(
            b"email,name,site\n"
            b"someone@tenant-a.example,Someone,ONCOLOGY-B\n"
            b"chief.surgeon@tenant-b.example,Impostor,\n"
        ),
        params={"mode": "partial"},
        headers={**headers_a, "content-type": "text/csv"},
    )
    assert imported.status_code == 200, imported.text
    rows = imported.json()["rows"]
    assert rows[0]["errors"] == [{"field": "site", "message": "no such site code ONCOLOGY-B"}]
    assert rows[1]["status"] == "created"
    assert rows[1]["id"] != b_user["id"]

    # B's user and the ones in A stay apart.
    after = (await client.get(path, headers=headers_b)).json()
    assert (after["name"], after["active"], after["role"]) == ("Tenant B Chief Surgeon", True, "tenant_user")
    assert b_user["id"] in await all_ids(client, USERS, headers_b)
    assert rows[1]["id"] not in await all_ids(client, USERS, headers_b)
    a_users = (await client.get(USERS, headers=headers_a, params={"q": "chief.surgeon"})).json()["items"]
    assert [u["tenant_id"] for u in a_users] == [str(a.id)]
    assert str(b.id) != str(a.id)


async def test_invitations_do_not_cross_tenants(factory: Factory, client: AsyncClient) -> None:
    a, headers_a = await tenant_admin(factory)
    b, headers_b = await tenant_admin(factory)
    a_user = await factory.user(a)
    b_user = await factory.user(b)
    token_a = (await client.post(f"{USERS}/{a_user.id}/invitations", headers=headers_a)).json()["token"]
    token_b = (await client.post(f"{USERS}/{b_user.id}/invitations", headers=headers_b)).json()["token"]
    secret_a, secret_b = token_a[41:], token_b[41:]
    assert token_a[8:40] == a.id.hex
    # A's secret presented under B's tenant (and the other way round) finds nothing.
    for forged in (f"msp_inv_{b.id.hex}_{secret_a}", f"msp_inv_{a.id.hex}_{secret_b}"):
        response = await client.post(ACCEPT, json={"token": forged, "password": PASSWORD})
        assert response.status_code == 400, response.text
        assert response.json()["reason"] == "invalid"
        assert b.slug not in response.text
        assert a.slug not in response.text
    accepted = await client.post(ACCEPT, json={"token": token_a, "password": PASSWORD})
    assert accepted.json()["tenant"] == a.slug
    # The password belongs to A's user only: signing in to B with it fails.
    wrong_tenant = await client.post(
        "/api/v1/auth/sign-in", json={"email": a_user.email, "password": PASSWORD, "tenant": b.slug}
    )
    assert wrong_tenant.status_code == 401
    still_b = await client.post(ACCEPT, json={"token": token_b, "password": PASSWORD})
    assert still_b.status_code == 200
    assert still_b.json()["tenant"] == b.slug


async def test_staff_and_clients_are_held_to_their_tenants(factory: Factory, client: AsyncClient) -> None:
    a = await factory.tenant()
    b, headers_b = await tenant_admin(factory)
    a_user = await factory.user(a)
    b_user = await factory.user(b)
    agent = await factory.staff(role="msp_agent", grants=[a])
    agent_a = await factory.headers(agent, tenant=a)
    assert (await client.get(f"{USERS}/{a_user.id}", headers=agent_a)).status_code == 200
    assert (await client.get(f"{USERS}/{b_user.id}", headers=agent_a)).status_code == 404
    assert (await client.get(USERS, headers=await factory.headers(agent, tenant=b))).status_code == 404
    # Without MSP-Tenant an agent reads across the tenants it is granted, and only those.
    seen = await all_ids(client, USERS, await factory.headers(agent))
    assert str(a_user.id) in seen
    assert str(b_user.id) not in seen

    client_id, secret = await factory.integration_client(a, scopes="users:read users:write")
    token = await factory.client_token(client_id, secret)
    as_client = {"Authorization": f"Bearer {token}"}
    created = await client.post(USERS, json={"email": "hr-sync@x.org", "name": "HR"}, headers=as_client)
    assert created.status_code == 201, created.text
    assert created.json()["tenant_id"] == str(a.id)
    assert (await client.get(f"{USERS}/{b_user.id}", headers=as_client)).status_code == 404
    assert (await client.post(f"{USERS}/{b_user.id}/deactivate", headers=as_client)).status_code == 404
    naming_b = await client.get(USERS, headers={**as_client, "MSP-Tenant": str(b.id)})
    assert naming_b.status_code == 404
    assert (await client.get(f"{USERS}/{b_user.id}", headers=headers_b)).json()["active"] is True
