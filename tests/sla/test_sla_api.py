"""SLA policies, clocks computed from the event log, warnings and breaches announced once, recalculation."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from litestar import Litestar
from sqlalchemy import func, select, update
from tests.conftest import Factory
from tests.support.desk import Desk
from tests.support.jobs import drain

from msp_platform.db.engine import Database
from msp_platform.models.incident import Incident, IncidentEvent
from msp_platform.models.sla import IncidentSla, SlaNotice
from msp_platform.models.timer import Timer
from msp_platform.state import services_of

POLICY: dict[str, Any] = {
    "name": "Hospital standard",
    "calendar": "24x7",
    "pause_states": ["on_hold"],
    "pause_hold_reasons": ["awaiting_caller"],
    "warning_percents": [50, 75],
    "targets": {
        "1": {"response_minutes": 15, "resolution_minutes": 240, "update_minutes": 30},
        "3": {"response_minutes": 60, "resolution_minutes": 1440},
        "5": {"response_minutes": 480, "resolution_minutes": 4800},
    },
}


async def publish(desk: Desk, factory: Factory, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    admin = await factory.staff(role="msp_admin", tier=None)
    response = await desk.client.post(
        "/api/v1/sla/policies",
        json=policy or POLICY,
        headers=await factory.headers(admin, tenant=desk.tenant),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def backdate(db: Database, incident_id: str, by: timedelta) -> None:
    """As if the incident had been raised ``by`` ago: shift its opening and its whole history."""
    iid = uuid.UUID(incident_id)
    async with db.dangerously_unscoped_session() as session:
        incident = await session.scalar(select(Incident).where(Incident.id == iid))
        assert incident is not None
        incident.opened_at = incident.opened_at - by
        incident.created_at = (
            incident.created_at - by
        )  # the platform knew it from then on (it is not imported)
        for event in (
            await session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == iid))
        ).all():
            event.occurred_at = event.occurred_at - by
        await session.commit()


async def history(desk: Desk, incident: dict[str, Any]) -> list[dict[str, Any]]:
    """The incident's whole event log (every page)."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (
            await desk.client.get(
                f"/api/v1/incidents/{incident['id']}/events", params=params, headers=await desk.as_agent()
            )
        ).json()
        events += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return events


async def announced(desk: Desk, incident: dict[str, Any]) -> list[tuple[str, str, int]]:
    return sorted(
        (e["type"], e["data"]["target"], e["data"]["percent"])
        for e in await history(desk, incident)
        if e["type"].startswith("sla_")
    )


class TestPolicies:
    async def test_publish_versions(self, desk: Desk, factory: Factory) -> None:
        first = await publish(desk, factory)
        assert (first["version"], first["warning_percents"]) == (1, [50, 75])
        second = await publish(desk, factory, {**POLICY, "name": "Tighter"})
        assert second["version"] == 2
        current = (await desk.client.get("/api/v1/sla/policy", headers=await desk.as_admin())).json()
        assert current["name"] == "Tighter"
        assert [
            p["version"]
            for p in (await desk.client.get("/api/v1/sla/policies", headers=await desk.as_admin())).json()
        ] == [2, 1]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"targets": {"1": {"response_minutes": 0, "resolution_minutes": 10}}}, "response_minutes"),
            ({"targets": {"1": {"response_minutes": 10, "resolution_minutes": -5}}}, "resolution_minutes"),
            ({"targets": {"9": {"response_minutes": 10, "resolution_minutes": 20}}}, "targets.9"),
            (
                {"targets": {"1": {"response_minutes": 30, "resolution_minutes": 20}}},
                "targets.1.resolution_minutes",
            ),
            ({"warning_percents": [0, 50]}, "warning_percents[0]"),
            ({"warning_percents": [101]}, "warning_percents[0]"),
            ({"pause_states": ["resolved"]}, "pause_states[0]"),
            ({"calendar": "custom"}, "custom_calendar"),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "Mars/Base",
                        "hours": [{"weekday": 0, "start": "08:00", "end": "17:00"}],
                    },
                },
                "custom_calendar.timezone",
            ),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "America/Chicago",
                        "hours": [
                            {"weekday": 0, "start": "08:00", "end": "17:00"},
                            {"weekday": 0, "start": "16:00", "end": "20:00"},
                        ],
                    },
                },
                "custom_calendar.windows",
            ),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "UTC",
                        "hours": [{"weekday": 0, "start": "25:00", "end": "17:00"}],
                    },
                },
                "custom_calendar.windows[0].start",
            ),
        ],
    )
    async def test_bad_policies(
        self, desk: Desk, factory: Factory, change: dict[str, Any], field: str
    ) -> None:
        admin = await factory.staff(role="msp_admin", tier=None)
        response = await desk.client.post(
            "/api/v1/sla/policies",
            json={**POLICY, **change},
            headers=await factory.headers(admin, tenant=desk.tenant),
        )
        assert response.status_code == 422, response.text
        assert any(e["field"].startswith(field) or field in e["field"] for e in response.json()["errors"]), (
            response.json()
        )
        assert (await desk.client.get("/api/v1/sla/policies", headers=await desk.as_admin())).json() == []

    async def test_only_msp_admins_publish(self, desk: Desk) -> None:
        assert (
            await desk.client.post("/api/v1/sla/policies", json=POLICY, headers=await desk.as_admin())
        ).status_code == 403
        assert (
            await desk.client.post("/api/v1/sla/policies", json=POLICY, headers=await desk.as_agent())
        ).status_code == 403


