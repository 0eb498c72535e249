"""Incidents: numbering, priority, roles, history, comments and internal notes, merge, queues, search."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from tests.conftest import Factory
from tests.support.desk import Desk
from tests.support.isolation import all_ids, assert_isolated
from tests.test_unit_of_work import FailNextCommit

from msp_platform.db.engine import Database
from msp_platform.kit import events as bus
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.user import User
from msp_platform.worker.context import JobContext
from msp_platform.worker.registry import actor


@actor("tests.incident_listener", max_retries=0)
async def incident_listener(job: JobContext, **_: Any) -> None:
    """A bus subscriber for the tests; the tests only look at what was queued for it."""


class TestNumbering:
    async def test_keys_use_the_tenant_prefix(self, desk: Desk) -> None:
        first = await desk.raise_incident()
        second = await desk.raise_incident()
        prefix = desk.tenant.ticket_prefix
        assert (first["key"], second["key"]) == (f"{prefix}-000001", f"{prefix}-000002")
        assert (first["number"], second["number"]) == (1, 2)

    async def test_two_hundred_concurrent_creates_get_unique_gap_free_numbers(self, desk: Desk) -> None:
        headers = await desk.as_admin()
        responses = await asyncio.gather(
            *(
                desk.client.post("/api/v1/incidents", json={"title": f"Burst {i}"}, headers=headers)
                for i in range(200)
            )
        )
        assert [r.status_code for r in responses] == [201] * 200
        numbers = sorted(r.json()["number"] for r in responses)
        assert numbers == list(range(1, 201))

    async def test_a_failed_create_gives_its_number_back(
        self, desk: Desk, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        headers = await desk.as_admin()
        await desk.raise_incident(headers)
        FailNextCommit(monkeypatch, OperationalError("COMMIT", {}, Exception("connection lost")))
        failed = await desk.client.post("/api/v1/incidents", json={"title": "lost"}, headers=headers)
        assert failed.status_code == 503
        monkeypatch.undo()
        assert (await desk.raise_incident(headers))["number"] == 2

    async def test_an_idempotency_key_raises_one_incident(self, desk: Desk) -> None:
        headers = {**await desk.as_admin(), "Idempotency-Key": "raise-once"}
        responses = await asyncio.gather(
            *(
                desk.client.post("/api/v1/incidents", json={"title": "Pharmacy printer"}, headers=headers)
                for _ in range(20)
            )
        )
        assert [r.status_code for r in responses] == [201] * 20
        assert len({r.json()["id"] for r in responses}) == 1
        assert all(r.headers["etag"] == '"1"' for r in responses)
        listed = (await desk.client.get("/api/v1/incidents", headers=await desk.as_admin())).json()["items"]
        assert len(listed) == 1

    async def test_numbers_are_per_tenant(self, factory: Factory, client: AsyncClient) -> None:
        for _ in range(2):
            tenant = await factory.tenant()
            admin = await factory.user(tenant, role="tenant_admin")
            created = await client.post(
                "/api/v1/incidents", json={"title": "x"}, headers=await factory.headers(admin)
            )
            assert created.json()["number"] == 1


class TestPriority:
    @pytest.mark.parametrize(
        ("impact", "urgency", "patient_care", "priority"),
        [
            (1, 1, False, 1),
            (1, 3, False, 3),
            (2, 2, False, 3),
            (3, 3, False, 5),
            (3, 3, True, 2),
            (2, 1, True, 1),
        ],
    )
    async def test_default_matrix(
        self, desk: Desk, impact: int, urgency: int, patient_care: bool, priority: int
    ) -> None:
        incident = await desk.raise_incident(impact=impact, urgency=urgency, patient_care_impact=patient_care)
        assert (incident["priority"], incident["priority_label"]) == (priority, f"P{priority}")
        assert incident["priority_matrix_version"] == 0

    async def test_a_new_matrix_version_applies_to_new_incidents_only(
        self, desk: Desk, factory: Factory
    ) -> None:
        old = await desk.raise_incident(impact=3, urgency=3)
        admin = await factory.staff(role="msp_admin", tier=None)
        matrix = {"1": {"1": 1, "2": 1, "3": 2}, "2": {"1": 2, "2": 2, "3": 3}, "3": {"1": 3, "2": 3, "3": 4}}
        published = await desk.client.put(
            "/api/v1/priority-matrix",
            json={"cells": matrix, "patient_care_raise": 2, "patient_care_floor": 1},
            headers=await factory.headers(admin, tenant=desk.tenant),
        )
        assert published.status_code == 200, published.text
        assert published.json()["version"] == 1
        new = await desk.raise_incident(impact=3, urgency=3)
        assert (new["priority"], new["priority_matrix_version"]) == (4, 1)
        kept = (await desk.client.get(f"/api/v1/incidents/{old['id']}", headers=await desk.as_admin())).json()
        assert (kept["priority"], kept["priority_matrix_version"]) == (5, 0)
        critical = await desk.raise_incident(impact=3, urgency=3, patient_care_impact=True)
        assert critical["priority"] == 1
        versions = (
            await desk.client.get("/api/v1/priority-matrix/versions", headers=await desk.as_admin())
        ).json()
        assert [v["version"] for v in versions] == [1]

    async def test_matrix_validation_and_permissions(self, desk: Desk, factory: Factory) -> None:
        admin = await factory.staff(role="msp_admin", tier=None)
        headers = await factory.headers(admin, tenant=desk.tenant)
        bad = await desk.client.put(
            "/api/v1/priority-matrix",
            json={"cells": {"1": {"1": 9}}, "patient_care_floor": 7},
            headers=headers,
        )
        assert bad.status_code == 422
        fields = {e["field"] for e in bad.json()["errors"]}
        assert {"cells", "patient_care_floor"} <= fields
        denied = await desk.client.put(
            "/api/v1/priority-matrix", json={"cells": {}}, headers=await desk.as_admin()
        )
        assert denied.status_code == 403

    async def test_priority_follows_impact_and_urgency_changes(self, desk: Desk) -> None:
        incident = await desk.raise_incident(impact=3, urgency=3)
        changed = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"impact": 1, "urgency": 1},
            headers=await desk.as_admin(),
        )
        assert changed.json()["priority"] == 1
        history = await desk.history(incident)
        assert {"type": "priority_changed", "data": {"from": 5, "to": 1, "matrix_version": 0}}.items() <= {
            "type": history[-2]["type"],
            "data": history[-2]["data"],
        }.items()

    async def test_vip_callers_are_raised_when_the_matrix_says_so(
        self, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        admin = await factory.staff(role="msp_admin", tier=None)
        cells = {"1": {"1": 1, "2": 2, "3": 3}, "2": {"1": 2, "2": 3, "3": 4}, "3": {"1": 3, "2": 4, "3": 5}}
        await desk.client.put(
            "/api/v1/priority-matrix",
            json={"cells": cells, "vip_raise": 1},
            headers=await factory.headers(admin, tenant=desk.tenant),
        )
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(update(User).where(User.id == desk.user.id).values(vip=True))
            await session.commit()
        incident = await desk.raise_incident(await desk.as_user(), impact=3, urgency=3)
        assert incident["priority"] == 4


class TestBadInput:
    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"title": ""}, "title"),
            ({"title": "x", "impact": 0}, "impact"),
            ({"title": "x", "urgency": 4}, "urgency"),
            ({"title": "x", "channel": "carrier-pigeon"}, "channel"),
            ({"title": "x", "caller_id": str(uuid.uuid4())}, "caller_id"),
            ({"title": "x", "affected_device_id": str(uuid.uuid4())}, "affected_device_id"),
            ({"title": "x", "site_id": str(uuid.uuid4())}, "site_id"),
            ({"title": "x", "priority": 1}, "priority"),
            ({"title": "x", "tenant_id": str(uuid.uuid4())}, "tenant_id"),
        ],
    )
    async def test_refused_and_nothing_written(self, desk: Desk, payload: dict[str, Any], field: str) -> None:
        response = await desk.client.post("/api/v1/incidents", json=payload, headers=await desk.as_admin())
        assert response.status_code == 422, response.text
        assert field in response.text
        assert (await desk.client.get("/api/v1/incidents", headers=await desk.as_admin())).json()[
            "items"
        ] == []

    async def test_another_tenants_ids_are_unknown(self, desk: Desk, factory: Factory) -> None:
        other = await factory.tenant()
        stranger = await factory.user(other)
        response = await desk.client.post(
            "/api/v1/incidents",
            json={"title": "x", "caller_id": str(stranger.id)},
            headers=await desk.as_admin(),
        )
        assert response.status_code == 422
        assert {"field": "caller_id", "message": "no such user"} in response.json()["errors"]

    async def test_tenants_cannot_set_staff_fields(self, desk: Desk) -> None:
        for payload in ({"title": "x", "tier": 3}, {"title": "x", "assignee_id": str(desk.agent.id)}):
            response = await desk.client.post(
                "/api/v1/incidents", json=payload, headers=await desk.as_admin()
            )
            assert response.status_code == 403
        incident = await desk.raise_incident()
        patched = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}", json={"tier": 2}, headers=await desk.as_admin()
        )
        assert patched.status_code == 403

    async def test_transition_requirements(self, desk: Desk) -> None:
        incident = await desk.raise_incident()
        for body, field in (
            ({"to": "on_hold"}, "on_hold_reason"),
            ({"to": "resolved", "resolution_notes": "done"}, "resolution_code"),
            ({"to": "resolved", "resolution_code": "other"}, "resolution_notes"),
            ({"to": "cancelled"}, "reason"),
        ):
            response = await desk.client.post(
                f"/api/v1/incidents/{incident['id']}/transitions", json=body, headers=await desk.as_agent()
            )
            assert response.status_code == 422, response.text
            assert field in {e["field"] for e in response.json()["errors"]}
        unknown = await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/transitions",
            json={"to": "exploded"},
            headers=await desk.as_agent(),
        )
        assert unknown.status_code == 422

    async def test_stale_if_match_is_refused(self, desk: Desk) -> None:
        incident = await desk.raise_incident()
        url = f"/api/v1/incidents/{incident['id']}"
        fetched = await desk.client.get(url, headers=await desk.as_admin())
        etag = fetched.headers["etag"]
        ok = await desk.client.patch(
            url, json={"title": "first"}, headers={**await desk.as_admin(), "If-Match": etag}
        )
        assert ok.status_code == 200
        stale = await desk.client.patch(
            url, json={"title": "second"}, headers={**await desk.as_admin(), "If-Match": etag}
        )
        assert stale.status_code == 412
        assert stale.json()["type"] == "/problems/precondition-failed"
        assert (await desk.client.get(url, headers=await desk.as_admin())).json()["title"] == "first"


class TestLifecycle:
    async def test_assignment_escalation_and_first_response(self, desk: Desk) -> None:
        l1 = await desk.group("L1", members=[desk.agent])
        l3 = await desk.group("L3", tier=3, members=[desk.l3])
        incident = await desk.raise_incident()
        assigned = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"assignee_id": str(desk.agent.id), "assignment_group_id": l1["id"]},
            headers=await desk.as_agent(),
        )
        assert assigned.json()["state"] == "assigned"
        assert (assigned.json()["assignment_group_id"], assigned.json()["assignment_group"]) == (
            l1["id"],
            l1["name"],
        )
        escalated = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"tier": 3, "assignee_id": str(desk.l3.id), "assignment_group_id": l3["id"]},
            headers=await desk.as_agent(),
        )
        assert escalated.json()["tier"] == 3
        await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/comments",
            json={"body": "Looking at the switch now."},
            headers=await desk.as_l3(),
        )
        after = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=await desk.as_admin())
        ).json()
        assert after["first_response_at"] is not None
        types = [e["type"] for e in await desk.history(incident)]
        assert types == [
            "created",
            "assigned",
            "state_changed",
            "tier_escalated",
            "assigned",
            "commented",
            "responded",
        ]

    async def test_first_contact_resolution(self, desk: Desk) -> None:
        quick = await desk.raise_incident(headers=await desk.as_agent(), channel="phone")
        resolved = await desk.move(quick, "resolved")
        assert resolved.json()["first_contact_resolution"] is True
        slow = await desk.raise_incident(headers=await desk.as_agent(), channel="phone")
        await desk.move(slow, "on_hold")
        await desk.move(slow, "in_progress")
        assert (await desk.move(slow, "resolved")).json()["first_contact_resolution"] is False
        escalated = await desk.raise_incident(headers=await desk.as_agent())
        await desk.client.patch(
            f"/api/v1/incidents/{escalated['id']}", json={"tier": 2}, headers=await desk.as_agent()
        )
        assert (await desk.move(escalated, "resolved")).json()["first_contact_resolution"] is False
        by_l3 = await desk.raise_incident(headers=await desk.as_agent())
        assert (await desk.move(by_l3, "resolved", headers=await desk.as_l3())).json()[
            "first_contact_resolution"
        ] is False

    async def test_reopen_and_close(self, desk: Desk) -> None:
        incident = await desk.raise_incident(await desk.as_user())
        await desk.move(incident, "resolved")
        reopened = await desk.move(incident, "in_progress", headers=await desk.as_user())
        assert reopened.status_code == 200, reopened.text
        assert (reopened.json()["reopen_count"], reopened.json()["resolved_at"]) == (1, None)
        await desk.move(incident, "resolved")
        closed = await desk.move(incident, "closed", headers=await desk.as_user())
        assert closed.json()["closed_at"] is not None
        frozen = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}", json={"title": "x"}, headers=await desk.as_agent()
        )
        assert frozen.status_code == 409

    async def test_tenants_cannot_work_incidents(self, desk: Desk) -> None:
        incident = await desk.raise_incident()
        for to in ("in_progress", "resolved", "on_hold"):
            assert (await desk.move(incident, to, headers=await desk.as_admin())).status_code == 403
        assert (await desk.move(incident, "cancelled", headers=await desk.as_admin())).status_code == 200


class TestVisibility:
    async def test_internal_notes_never_reach_the_tenant(self, desk: Desk) -> None:
        incident = await desk.raise_incident(await desk.as_user())
        url = f"/api/v1/incidents/{incident['id']}"
        await desk.client.post(
            f"{url}/comments", json={"body": "We are on it."}, headers=await desk.as_agent()
        )
        note = await desk.client.post(
            f"{url}/comments",
            json={"body": "SECRET: vendor says firmware bug", "visibility": "internal"},
            headers=await desk.as_agent(),
        )
        assert note.status_code == 201
        staff_view = (await desk.client.get(f"{url}/comments", headers=await desk.as_agent())).json()["items"]
        assert len(staff_view) == 2
        for headers in (await desk.as_user(), await desk.as_admin()):
            comments = await desk.client.get(f"{url}/comments", headers=headers)
            history = await desk.client.get(f"{url}/events", headers=headers)
            listed = await desk.client.get("/api/v1/incidents", headers=headers, params={"q": "firmware"})
            audit = await desk.client.get("/api/v1/audit-events", headers=headers)
            for response in (comments, history, listed, audit):
                assert "SECRET" not in response.text
                assert "firmware" not in response.text
            assert [c["body"] for c in comments.json()["items"]] == ["We are on it."]
            assert all(e["visibility"] == "public" for e in history.json()["items"])
        denied = await desk.client.post(
            f"{url}/comments", json={"body": "x", "visibility": "internal"}, headers=await desk.as_admin()
        )
        assert denied.status_code == 403

    async def test_tenant_users_see_only_their_own(self, desk: Desk, factory: Factory) -> None:
        mine = await desk.raise_incident(await desk.as_user())
        colleague = await factory.user(desk.tenant)
        theirs = await desk.raise_incident(await factory.headers(colleague))
        listed = await all_ids(desk.client, "/api/v1/incidents", await desk.as_user())
        assert listed == {mine["id"]}
        assert (
            await desk.client.get(f"/api/v1/incidents/{theirs['id']}", headers=await desk.as_user())
        ).status_code == 404
        admin_view = await all_ids(desk.client, "/api/v1/incidents", await desk.as_admin())
        assert {mine["id"], theirs["id"]} <= admin_view

    async def test_bus_events_carry_visibility(self, desk: Desk, owner_db: Database) -> None:
        bus.subscribe("incident.*", "tests.incident_listener")
        try:
            incident = await desk.raise_incident()
            await desk.client.post(
                f"/api/v1/incidents/{incident['id']}/comments",
                json={"body": "internal", "visibility": "internal"},
                headers=await desk.as_agent(),
            )
        finally:
            bus.unsubscribe("tests.incident_listener")
        async with owner_db.dangerously_unscoped_session() as session:
            rows = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.actor_name == "tests.incident_listener")
                    .order_by(OutboxMessage.created_at, OutboxMessage.id)
                )
            ).all()
        mine = [r.kwargs for r in rows if r.kwargs["payload"]["incident_id"] == incident["id"]]
        assert [m["type"] for m in mine] == ["incident.created", "incident.commented"]
        assert mine[1]["payload"]["visibility"] == "internal"


class TestMerge:
    async def test_merge_and_undo(self, desk: Desk) -> None:
        target = await desk.raise_incident(title="Wi-Fi down in ED")
        duplicate = await desk.raise_incident(title="No wifi in emergency")
        await desk.client.post(
            f"/api/v1/incidents/{duplicate['id']}/comments",
            json={"body": "Also the triage tablets"},
            headers=await desk.as_admin(),
        )
        merged = await desk.client.post(
            f"/api/v1/incidents/{target['id']}/merge",
            json={"source_ids": [duplicate["id"]]},
            headers=await desk.as_agent(),
        )
        assert merged.status_code == 200, merged.text
        source = (
            await desk.client.get(f"/api/v1/incidents/{duplicate['id']}", headers=await desk.as_admin())
        ).json()
        assert (source["state"], source["merged_into_id"], source["resolution_code"]) == (
            "cancelled",
            target["id"],
            "duplicate",
        )
        comments = (
            await desk.client.get(f"/api/v1/incidents/{target['id']}/comments", headers=await desk.as_admin())
        ).json()["items"]
        assert [c["body"] for c in comments] == ["Also the triage tablets"]
        history = await desk.history(target, await desk.as_admin())
        assert {e["incident_id"] for e in history} == {target["id"], duplicate["id"]}
        again = await desk.client.post(
            f"/api/v1/incidents/{target['id']}/merge",
            json={"source_ids": [duplicate["id"]]},
            headers=await desk.as_agent(),
        )
        assert again.status_code == 422
        undone = await desk.client.post(
            f"/api/v1/incidents/{duplicate['id']}/unmerge", headers=await desk.as_agent()
        )
        assert undone.status_code == 200
        restored = undone.json()
        assert (restored["state"], restored["merged_into_id"], restored["resolution_code"]) == (
            "new",
            None,
            None,
        )
        comments = (
            await desk.client.get(f"/api/v1/incidents/{target['id']}/comments", headers=await desk.as_admin())
        ).json()["items"]
        assert comments == []

    async def test_merge_refusals(self, desk: Desk, factory: Factory) -> None:
        target = await desk.raise_incident()
        closed = await desk.raise_incident()
        await desk.move(closed, "cancelled")
        other_tenant = await factory.tenant()
        foreign_admin = await factory.user(other_tenant, role="tenant_admin")
        foreign = (
            await desk.client.post(
                "/api/v1/incidents", json={"title": "theirs"}, headers=await factory.headers(foreign_admin)
            )
        ).json()
        for source, status in (
            (target["id"], 422),
            (closed["id"], 422),
            (foreign["id"], 422),
            (str(uuid.uuid4()), 422),
        ):
            response = await desk.client.post(
                f"/api/v1/incidents/{target['id']}/merge",
                json={"source_ids": [source]},
                headers=await desk.as_agent(),
            )
            assert response.status_code == status, response.text
            assert "theirs" not in response.text
        tenant_try = await desk.client.post(
            f"/api/v1/incidents/{target['id']}/merge",
            json={"source_ids": [closed["id"]]},
            headers=await desk.as_admin(),
        )
        assert tenant_try.status_code == 403


class TestQueues:
    async def test_cross_tenant_queue_for_granted_tenants(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        a, b, c = await factory.tenant(), await factory.tenant(), await factory.tenant()
        agent = await factory.staff(grants=[a, b])
        created: dict[str, list[str]] = {}
        for tenant, priorities in ((a, [1, 3]), (b, [2]), (c, [1])):
            admin = await factory.user(tenant, role="tenant_admin")
            headers = await factory.headers(admin)
            created[str(tenant.id)] = []
            for p in priorities:
                impact, urgency = {1: (1, 1), 2: (1, 2), 3: (2, 2)}[p]
                response = await client.post(
                    "/api/v1/incidents",
                    json={"title": f"P{p} in {tenant.slug}", "impact": impact, "urgency": urgency},
                    headers=headers,
                )
                created[str(tenant.id)].append(response.json()["id"])
        headers = await factory.headers(agent)
        queue = (await client.get("/api/v1/incidents", headers=headers, params={"limit": 200})).json()[
            "items"
        ]
        ids = [i["id"] for i in queue]
        assert set(ids) == set(created[str(a.id)] + created[str(b.id)])
        assert [i["priority"] for i in queue] == sorted(i["priority"] for i in queue)
        only_b = (
            await client.get("/api/v1/incidents", headers=headers, params={"tenant": str(b.id)})
        ).json()["items"]
        assert [i["id"] for i in only_b] == created[str(b.id)]
        p1 = (await client.get("/api/v1/incidents", headers=headers, params={"priority": 1})).json()["items"]
        assert [i["id"] for i in p1] == [created[str(a.id)][0]]
        c_hidden = await client.get("/api/v1/incidents", headers=headers, params={"tenant": str(c.id)})
        assert c_hidden.json()["items"] == []

    async def test_filters_search_sorting_and_pagination(self, desk: Desk) -> None:
        headers = await desk.as_agent()
        made = []
        for i in range(7):
            made.append(await desk.raise_incident(title=f"Badge reader {i} offline", urgency=1 + i % 3))
        legacy = await desk.raise_incident(
            headers,
            title="Imported",
            external_source="servicenow",
            external_id="abc",
            legacy_number="INC0012345",
        )
        await desk.client.patch(
            f"/api/v1/incidents/{made[0]['id']}", json={"assignee_id": str(desk.agent.id)}, headers=headers
        )
        mine = (
            await desk.client.get("/api/v1/incidents", headers=headers, params={"assignee": "me"})
        ).json()["items"]
        assert [i["id"] for i in mine] == [made[0]["id"]]
        unassigned = await all_ids(desk.client, "/api/v1/incidents", headers, {"assignee": "none"})
        assert made[0]["id"] not in unassigned
        by_number = (
            await desk.client.get("/api/v1/incidents", headers=headers, params={"number": made[3]["key"]})
        ).json()["items"]
        assert [i["id"] for i in by_number] == [made[3]["id"]]
        by_legacy = (
            await desk.client.get("/api/v1/incidents", headers=headers, params={"number": "INC0012345"})
        ).json()["items"]
        assert [i["id"] for i in by_legacy] == [legacy["id"]]
        assert (await desk.client.get("/api/v1/incidents/INC0012345", headers=headers)).json()[
            "id"
        ] == legacy["id"]
        assert (await desk.client.get(f"/api/v1/incidents/{made[2]['key']}", headers=headers)).json()[
            "id"
        ] == made[2]["id"]
        text = (await desk.client.get("/api/v1/incidents", headers=headers, params={"q": "reader 4"})).json()[
            "items"
        ]
        assert [i["id"] for i in text] == [made[4]["id"]]
        pct = (await desk.client.get("/api/v1/incidents", headers=headers, params={"q": "%"})).json()["items"]
        assert pct == []
        pages: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "sort": "-opened_at"}
            if cursor:
                params["cursor"] = cursor
            body = (await desk.client.get("/api/v1/incidents", headers=headers, params=params)).json()
            pages.extend(i["id"] for i in body["items"])
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert pages == [i["id"] for i in reversed([*made, legacy])]
        wrong = await desk.client.get(
            "/api/v1/incidents", headers=headers, params={"sort": "priority", "cursor": cursor or "x"}
        )
        assert wrong.status_code == 400

    async def test_search_by_caller(self, desk: Desk) -> None:
        incident = await desk.raise_incident(caller_id=str(desk.user.id))
        await desk.raise_incident()
        found = (
            await desk.client.get(
                "/api/v1/incidents", headers=await desk.as_agent(), params={"caller": desk.user.email[:8]}
            )
        ).json()
        assert [i["id"] for i in found["items"]] == [incident["id"]]


async def test_cross_tenant_matrix(desk: Desk, factory: Factory) -> None:
    other = await factory.tenant()
    other_admin = await factory.user(other, role="tenant_admin")
    theirs = (
        await desk.client.post(
            "/api/v1/incidents",
            json={"title": "Tenant B oncology EHR outage"},
            headers=await factory.headers(other_admin),
        )
    ).json()
    for headers in (await desk.as_admin(), await desk.as_user(), await desk.as_agent()):
        await assert_isolated(
            desk.client,
            headers,
            foreign_paths=[f"/api/v1/incidents/{theirs['id']}", f"/api/v1/incidents/{theirs['key']}"],
            patch_body={"title": "hijacked"},
            deletable=False,
            lists=["/api/v1/incidents"],
            foreign_ids=[theirs["id"]],
            secrets=["oncology"],
        )
        for suffix, body in (
            ("comments", {"body": "hi"}),
            ("transitions", {"to": "cancelled", "reason": "x"}),
            ("merge", {"source_ids": [theirs["id"]]}),
            ("unmerge", None),
        ):
            response = await desk.client.post(
                f"/api/v1/incidents/{theirs['id']}/{suffix}", json=body, headers=headers
            )
            assert response.status_code == 404, (suffix, response.text)
        for suffix in ("comments", "events"):
            assert (
                await desk.client.get(f"/api/v1/incidents/{theirs['id']}/{suffix}", headers=headers)
            ).status_code == 404
    untouched = (
        await desk.client.get(f"/api/v1/incidents/{theirs['id']}", headers=await factory.headers(other_admin))
    ).json()
    assert (untouched["title"], untouched["state"]) == ("Tenant B oncology EHR outage", "new")
