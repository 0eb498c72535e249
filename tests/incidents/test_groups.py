"""Assignment groups: MSP teams managed by MSP admins; incidents name them by id, and the assignee must be
granted the incident's tenant and belong to its group."""

from __future__ import annotations

import uuid
from typing import Any

from httpx import AsyncClient
from tests.conftest import Factory
from tests.support.desk import Desk

GROUPS = "/api/v1/assignment-groups"


async def make(desk: Desk, name: str, **fields: Any) -> Any:
    return await desk.client.post(
        GROUPS, json={"name": name, "tier": 1, **fields}, headers=await desk.as_msp_admin(tenant=False)
    )


class TestManagement:
    async def test_crud(self, desk: Desk) -> None:
        headers = await desk.as_msp_admin(tenant=False)
        name = f"Network L3 {uuid.uuid4().hex[:6]}"
        created = await make(desk, name, tier=3, description="Switches and Wi-Fi")
        assert created.status_code == 201, created.text
        group = created.json()
        assert (group["tier"], group["active"], group["tenant_ids"]) == (3, True, None)
        assert (await make(desk, name.upper())).status_code == 409, "names are unique whatever their case"
        url = f"{GROUPS}/{group['id']}"
        renamed = await desk.client.patch(
            url, json={"name": f"{name} (renamed)", "tenant_ids": [str(desk.tenant.id)]}, headers=headers
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["tenant_ids"] == [str(desk.tenant.id)]
        assert (await desk.client.get(url, headers=headers)).json()["name"] == f"{name} (renamed)"
        assert (await desk.client.delete(url, headers=headers)).status_code == 204
        assert (await desk.client.get(url, headers=headers)).status_code == 404

    async def test_bad_input(self, desk: Desk) -> None:
        for body, field in (
            ({"name": "  ", "tier": 1}, "name"),
            ({"name": "x", "tier": 4}, "tier"),
            ({"name": "x", "tier": 1, "tenant_ids": [str(uuid.uuid4())]}, "tenant_ids[0]"),
            ({"name": "x" * 81, "tier": 1}, "name"),
            ({"name": "x", "tier": 1, "owner": "me"}, "owner"),
        ):
            response = await desk.client.post(
                GROUPS, json=body, headers=await desk.as_msp_admin(tenant=False)
            )
            assert response.status_code == 422, (body, response.text)
            assert field in response.text

    async def test_a_group_in_use_is_deactivated_not_deleted(self, desk: Desk) -> None:
        group = await desk.group()
        incident = await desk.raise_incident()
        await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"assignment_group_id": group["id"]},
            headers=await desk.as_agent(),
        )
        headers = await desk.as_msp_admin(tenant=False)
        refused = await desk.client.delete(f"{GROUPS}/{group['id']}", headers=headers)
        assert refused.status_code == 409
        assert "deactivate" in refused.json()["detail"]
        off = await desk.client.patch(f"{GROUPS}/{group['id']}", json={"active": False}, headers=headers)
        assert off.json()["active"] is False
        other = await desk.raise_incident()
        response = await desk.client.patch(
            f"/api/v1/incidents/{other['id']}",
            json={"assignment_group_id": group["id"]},
            headers=await desk.as_agent(),
        )
        assert response.status_code == 422

    async def test_lists_are_paginated(self, desk: Desk) -> None:
        tag = uuid.uuid4().hex[:8]
        for i in range(5):
            assert (await make(desk, f"Pager {tag} {i}")).status_code == 201
        headers = await desk.as_agent()
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2, "q": tag}
        while True:
            body = (await desk.client.get(GROUPS, params=params, headers=headers)).json()
            seen += [g["name"] for g in body["items"]]
            if not body["next_cursor"]:
                break
            params["cursor"] = body["next_cursor"]
        assert seen == [f"Pager {tag} {i}" for i in range(5)]

    async def test_members(self, desk: Desk, factory: Factory) -> None:
        group = await desk.group(members=[desk.agent])
        headers = await desk.as_msp_admin(tenant=False)
        url = f"{GROUPS}/{group['id']}/members"
        again = await desk.client.post(url, json={"staff_id": str(desk.agent.id)}, headers=headers)
        assert again.status_code == 409
        unknown = await desk.client.post(url, json={"staff_id": str(uuid.uuid4())}, headers=headers)
        assert unknown.status_code == 422
        added = await desk.client.post(url, json={"staff_id": str(desk.l3.id)}, headers=headers)
        assert added.status_code == 201
        first = (await desk.client.get(url, params={"limit": 1}, headers=await desk.as_agent())).json()
        second = (
            await desk.client.get(url, params={"limit": 1, "cursor": first["next_cursor"]}, headers=headers)
        ).json()
        assert {m["staff_id"] for m in first["items"] + second["items"]} == {
            str(desk.agent.id),
            str(desk.l3.id),
        }
        mine = (await desk.client.get(GROUPS, params={"member": str(desk.l3.id)}, headers=headers)).json()
        assert [g["id"] for g in mine["items"]] == [group["id"]]
        assert (await desk.client.delete(f"{url}/{desk.l3.id}", headers=headers)).status_code == 204
        assert (await desk.client.delete(f"{url}/{desk.l3.id}", headers=headers)).status_code == 404

    async def test_only_msp_admins_manage_and_only_staff_read(self, desk: Desk, client: AsyncClient) -> None:
        group = await desk.group()
        url = f"{GROUPS}/{group['id']}"
        agent = await desk.as_agent()
        assert (await client.get(url, headers=agent)).status_code == 200
        for method, path, body in (
            ("POST", GROUPS, {"name": "x", "tier": 1}),
            ("PATCH", url, {"name": "hijacked"}),
            ("DELETE", url, None),
            ("POST", f"{url}/members", {"staff_id": str(desk.agent.id)}),
        ):
            response = await client.request(method, path, json=body, headers=agent)
            assert response.status_code == 403, (method, path)
        for headers in (await desk.as_admin(), await desk.as_user()):
            for path in (GROUPS, url, f"{url}/members"):
                assert (await client.get(path, headers=headers)).status_code == 403
            assert (
                await client.post(GROUPS, json={"name": "x", "tier": 1}, headers=headers)
            ).status_code == 403
        assert (await client.get(url, headers=agent)).json()["name"] == group["name"]