class TestClocks:
    async def test_incident_keeps_its_opening_policy_and_explains_its_clocks(
        self, desk: Desk, factory: Factory
    ) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)
        await publish(
            desk, factory, {**POLICY, "targets": {"1": {"response_minutes": 5, "resolution_minutes": 60}}}
        )
        sla = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}/sla", headers=await desk.as_admin())
        ).json()
        assert (sla["policy_version"], sla["calendar"]) == (1, "24x7")
        targets = {c["target"]: c for c in sla["clocks"]}
        assert targets["response"]["duration_seconds"] == 15 * 60
        assert targets["resolution"]["status"] == "running"
        assert "counted of 4h00m" in targets["resolution"]["explanation"]
        assert sla["update_cadence_minutes"] == 30

    async def test_pauses_follow_the_hold_reason(
        self, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=2, urgency=2)  # P3: 60 min response, 24 h resolution
        await backdate(owner_db, incident["id"], timedelta(minutes=90))
        await desk.move(incident, "in_progress")
        await desk.move(incident, "on_hold", on_hold_reason="awaiting_vendor")  # does not pause
        await desk.move(incident, "in_progress")
        await desk.move(incident, "on_hold", on_hold_reason="awaiting_caller")  # pauses
        sla = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}/sla", headers=await desk.as_admin())
        ).json()
        resolution = next(c for c in sla["clocks"] if c["target"] == "resolution")
        assert resolution["status"] == "paused"
        kinds = {(s["kind"], s["state"]) for s in resolution["segments"]}
        assert ("counted", "on_hold:awaiting_vendor") in kinds
        assert ("paused", "on_hold:awaiting_caller") in kinds
        assert sum(s["seconds"] for s in resolution["segments"]) == pytest.approx(
            resolution["elapsed_seconds"]
            + resolution["paused_seconds"]
            + resolution["outside_hours_seconds"],
            abs=2,
        )
        response = next(c for c in sla["clocks"] if c["target"] == "response")
        assert response["status"] == "breached", (
            "the first response came after 90 minutes against a 60 minute target"
        )

    async def test_business_hours_calendar_of_the_tenant(
        self, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        from msp_platform.models.tenant import Tenant

        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                update(Tenant)
                .where(Tenant.id == desk.tenant.id)
                .values(
                    timezone="America/New_York",
                    business_calendar={
                        "hours": [{"weekday": d, "start": "08:00", "end": "17:00"} for d in range(5)],
                        "holidays": [],
                    },
                )
            )
            await session.commit()
        await publish(desk, factory, {**POLICY, "calendar": "business_hours"})
        incident = await desk.raise_incident(impact=1, urgency=1)
        sla = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}/sla", headers=await desk.as_admin())
        ).json()
        assert sla["calendar"] == "tenant business hours (America/New_York)"
        assert {c["status"] for c in sla["clocks"]} <= {"running", "paused"}


