"""Seeing a user's invitations and withdrawing one whose link went astray."""

from __future__ import annotations

from httpx import AsyncClient
from tests.conftest import Factory
from tests.identity.common import ACCEPT, USERS, tenant_admin

PASSWORD = "correct horse battery staple 42"


async def test_an_administrator_sees_and_revokes_invitations(factory: Factory, client: AsyncClient) -> None:
    tenant, admin = await tenant_admin(factory)
    nurse = await factory.user(tenant)
    path = f"{USERS}/{nurse.id}/invitations"
    first = (await client.post(path, headers=admin)).json()
    second = (await client.post(path, headers=admin)).json()  # a resend: the first link stops working

    listed = (await client.get(path, headers=admin)).json()
    assert [(i["id"], i["status"]) for i in listed["items"]] == [
        (second["id"], "pending"),
        (first["id"], "revoked"),
    ]
    assert "token" not in listed["items"][0]
    assert listed["items"][0]["expires_at"] == second["expires_at"]
    paged = (await client.get(path, headers=admin, params={"limit": 1})).json()
    assert [i["id"] for i in paged["items"]] == [second["id"]]
    rest = (await client.get(path, headers=admin, params={"limit": 1, "cursor": paged["next_cursor"]})).json()
    assert ([i["id"] for i in rest["items"]], rest["next_cursor"]) == ([first["id"]], None)

    # The second link went to the wrong address: revoke it; the link is dead at once.
    revoked = await client.post(f"{path}/{second['id']}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["status"], revoked.json()["revoked_at"] is not None) == ("revoked", True)
    refused = await client.post(ACCEPT, json={"token": second["token"], "password": PASSWORD})
    assert (refused.status_code, refused.json()["reason"]) == (400, "revoked")
    again = await client.post(f"{path}/{second['id']}/revoke", headers=admin)
    assert again.json() == revoked.json(), "revoking twice changes nothing"

    third = (await client.post(path, headers=admin)).json()
    assert (
        await client.post(ACCEPT, json={"token": third["token"], "password": PASSWORD})
    ).status_code == 200
    used = await client.post(f"{path}/{third['id']}/revoke", headers=admin)
    assert used.status_code == 409
    assert used.headers["content-type"] == "application/problem+json"
    assert "deactivate the user" in used.json()["detail"]
    statuses = [i["status"] for i in (await client.get(path, headers=admin)).json()["items"]]
    assert statuses == ["used", "revoked", "revoked"]

    audit = (await client.get("/api/v1/audit-events", headers=admin, params={"limit": 200})).json()["items"]
    actions = [e["action"] for e in audit if e["object_id"] == second["id"]]
    assert actions == ["user_invitation.revoked", "user_invitation.created"]  # newest first


async def test_an_invitation_is_only_found_under_its_own_user(factory: Factory, client: AsyncClient) -> None:
    tenant, admin = await tenant_admin(factory)
    nurse, porter = await factory.user(tenant), await factory.user(tenant)
    invitation = (await client.post(f"{USERS}/{nurse.id}/invitations", headers=admin)).json()
    wrong = await client.post(f"{USERS}/{porter.id}/invitations/{invitation['id']}/revoke", headers=admin)
    assert wrong.status_code == 404
    assert wrong.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"{USERS}/{porter.id}/invitations", headers=admin)).json()["items"] == []
    listed = (await client.get(f"{USERS}/{nurse.id}/invitations", headers=admin)).json()["items"]
    assert [i["status"] for i in listed] == ["pending"]


async def test_a_plain_user_cannot_list_or_revoke_invitations(factory: Factory, client: AsyncClient) -> None:
    tenant, admin = await tenant_admin(factory)
    nurse = await factory.user(tenant)
    invitation = (await client.post(f"{USERS}/{nurse.id}/invitations", headers=admin)).json()
    caller = await factory.headers(await factory.user(tenant))
    listing = await client.get(f"{USERS}/{nurse.id}/invitations", headers=caller)
    revoking = await client.post(f"{USERS}/{nurse.id}/invitations/{invitation['id']}/revoke", headers=caller)
    assert (listing.status_code, revoking.status_code) == (403, 403)
    listed = (await client.get(f"{USERS}/{nurse.id}/invitations", headers=admin)).json()["items"]
    assert [i["status"] for i in listed] == ["pending"]
