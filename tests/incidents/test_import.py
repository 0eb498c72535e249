"""Imported history: incidents from another ticket system with their original timestamps, validated event by
event, idempotent on the external reference, numbered from the tenant's own counter, SLA computed from the
original times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import Factory
from tests.support.desk import Desk

from msp_platform.db.engine import Database
from msp_platform.models.sla import IncidentSla

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
POLICY: dict[str, Any] = {
    "name": "Import test",
    "calendar": "24x7",
    "pause_states": ["on_hold"],
    "pause_hold_reasons": ["awaiting_caller"],
    "warning_percents": [50],
    "targets": {"3": {"response_minutes": 60, "resolution_minutes": 1440}},
}


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def history(desk: Desk, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A P3 incident worked over a day: breached its 60-minute response (90 min), held 8 hours awaiting the
    caller (which pauses the clock), resolved after 25 hours: 17 counted hours, within the 24-hour target."""
    return {
        "external_source": "servicenow",
        "external_id": uuid.uuid4().hex,
        "legacy_number": f"INC{uuid.uuid4().int % 10**7:07d}",
        "title": "Label printer in pharmacy prints blank labels",
        "description": "Imported from ServiceNow",
        "caller_id": str(desk.user.id),
        "channel": "phone",
        "impact": 2,
        "urgency": 2,
        "opened_at": at(0),
        "opened_by": "jdoe",
        "events": [
            {"type": "assigned", "at": at(5), "actor": "dispatcher", "assignment_group_id": group_id},
            {"type": "state_changed", "at": at(5), "to": "assigned", "actor": "dispatcher"},
            {"type": "state_changed", "at": at(90), "to": "in_progress", "staff_id": str(desk.agent.id)},
            {
                "type": "state_changed",
                "at": at(120),
                "to": "on_hold",
                "on_hold_reason": "awaiting_caller",
                "reason": "Waiting for the pharmacist",
                "staff_id": str(desk.agent.id),
            },
            {"type": "state_changed", "at": at(600), "to": "in_progress", "staff_id": str(desk.agent.id)},
            {
                "type": "commented",
                "at": at(610),
                "body": "SECRET vendor ticket 4711",
                "visibility": "internal",
                "staff_id": str(desk.agent.id),
            },
            {
                "type": "commented",
                "at": at(620),
                "body": "We replaced the ribbon.",
                "staff_id": str(desk.agent.id),
            },
            {"type": "priority_changed", "at": at(700), "urgency": 2, "actor": "jdoe"},
            {
                "type": "state_changed",
                "at": at(1500),
                "to": "resolved",
                "resolution_code": "hardware_replaced",
                "resolution_notes": "New ribbon",
                "staff_id": str(desk.agent.id),
            },
            {"type": "state_changed", "at": at(1600), "to": "closed", "user_id": str(desk.user.id)},
        ],
        **overrides,
    }


async def post_import(
    desk: Desk, incidents: list[dict[str, Any]], headers: dict[str, str] | None = None, mode: str = "atomic"
) -> Any:
    return await desk.client.post(
        "/api/v1/incidents/import",
        params={"mode": mode},
        json={"incidents": incidents},
        headers=headers or await desk.as_admin(),
    )


