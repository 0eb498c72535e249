"""Incidents under pressure: an append-only event log, internal notes that leave no trace for the tenant,
merges that keep the duplicate's caller in the loop and never deadlock, paginated history, bad query input
and concurrent writes answered with 4xx, the priority matrix across tenants."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest
from tests.conftest import Backend, Factory
from tests.support.desk import Desk

MATRIX = {"1": {"1": 1, "2": 1, "3": 2}, "2": {"1": 2, "2": 2, "3": 3}, "3": {"1": 3, "2": 3, "3": 4}}


async def get(desk: Desk, incident: dict[str, Any], headers: dict[str, str]) -> Any:
    return await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=headers)


async def comment(desk: Desk, incident: dict[str, Any], headers: dict[str, str], **body: Any) -> Any:
    return await desk.client.post(
        f"/api/v1/incidents/{incident['id']}/comments", json={"body": "hello", **body}, headers=headers
    )


class TestEventLog:
    async def test_the_app_role_cannot_rewrite_history(self, backend: Backend, desk: Desk) -> None:
        if not backend.is_postgres:
            pytest.skip("table privileges are PostgreSQL's")
        incident = await desk.raise_incident()
        dsn = backend.settings.effective_database_url.replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(dsn)

        async def as_app(statement: str, *args: Any) -> Any:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('app.tenant_id', $1, true), set_config('app.tenant_ids', $1, true)",
                    str(desk.tenant.id),
                )
                return await conn.fetchval(statement, *args)

        try:
            count = await as_app(
                "SELECT count(*) FROM incident_events WHERE incident_id = $1", uuid.UUID(incident["id"])
            )
            assert count == 1, "the app role reads the log"
            for statement in (
                "UPDATE incident_events SET occurred_at = occurred_at - interval '1 day'",
                "DELETE FROM incident_events",
                "TRUNCATE incident_events",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await as_app(statement)
        finally:
            await conn.close()
        assert [e["type"] for e in await desk.history(incident)] == ["created"]

    async def test_history_and_comments_are_paginated(self, desk: Desk) -> None:
        incident = await desk.raise_incident()
        other = await desk.raise_incident()
        headers = await desk.as_agent()
        for i in range(7):
            assert (await comment(desk, incident, headers, body=f"note {i}")).status_code == 201
        for suffix, expected in (("comments", [f"note {i}" for i in range(7)]), ("events", None)):
            url = f"/api/v1/incidents/{incident['id']}/{suffix}"
            seen: list[Any] = []
            params: dict[str, Any] = {"limit": 3}
            pages = 0
            while True:
                body = (await desk.client.get(url, params=params, headers=headers)).json()
                seen += body["items"]
                pages += 1
                if not body["next_cursor"]:
                    break
                params["cursor"] = body["next_cursor"]
                foreign = await desk.client.get(
                    f"/api/v1/incidents/{other['id']}/{suffix}", params=params, headers=headers
                )
                assert foreign.status_code == 400, "a cursor belongs to one incident's list"
            assert len({item["id"] for item in seen}) == len(seen) > 3
            assert pages > 1
            if expected is not None:
                assert [c["body"] for c in seen] == expected
            else:
                assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
        too_big = await desk.client.get(
            f"/api/v1/incidents/{incident['id']}/events", params={"limit": 1000}, headers=headers
        )
        assert too_big.status_code in (400, 422)


class TestInternalNotes:
    async def test_a_note_changes_nothing_the_tenant_sees(self, desk: Desk) -> None:
        incident = await desk.raise_incident(await desk.as_user())
        admin = await desk.as_admin()
        before = await get(desk, incident, admin)
        note = await comment(
            desk, incident, await desk.as_agent(), body="vendor case 4711", visibility="internal"
        )
        assert note.status_code == 201
        after = await get(desk, incident, admin)
        assert after.headers["etag"] == before.headers["etag"]
        assert (after.json()["version"], after.json()["updated_at"]) == (
            before.json()["version"],
            before.json()["updated_at"],
        )
        # Staff's optimistic concurrency is about the incident's fields, which the note did not change.
        patched = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"title": "Printer on 3 West is jammed again"},
            headers={**await desk.as_agent(), "If-Match": before.headers["etag"]},
        )
        assert patched.status_code == 200
        public = await comment(desk, incident, await desk.as_agent(), body="On our way")
        assert public.status_code == 201
        assert (await get(desk, incident, admin)).json()["version"] == patched.json()["version"] + 1

    async def test_the_audit_log_keeps_notes_from_the_tenant(self, desk: Desk) -> None:
        incident = await desk.raise_incident()
        note = await comment(desk, incident, await desk.as_agent(), body="x", visibility="internal")
        tenant_view = await desk.client.get(
            "/api/v1/audit-events", params={"limit": 200}, headers=await desk.as_admin()
        )
        assert tenant_view.status_code == 200
        assert note.json()["id"] not in tenant_view.text
        staff_view = await desk.client.get(
            "/api/v1/audit-events", params={"limit": 200}, headers=await desk.as_msp_admin()
        )
        mine = [e for e in staff_view.json()["items"] if e["object_id"] == note.json()["id"]]
        assert [(e["action"], e["internal"]) for e in mine] == [("incident_comment.created", True)]


class TestMerge:
    async def merge(self, desk: Desk, target: dict[str, Any], *sources: dict[str, Any]) -> Any:
        return await desk.client.post(
            f"/api/v1/incidents/{target['id']}/merge",
            json={"source_ids": [s["id"] for s in sources]},
            headers=await desk.as_agent(),
        )

    async def test_the_duplicates_caller_follows_it(self, desk: Desk, factory: Factory) -> None:
        colleague = await factory.user(desk.tenant)
        target = await desk.raise_incident(await factory.headers(colleague), title="Wi-Fi down in ED")
        source = await desk.raise_incident(await desk.as_user(), title="No wifi")
        user = await desk.as_user()
        assert (await get(desk, target, user)).status_code == 404
        assert (await self.merge(desk, target, source)).status_code == 200
        merged = (await get(desk, source, user)).json()
        assert merged["merged_into_id"] == target["id"]
        assert (await get(desk, target, user)).status_code == 200
        listed = (await desk.client.get("/api/v1/incidents", headers=user)).json()["items"]
        assert target["id"] in {i["id"] for i in listed}
        await comment(desk, target, await desk.as_agent(), body="Access point replaced")
        await comment(desk, target, await desk.as_agent(), body="SECRET", visibility="internal")
        seen = await desk.client.get(f"/api/v1/incidents/{target['id']}/comments", headers=user)
        assert [c["body"] for c in seen.json()["items"]] == ["Access point replaced"]
        assert (await comment(desk, target, user, body="Works again, thanks")).status_code == 201
        # Following is not owning: the colleague's incident stays theirs to change.
        assert (await desk.move(target, "cancelled", headers=user)).status_code == 403
        patched = await desk.client.patch(
            f"/api/v1/incidents/{target['id']}", json={"title": "mine"}, headers=user
        )
        assert patched.status_code == 403
        for headers in (user, await desk.as_agent()):
            refused = await comment(desk, source, headers)
            assert refused.status_code == 409
            body = refused.json()
            assert body["type"] == "/problems/incident-merged"
            assert (body["merged_into_id"], body["merged_into_key"]) == (target["id"], target["key"])
        undone = await desk.client.post(
            f"/api/v1/incidents/{source['id']}/unmerge", headers=await desk.as_agent()
        )
        assert undone.status_code == 200
        assert (await get(desk, target, user)).status_code == 404

    async def test_unmerge_restores_the_hold(self, desk: Desk) -> None:
        target = await desk.raise_incident()
        source = await desk.raise_incident()
        await desk.move(source, "on_hold", on_hold_reason="awaiting_vendor")
        await self.merge(desk, target, source)
        merged = (await get(desk, source, await desk.as_agent())).json()
        assert (merged["state"], merged["on_hold_reason"]) == ("cancelled", None)
        undone = await desk.client.post(
            f"/api/v1/incidents/{source['id']}/unmerge", headers=await desk.as_agent()
        )
        assert (undone.json()["state"], undone.json()["on_hold_reason"]) == ("on_hold", "awaiting_vendor")
        last = [e for e in await desk.history(source) if e["type"] == "state_changed"][-1]
        assert last["data"]["on_hold_reason"] == "awaiting_vendor", "the SLA clock reads the reason here"

    async def test_crossed_merges_never_fail(self, desk: Desk) -> None:
        pairs = [(await desk.raise_incident(), await desk.raise_incident()) for _ in range(6)]
        results = await asyncio.gather(
            *(call for a, b in pairs for call in (self.merge(desk, a, b), self.merge(desk, b, a)))
        )
        statuses = Counter(r.status_code for r in results)
        assert set(statuses) <= {200, 409, 422}, statuses
        headers = await desk.as_agent()
        for a, b in pairs:
            a_now, b_now = (await get(desk, a, headers)).json(), (await get(desk, b, headers)).json()
            merged = [i for i in (a_now, b_now) if i["merged_into_id"]]
            assert len(merged) == 1, "exactly one of the two was merged into the other"
            survivor = b_now if merged[0] is a_now else a_now
            assert (merged[0]["merged_into_id"], survivor["merged_into_id"]) == (survivor["id"], None)
            assert survivor["state"] != "cancelled"


class TestLifecycle:
    async def test_reopen_clears_the_resolution(self, desk: Desk) -> None:
        incident = await desk.raise_incident(await desk.as_user())
        await desk.move(incident, "resolved", resolution_notes="Rebooted router")
        reopened = await desk.move(incident, "in_progress", headers=await desk.as_user())
        body = reopened.json()
        assert (body["resolution_code"], body["resolution_notes"], body["resolved_at"]) == (None, None, None)
        event = [e for e in await desk.history(incident) if e["type"] == "reopened"][-1]
        assert event["data"]["previous_resolution_notes"] == "Rebooted router"
        assert event["data"]["previous_resolution_code"] == "solved_permanently"


class TestBadQueries:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"channel": "bogus"}, "channel"),
            ({"state": "bogus"}, "state"),
            ({"priority": 9}, "priority"),
            ({"priority": 0}, "priority"),
            ({"tier": 4}, "tier"),
            ({"opened_after": "2026-01-01T00:00:00"}, "opened_after"),
            ({"opened_before": "0001-01-01T00:00:00Z"}, "opened_before"),
            ({"opened_after": "not a date"}, "opened_after"),
            ({"assignment_group_id": "L1"}, "assignment_group_id"),
            ({"sort": "-priority"}, "sort"),
        ],
    )
    async def test_refused_with_a_4xx(self, desk: Desk, params: dict[str, Any], field: str) -> None:
        response = await desk.client.get("/api/v1/incidents", params=params, headers=await desk.as_agent())
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in response.text

    async def test_aware_bounds_still_work(self, desk: Desk) -> None:
        incident = await desk.raise_incident()
        found = await desk.client.get(
            "/api/v1/incidents",
            params={
                "opened_after": "2000-01-01T00:00:00+02:00",
                "channel": "portal",
                "priority": 5,
                "tier": 1,
            },
            headers=await desk.as_agent(),
        )
        assert [i["id"] for i in found.json()["items"]] == [incident["id"]]


class TestConcurrentWrites:
    async def test_matrix_publications_each_get_a_version(self, desk: Desk, backend: Backend) -> None:
        headers = await desk.as_msp_admin()
        responses = await asyncio.gather(
            *(
                desk.client.put("/api/v1/priority-matrix", json={"cells": MATRIX}, headers=headers)
                for _ in range(8)
            )
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 409}, statuses
        versions = sorted(r.json()["version"] for r in responses if r.status_code == 200)
        assert versions == list(range(1, len(versions) + 1))
        if backend.is_postgres:
            assert statuses == [200] * 8, "publications of one tenant queue up"

    async def test_one_external_reference_one_incident(self, desk: Desk) -> None:
        headers = await desk.as_agent()
        body = {"title": "From Autotask", "external_source": "autotask", "external_id": "T2024.0042"}
        responses = await asyncio.gather(
            *(desk.client.post("/api/v1/incidents", json=body, headers=headers) for _ in range(12))
        )
        assert sorted(r.status_code for r in responses) == [201] + [409] * 11
        listed = (await desk.client.get("/api/v1/incidents", headers=headers)).json()["items"]
        assert len(listed) == 1
        created = await desk.raise_incident()
        assert created["number"] == 2, "numbers stay gap-free"


async def test_priority_matrix_cross_tenant(desk: Desk, factory: Factory) -> None:
    other = await factory.tenant()
    other_admin = await factory.user(other, role="tenant_admin")
    msp_admin = await factory.staff(role="msp_admin", tier=None)
    published = await desk.client.put(
        "/api/v1/priority-matrix",
        json={"cells": MATRIX, "vip_raise": 1},
        headers=await factory.headers(msp_admin, tenant=other),
    )
    assert published.status_code == 200
    for headers in (await desk.as_admin(), await desk.as_user(), await desk.as_agent()):
        current = (await desk.client.get("/api/v1/priority-matrix", headers=headers)).json()
        assert (current["version"], current["vip_raise"]) == (0, 0)
        assert (await desk.client.get("/api/v1/priority-matrix/versions", headers=headers)).json() == []
    # Naming the other tenant: an agent not granted it gets a 404, the tenant's own callers too.
    for headers in (await desk.as_agent(), await desk.as_admin()):
        for method, path in (
            ("GET", "/api/v1/priority-matrix"),
            ("GET", "/api/v1/priority-matrix/versions"),
            ("PUT", "/api/v1/priority-matrix"),
        ):
            response = await desk.client.request(
                method,
                path,
                json={"cells": MATRIX} if method == "PUT" else None,
                headers={**headers, "MSP-Tenant": str(other.id)},
            )
            assert response.status_code == 404, (method, path, response.text)
    for headers in (await desk.as_admin(), await factory.headers(other_admin), await desk.as_agent()):
        refused = await desk.client.put("/api/v1/priority-matrix", json={"cells": MATRIX}, headers=headers)
        assert refused.status_code == 403
    theirs = (
        await desk.client.get("/api/v1/priority-matrix", headers=await factory.headers(other_admin))
    ).json()
    assert (theirs["version"], theirs["vip_raise"]) == (1, 1)