class TestAnnouncements:
    async def test_breach_is_announced_once(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)  # P1: response 15 min
        await backdate(owner_db, incident["id"], timedelta(minutes=20))
        # Any incident event makes the SLA job recompute; the 50/75% warnings and the breach are all past.
        await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/comments",
            json={"body": "note", "visibility": "internal"},
            headers=await desk.as_agent(),
        )
        await drain(app)
        await drain(app)  # and again: nothing new
        assert [a for a in await announced(desk, incident) if a[1] == "response"] == [
            ("sla_breached", "response", 100),
            ("sla_warning", "response", 50),
            ("sla_warning", "response", 75),
        ]
        async with owner_db.dangerously_unscoped_session() as session:
            notices = await session.scalar(
                select(func.count())
                .select_from(SlaNotice)
                .where(SlaNotice.incident_id == uuid.UUID(incident["id"]), SlaNotice.target == "response")
            )
            stored = {
                r.target: r.status
                for r in (
                    await session.scalars(
                        select(IncidentSla).where(IncidentSla.incident_id == uuid.UUID(incident["id"]))
                    )
                ).all()
            }
            pending = (
                await session.scalars(
                    select(Timer).where(
                        Timer.subject_id == uuid.UUID(incident["id"]),
                        Timer.fired_at.is_(None),
                        Timer.cancelled_at.is_(None),
                    )
                )
            ).all()
        assert notices == 3
        # P1 has an update cadence of 30 minutes: nothing public was said in 20, so it is running too.
        assert stored == {"response": "breached", "resolution": "running", "update": "running"}
        # One timer per incident: due when the next threshold is (the update cadence's 75 %, 22.5 min in).
        assert [t.key for t in pending] == ["next"]
        async with owner_db.dangerously_unscoped_session() as session:
            opened = await session.scalar(
                select(Incident.opened_at).where(Incident.id == uuid.UUID(incident["id"]))
            )
        assert opened is not None
        assert pending[0].due_at == opened + timedelta(minutes=22, seconds=30)

    async def test_duplicate_timer_messages_fire_once(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        from msp_platform.worker.outbox import PENDING_KEY, enqueue, send_after_commit

        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)
        await backdate(owner_db, incident["id"], timedelta(minutes=20))
        await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/comments",
            json={"body": "poke"},
            headers=await desk.as_admin(),
        )
        services = services_of(app)
        # Before the worker runs, queue every timer of the incident ten more times.
        await drain(app)
        async with owner_db.dangerously_unscoped_session() as session:
            timer_rows = (
                await session.scalars(select(Timer).where(Timer.subject_id == uuid.UUID(incident["id"])))
            ).all()
        async with services.db.session() as session:
            from msp_platform.authz.service import system_tenant_context
            from msp_platform.db.session import set_tenant_context

            await set_tenant_context(session, system_tenant_context(desk.tenant.id))
            for timer in timer_rows:
                for _ in range(10):
                    enqueue(session, "timers.fire", tenant_id=desk.tenant.id, timer_id=timer.id)
            pending = list(session.info.pop(PENDING_KEY))
            await session.commit()
        await send_after_commit(services.broker, services.db.sessionmaker, pending)
        await drain(app)
        events = await history(desk, incident)
        assert len([e for e in events if e["type"] == "sla_breached"]) == 1
        assert (
            len([e for e in events if e["type"] == "sla_warning" and e["data"]["target"] == "response"]) == 2
        )


class TestRecalculation:
    async def test_diff_then_apply(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        v1 = await publish(desk, factory)
        fast = await desk.raise_incident(impact=1, urgency=1)
        await backdate(owner_db, fast["id"], timedelta(minutes=10))
        await desk.move(fast, "in_progress")  # first response after 10 minutes: met under v1 (15 min)
        strict = {**POLICY, "targets": {"1": {"response_minutes": 5, "resolution_minutes": 240}}}
        await publish(desk, factory, strict)
        admin = await factory.staff(role="msp_admin", tier=None)
        headers = await factory.headers(admin, tenant=desk.tenant)
        window = {
            "opened_from": "2000-01-01T00:00:00Z",
            "opened_to": "2100-01-01T00:00:00Z",
            "policy_version": 2,
        }
        preview = await desk.client.post("/api/v1/sla/recalculate", json=window, headers=headers)
        assert preview.status_code == 200, preview.text
        body = preview.json()
        assert (body["examined"], body["applied"]) == (1, False)
        change = body["changes"][0]
        assert (change["key"], change["target"], change["before"]["status"], change["after"]["status"]) == (
            fast["key"],
            "response",
            "met",
            "breached",
        )
        assert (await desk.client.get(f"/api/v1/incidents/{fast['id']}/sla", headers=headers)).json()[
            "policy_version"
        ] == v1["version"]
        applied = await desk.client.post(
            "/api/v1/sla/recalculate", json={**window, "apply": True}, headers=headers
        )
        assert applied.json()["applied"] is True
        assert (await desk.client.get(f"/api/v1/incidents/{fast['id']}/sla", headers=headers)).json()[
            "policy_version"
        ] == 2
        bad = await desk.client.post(
            "/api/v1/sla/recalculate", json={**window, "policy_version": 99}, headers=headers
        )
        assert bad.status_code == 422


async def test_cross_tenant(desk: Desk, factory: Factory, client: AsyncClient) -> None:
    await publish(desk, factory)
    other = await factory.tenant()
    other_admin = await factory.user(other, role="tenant_admin")
    theirs = (
        await client.post(
            "/api/v1/incidents", json={"title": "theirs"}, headers=await factory.headers(other_admin)
        )
    ).json()
    assert (
        await client.get(f"/api/v1/incidents/{theirs['id']}/sla", headers=await desk.as_admin())
    ).status_code == 404
    assert (
        await client.get("/api/v1/sla/policy", headers=await factory.headers(other_admin))
    ).status_code == 404