class TestImportedHistory:
    async def test_original_timestamps_drive_the_sla(
        self, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        policy = await desk.client.post(
            "/api/v1/sla/policies", json=POLICY, headers=await desk.as_msp_admin()
        )
        assert policy.status_code == 201, policy.text
        group = await desk.group()
        item = history(desk, group["id"])
        response = await post_import(desk, [item])
        assert response.status_code == 200, response.text
        report = response.json()
        assert (report["committed"], report["created"], report["failed"]) == (True, 1, 0)
        row = report["rows"][0]
        assert (row["status"], row["key"]) == ("created", f"{desk.tenant.ticket_prefix}-000001")

        incident = (
            await desk.client.get(f"/api/v1/incidents/{row['id']}", headers=await desk.as_agent())
        ).json()
        assert incident["opened_at"] == at(0).replace("+00:00", "Z")
        assert (incident["state"], incident["priority"], incident["assignment_group_id"]) == (
            "closed",
            3,
            group["id"],
        )
        assert incident["first_response_at"] == at(90).replace("+00:00", "Z")
        assert incident["resolved_at"] == at(1500).replace("+00:00", "Z")
        assert incident["closed_at"] == at(1600).replace("+00:00", "Z")
        assert (incident["resolution_code"], incident["legacy_number"]) == (
            "hardware_replaced",
            item["legacy_number"],
        )

        events = await desk.history(incident)
        imported = [e for e in events if e["imported"]]
        assert [e["type"] for e in imported][:3] == ["created", "assigned", "state_changed"]
        assert "responded" in [e["type"] for e in imported]
        assert imported[0]["occurred_at"] == at(0).replace("+00:00", "Z")
        assert imported[0]["actor"] == "import:servicenow:jdoe"
        assert all(e["occurred_at"] <= at(1600).replace("+00:00", "Z") for e in imported)
        live = [e for e in events if not e["imported"]]
        assert [e["type"] for e in live] == ["imported"]

        sla = (
            await desk.client.get(f"/api/v1/incidents/{row['id']}/sla", headers=await desk.as_agent())
        ).json()
        clocks = {c["target"]: c for c in sla["clocks"]}
        assert clocks["response"]["status"] == "breached"
        assert clocks["response"]["breached_at"] == at(60).replace("+00:00", "Z")
        resolution = clocks["resolution"]
        assert resolution["status"] == "met"
        assert resolution["paused_seconds"] == 480 * 60
        assert resolution["elapsed_seconds"] == (1500 - 480) * 60
        assert resolution["stopped_at"] == at(1500).replace("+00:00", "Z")
        # The stored clocks (reports read them) were computed at the import as well.
        async with owner_db.dangerously_unscoped_session() as session:
            stored = {
                r.target: r.status
                for r in await session.scalars(
                    select(IncidentSla).where(IncidentSla.incident_id == uuid.UUID(row["id"]))
                )
            }
        assert stored == {"response": "breached", "resolution": "met"}

    async def test_the_tenant_sees_public_history_only(self, desk: Desk) -> None:
        group = await desk.group()
        row = (await post_import(desk, [history(desk, group["id"])])).json()["rows"][0]
        for headers in (await desk.as_user(), await desk.as_admin()):
            comments = await desk.client.get(f"/api/v1/incidents/{row['id']}/comments", headers=headers)
            assert [c["body"] for c in comments.json()["items"]] == ["We replaced the ribbon."]
            assert comments.json()["items"][0]["created_at"] == at(620).replace("+00:00", "Z")
            events = await desk.client.get(f"/api/v1/incidents/{row['id']}/events", headers=headers)
            audit = await desk.client.get("/api/v1/audit-events", headers=headers)
            for response in (comments, events, audit):
                assert "SECRET" not in response.text
            assert all(e["visibility"] == "public" for e in events.json()["items"])

    async def test_numbers_come_from_the_same_counter(self, desk: Desk) -> None:
        group = await desk.group()
        before = await desk.raise_incident()
        report = (await post_import(desk, [history(desk, group["id"]) for _ in range(3)])).json()
        assert [r["key"] for r in report["rows"]] == [
            f"{desk.tenant.ticket_prefix}-{n:06d}" for n in (2, 3, 4)
        ]
        after = await desk.raise_incident()
        assert (before["number"], after["number"]) == (1, 5)


class TestIdempotency:
    async def test_reimporting_skips_known_incidents(self, desk: Desk) -> None:
        group = await desk.group()
        items = [history(desk, group["id"]) for _ in range(2)]
        first = (await post_import(desk, items)).json()
        again = await post_import(desk, [*items, history(desk, group["id"])])
        assert again.status_code == 200, again.text
        rows = again.json()["rows"]
        assert [r["status"] for r in rows] == ["skipped", "skipped", "created"]
        assert [r["id"] for r in rows[:2]] == [r["id"] for r in first["rows"]]
        assert "already recorded" in rows[0]["detail"]
        listed = (await desk.client.get("/api/v1/incidents", headers=await desk.as_admin())).json()["items"]
        assert len(listed) == 3

    async def test_a_live_create_with_an_imported_reference_is_a_conflict(self, desk: Desk) -> None:
        group = await desk.group()
        item = history(desk, group["id"])
        await post_import(desk, [item])
        for body in (
            {"external_source": "servicenow", "external_id": item["external_id"]},
            {
                "external_source": "servicenow",
                "external_id": "other",
                "legacy_number": item["legacy_number"].lower(),
            },
        ):
            response = await desk.client.post(
                "/api/v1/incidents", json={"title": "dup", **body}, headers=await desk.as_agent()
            )
            assert response.status_code == 409, response.text
            assert response.json()["type"] == "/problems/already-recorded"

    async def test_duplicates_within_a_batch(self, desk: Desk) -> None:
        group = await desk.group()
        one = history(desk, group["id"])
        twin = history(desk, group["id"], external_id=one["external_id"])
        legacy_twin = history(desk, group["id"], legacy_number=one["legacy_number"].lower())
        response = await post_import(desk, [one, twin, legacy_twin])
        assert response.status_code == 422
        rows = response.json()["report"]["rows"]
        assert {e["field"] for e in rows[1]["errors"]} >= {"external_id"}
        assert {e["field"] for e in rows[2]["errors"]} >= {"legacy_number"}


class TestValidation:
    async def test_every_problem_is_named_and_nothing_is_stored(self, desk: Desk, factory: Factory) -> None:
        group = await desk.group()
        stranger = await factory.user(await factory.tenant())
        good = history(desk, group["id"])
        bad = history(
            desk,
            group["id"],
            caller_id=str(stranger.id),
            opened_at="2025-03-03T08:00:00",
            events=[
                {"type": "state_changed", "at": at(10), "to": "closed"},
                {"type": "state_changed", "at": at(5), "to": "on_hold"},
                {"type": "state_changed", "at": at(20), "to": "resolved", "resolution_notes": "x"},
                {"type": "commented", "at": at(30), "body": "hi", "to": "closed"},
                {"type": "assigned", "at": at(40), "assignee_id": str(uuid.uuid4())},
                {"type": "commented", "at": "2999-01-01T00:00:00Z", "body": "from the future"},
                {"type": "responded", "at": "2025-03-04T08:00:00", "user_id": str(stranger.id)},
            ],
        )
        response = await post_import(desk, [good, bad])
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["type"] == "/problems/import-failed"
        report = body["report"]
        assert (report["committed"], report["failed"]) == (False, 1)
        assert report["rows"][0]["status"] == "valid"
        errors = {e["field"]: e["message"] for e in report["rows"][1]["errors"]}
        assert errors["caller_id"] == "no such user"
        assert "UTC offset" in errors["opened_at"]
        assert "new -> closed is not allowed" in errors["events[0].to"]
        assert errors["events[1].at"].startswith("is before")
        assert "events[1].on_hold_reason" in errors
        assert "resolution_code" in {f.rsplit(".", 1)[1] for f in errors if f.startswith("events[2].")}
        assert errors["events[3].to"] == "does not apply to a commented event"
        assert errors["events[4].assignee_id"] == "no such staff member"
        assert errors["events[5].at"] == "lies in the future"
        assert "UTC offset" in errors["events[6].at"]
        assert errors["events[6].user_id"] == "no such user"
        listed = (await desk.client.get("/api/v1/incidents", headers=await desk.as_admin())).json()["items"]
        assert listed == []
        assert (await desk.raise_incident())["number"] == 1, "a refused import took no number"

    async def test_partial_mode_stores_the_valid_ones(self, desk: Desk) -> None:
        group = await desk.group()
        bad = history(desk, group["id"], events=[{"type": "tier_changed", "at": at(1)}])
        response = await post_import(desk, [bad, history(desk, group["id"])], mode="partial")
        assert response.status_code == 200, response.text
        report = response.json()
        assert [r["status"] for r in report["rows"]] == ["error", "created"]
        assert report["rows"][0]["errors"] == [
            {"field": "events[0].tier", "message": "is required for a tier_changed event"}
        ]
        assert report["rows"][1]["key"] == f"{desk.tenant.ticket_prefix}-000001"

    async def test_assignees_must_be_granted_the_tenant(self, desk: Desk, factory: Factory) -> None:
        outsider = await factory.staff(grants=[await factory.tenant()])
        group = await desk.group()
        item = history(
            desk,
            group["id"],
            events=[{"type": "assigned", "at": at(1), "assignee_id": str(outsider.id)}],
        )
        response = await post_import(desk, [item])
        assert response.status_code == 422
        assert response.json()["report"]["rows"][0]["errors"] == [
            {"field": "events[0].assignee_id", "message": "is not granted this tenant"}
        ]

    @pytest.mark.parametrize(
        "body",
        [
            {"incidents": []},
            {"incidents": [{"title": "x"}]},
            {
                "incidents": [
                    {"external_source": "a", "external_id": "b", "title": "x", "opened_at": "yesterday"}
                ]
            },
            {"incidents": [{"x": 1}] * 501},
        ],
    )
    async def test_malformed_batches(self, desk: Desk, body: dict[str, Any]) -> None:
        response = await desk.client.post(
            "/api/v1/incidents/import", json=body, headers=await desk.as_admin()
        )
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"] == "application/problem+json"


class TestAccess:
    async def test_who_may_import(self, desk: Desk, factory: Factory) -> None:
        group = await desk.group()
        client_id, secret = await factory.integration_client(desk.tenant, scopes="incidents:write")
        integration = {"Authorization": f"Bearer {await factory.client_token(client_id, secret)}"}
        for headers, status in (
            (await desk.as_admin(), 200),
            (integration, 200),
            (await desk.as_msp_admin(), 200),
            (await desk.as_agent(), 403),
            (await desk.as_user(), 403),
        ):
            response = await post_import(desk, [history(desk, group["id"])], headers=headers)
            assert response.status_code == status, (headers, response.text)

    async def test_another_tenants_references_are_unknown(self, desk: Desk, factory: Factory) -> None:
        other = await factory.tenant()
        other_admin = await factory.user(other, role="tenant_admin")
        group = await desk.group()
        item = history(desk, group["id"])  # names desk's caller and agent
        response = await post_import(desk, [item], headers=await factory.headers(other_admin))
        assert response.status_code == 422
        fields = {e["field"] for e in response.json()["report"]["rows"][0]["errors"]}
        assert "caller_id" in fields
        # The same external reference in another tenant is another incident.
        mine = await post_import(desk, [item])
        theirs = await post_import(
            desk, [{**item, "caller_id": None, "events": []}], headers=await factory.headers(other_admin)
        )
        assert mine.json()["rows"][0]["status"] == theirs.json()["rows"][0]["status"] == "created"
        assert mine.json()["rows"][0]["id"] != theirs.json()["rows"][0]["id"]


class TestLegacyNumbers:
    async def test_lookup_ignores_case_and_names_ambiguity(self, desk: Desk) -> None:
        group = await desk.group()
        item = history(desk, group["id"], legacy_number="INC0099001")
        row = (await post_import(desk, [item])).json()["rows"][0]
        headers = await desk.as_agent()
        for ref in ("INC0099001", "inc0099001"):
            found = await desk.client.get(f"/api/v1/incidents/{ref}", headers=headers)
            assert found.json()["id"] == row["id"]
            listed = await desk.client.get("/api/v1/incidents", params={"number": ref}, headers=headers)
            assert [i["id"] for i in listed.json()["items"]] == [row["id"]]
        searched = await desk.client.get("/api/v1/incidents", params={"q": "inc00990"}, headers=headers)
        assert [i["id"] for i in searched.json()["items"]] == [row["id"]]
        # Another source system may use the same number: a lookup by it then names both.
        other = history(desk, group["id"], external_source="autotask", legacy_number="inc0099001")
        second = (await post_import(desk, [other])).json()["rows"][0]
        assert second["status"] == "created"
        ambiguous = await desk.client.get("/api/v1/incidents/INC0099001", headers=headers)
        assert ambiguous.status_code == 409
        assert ambiguous.json()["type"] == "/problems/ambiguous-reference"
        assert {c["id"] for c in ambiguous.json()["candidates"]} == {row["id"], second["id"]}