class TestAssignment:
    async def patch(self, desk: Desk, incident: dict[str, Any], body: dict[str, Any]) -> Any:
        return await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}", json=body, headers=await desk.as_agent()
        )

    async def test_unknown_or_foreign_groups_are_refused(self, desk: Desk, factory: Factory) -> None:
        incident = await desk.raise_incident()
        elsewhere = (
            await make(
                desk, f"Elsewhere {uuid.uuid4().hex[:6]}", tenant_ids=[str((await factory.tenant()).id)]
            )
        ).json()
        for group_id, message in (
            (str(uuid.uuid4()), "no such assignment group"),
            (elsewhere["id"], "does not work"),
        ):
            response = await self.patch(desk, incident, {"assignment_group_id": group_id})
            assert response.status_code == 422, response.text
            assert message in response.json()["errors"][0]["message"]
        created = await desk.client.post(
            "/api/v1/incidents",
            json={"title": "x", "assignment_group_id": str(uuid.uuid4())},
            headers=await desk.as_agent(),
        )
        assert created.status_code == 422
        assert (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=await desk.as_agent())
        ).json()["assignment_group_id"] is None

    async def test_the_assignee_must_be_granted_the_tenant(self, desk: Desk, factory: Factory) -> None:
        outsider = await factory.staff(grants=[await factory.tenant()])
        incident = await desk.raise_incident()
        response = await self.patch(desk, incident, {"assignee_id": str(outsider.id)})
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {"field": "assignee_id", "message": f"{outsider.email} is not granted this tenant"}
        ]
        admin = await factory.staff(role="msp_admin", tier=None)
        assert (await self.patch(desk, incident, {"assignee_id": str(admin.id)})).status_code == 200

    async def test_the_assignee_must_belong_to_the_group(self, desk: Desk) -> None:
        l1 = await desk.group("L1", members=[desk.agent])
        l3 = await desk.group("L3", tier=3, members=[desk.l3])
        incident = await desk.raise_incident()
        wrong = await self.patch(
            desk, incident, {"assignment_group_id": l1["id"], "assignee_id": str(desk.l3.id)}
        )
        assert wrong.status_code == 422
        assert wrong.json()["errors"][0]["message"] == f"is not a member of {l1['name']}"
        ok = await self.patch(
            desk, incident, {"assignment_group_id": l1["id"], "assignee_id": str(desk.agent.id)}
        )
        assert ok.status_code == 200
        moved = await self.patch(desk, incident, {"assignment_group_id": l3["id"]})
        assert moved.status_code == 422, "the current assignee is not in the new group"
        both = await self.patch(
            desk, incident, {"assignment_group_id": l3["id"], "assignee_id": str(desk.l3.id)}
        )
        assert both.status_code == 200
        assert (both.json()["assignment_group"], both.json()["assignee_id"]) == (l3["name"], str(desk.l3.id))

    async def test_the_group_name_is_still_accepted(self, desk: Desk) -> None:
        group = await desk.group()
        incident = await desk.raise_incident()
        by_name = await self.patch(desk, incident, {"assignment_group": group["name"].lower()})
        assert by_name.status_code == 200, by_name.text
        assert by_name.json()["assignment_group_id"] == group["id"]
        unknown = await self.patch(desk, incident, {"assignment_group": "Totally Made Up Group 123"})
        assert unknown.status_code == 422
        cleared = await self.patch(desk, incident, {"assignment_group": None})
        assert cleared.json()["assignment_group_id"] is None

    async def test_queue_filter_by_group(self, desk: Desk) -> None:
        group = await desk.group()
        mine = await desk.raise_incident()
        await desk.raise_incident()
        await self.patch(desk, mine, {"assignment_group_id": group["id"]})
        listed = await desk.client.get(
            "/api/v1/incidents", params={"assignment_group_id": group["id"]}, headers=await desk.as_agent()
        )
        assert [i["id"] for i in listed.json()["items"]] == [mine["id"]]
        bad = await desk.client.get(
            "/api/v1/incidents", params={"assignment_group_id": "L1"}, headers=await desk.as_agent()
        )
        assert bad.status_code in (400, 422)
