"""The SLA engine end to end: warnings and breaches are never lost (outages, timers racing a pause, retroactive
breaches), the update cadence is a real target, calendars and priorities are versioned by the event log, and
recalculation is batched, paged and complete. Started from the audit's probes (/tmp/audit5)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import event, select, update
from tests.conftest import Factory
from tests.sla.test_sla_api import POLICY, announced, backdate, drain, history, publish
from tests.support.desk import Desk, set_tenant_calendar

from msp_platform.authz.service import system_tenant_context
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Incident
from msp_platform.models.sla import IncidentSla, SlaNotice
from msp_platform.models.timer import Timer
from msp_platform.state import services_of
from msp_platform.worker.outbox import PENDING_KEY, enqueue, send_after_commit


async def admin_headers(desk: Desk, factory: Factory) -> dict[str, str]:
    return await factory.headers(await factory.staff(role="msp_admin", tier=None), tenant=desk.tenant)


async def sla(desk: Desk, incident: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await desk.client.get(
        f"/api/v1/incidents/{incident['id']}/sla", params=params, headers=await desk.as_admin()
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def clock(body: dict[str, Any], target: str) -> dict[str, Any]:
    return next(c for c in body["clocks"] if c["target"] == target)


async def comment(desk: Desk, incident: dict[str, Any], visibility: str = "internal") -> None:
    response = await desk.client.post(
        f"/api/v1/incidents/{incident['id']}/comments",
        json={"body": "update", "visibility": visibility},
        headers=await desk.as_agent(),
    )
    assert response.status_code == 201, response.text


async def wake_timer(db: Database, incident: dict[str, Any]) -> Timer:
    async with db.dangerously_unscoped_session() as session:
        timer = await session.scalar(
            select(Timer).where(Timer.subject_id == uuid.UUID(incident["id"]), Timer.key == "next")
        )
    assert timer is not None
    return timer


async def fire_timer(
    app: Litestar, desk: Desk, db: Database, incident: dict[str, Any], *, due: datetime
) -> None:
    """What the sweep does for an overdue timer once the worker is back: the timer is (made) due at ``due``
    and a ``timers.fire`` message is sent for it."""
    timer = await wake_timer(db, incident)
    async with db.dangerously_unscoped_session() as session:
        await session.execute(update(Timer).where(Timer.id == timer.id).values(due_at=due, lease_until=None))
        await session.commit()
    services = services_of(app)
    async with services.db.session() as session:
        await set_tenant_context(session, system_tenant_context(desk.tenant.id))
        enqueue(session, "timers.fire", tenant_id=desk.tenant.id, timer_id=timer.id)
        pending = list(session.info.pop(PENDING_KEY))
        await session.commit()
    await send_after_commit(services.broker, services.db.sessionmaker, pending)
    await drain(app)


async def notices(db: Database, incident: dict[str, Any]) -> dict[tuple[str, int, int], str]:
    async with db.dangerously_unscoped_session() as session:
        rows = (
            await session.scalars(select(SlaNotice).where(SlaNotice.incident_id == uuid.UUID(incident["id"])))
        ).all()
    return {(n.target, n.threshold, n.cycle): n.outcome for n in rows}


async def stored(db: Database, incident: dict[str, Any]) -> dict[str, IncidentSla]:
    async with db.dangerously_unscoped_session() as session:
        rows = (
            await session.scalars(
                select(IncidentSla).where(IncidentSla.incident_id == uuid.UUID(incident["id"]))
            )
        ).all()
    return {r.target: r for r in rows}


async def opened_at(db: Database, incident: dict[str, Any]) -> datetime:
    async with db.dangerously_unscoped_session() as session:
        value = await session.scalar(
            select(Incident.opened_at).where(Incident.id == uuid.UUID(incident["id"]))
        )
    assert value is not None
    return value


NO_CADENCE = {
    **POLICY,
    "targets": {
        "1": {"response_minutes": 15, "resolution_minutes": 240},
        "3": {"response_minutes": 60, "resolution_minutes": 1440},
        "5": {"response_minutes": 480, "resolution_minutes": 4800},
    },
}


class TestNoticesAreNeverLost:
    async def test_outage_longer_than_the_late_window_still_announces_the_breach(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(
            impact=1, urgency=1
        )  # P1: response 15, resolution 240, update 30
        await drain(app)  # the clocks are live; the timer waits for the first threshold
        services_of(app).broker.flush_all()  # the outage: the delayed message is lost
        await backdate(owner_db, incident["id"], timedelta(minutes=200))
        await fire_timer(app, desk, owner_db, incident, due=utcnow() - timedelta(minutes=190))

        events = [e for e in await history(desk, incident) if e["type"].startswith("sla_")]
        got = sorted((e["data"]["target"], e["data"]["percent"], e["data"]["late"]) for e in events)
        # Response: the breach (135 min ago), late; its 50/75 % warnings were overtaken. Resolution: 75 % is
        # 20 minutes old (on time); its 50 % (80 minutes ago) was overtaken. Update cadence: missed 170
        # minutes ago, late.
        assert got == [("resolution", 75, False), ("response", 100, True), ("update", 100, True)]
        assert await notices(owner_db, incident) == {
            ("response", 50, 0): "superseded",
            ("response", 75, 0): "superseded",
            ("response", 100, 0): "announced",
            ("resolution", 50, 0): "superseded",
            ("resolution", 75, 0): "announced",
            ("update", 50, 0): "superseded",
            ("update", 75, 0): "superseded",
            ("update", 100, 0): "announced",
        }
        # And once only: the next evaluations find everything noticed.
        await comment(desk, incident)
        await drain(app)
        assert len([e for e in await history(desk, incident) if e["type"].startswith("sla_")]) == 3

    async def test_a_breach_found_by_a_bus_job_hours_late_is_announced(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        """The outage began before the incident's SLA job ever ran: no stored clock, no timer, and still the
        breach of a live incident is announced (late) when the job finally runs."""
        await publish(desk, factory, NO_CADENCE)
        incident = await desk.raise_incident(impact=1, urgency=1)
        services_of(app).broker.flush_all()  # the creation's SLA job is lost with the broker
        await backdate(owner_db, incident["id"], timedelta(hours=3))
        assert await stored(owner_db, incident) == {}
        await comment(desk, incident)  # the next event's job runs
        await drain(app)
        breaches = [e["data"] for e in await history(desk, incident) if e["type"] == "sla_breached"]
        assert [(b["target"], b["late"]) for b in breaches] == [("response", True)]

    async def test_a_timer_firing_while_the_clock_is_paused_is_armed_again(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(
            desk, factory, NO_CADENCE
        )  # resolution 240 min, warnings 50/75; pauses on awaiting_caller
        incident = await desk.raise_incident(impact=1, urgency=1)
        await backdate(owner_db, incident["id"], timedelta(minutes=100))
        await comment(desk, incident)
        await drain(app)  # response breached and announced; the timer waits for resolution 50 % (in 20 min)
        await desk.move(incident, "on_hold", on_hold_reason="awaiting_caller")
        services_of(app).broker.flush_all()  # the hold's SLA job has not run when the timer fires
        await fire_timer(app, desk, owner_db, incident, due=utcnow() - timedelta(seconds=10))
        assert (await wake_timer(owner_db, incident)).fired_at is not None  # paused: nothing to announce

        await desk.move(incident, "in_progress")  # the clock resumes: the timer is armed again
        await drain(app)
        timer = await wake_timer(owner_db, incident)
        assert (timer.fired_at, timer.cancelled_at) == (None, None)
        assert timer.due_at > utcnow()
        # The 50 % mark passes (60 more minutes of counted time): announced.
        await backdate(owner_db, incident["id"], timedelta(minutes=60))
        await fire_timer(app, desk, owner_db, incident, due=utcnow() - timedelta(seconds=10))
        assert ("sla_warning", "resolution", 50) in await announced(desk, incident)

    async def test_a_priority_raise_announces_the_retroactive_breach_at_once(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory, NO_CADENCE)
        incident = await desk.raise_incident(impact=3, urgency=3)  # P5: response 480 min
        await backdate(owner_db, incident["id"], timedelta(minutes=100))
        await drain(app)
        assert await announced(desk, incident) == []
        before_raise = utcnow()
        raised = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"impact": 1, "urgency": 1},
            headers=await desk.as_agent(),
        )
        assert raised.status_code == 200, raised.text
        await drain(app)
        assert ("sla_breached", "response", 100) in await announced(desk, incident)
        body = await sla(desk, incident)
        response = clock(body, "response")
        # Measured from the start under P1's 15 minutes; the breach is dated at the raise, not 85 minutes back.
        assert (response["status"], response["duration_seconds"]) == ("breached", 15 * 60)
        assert datetime.fromisoformat(response["breached_at"]) >= before_raise
        assert "priority changed (P5 -> P1" in response["explanation"]
        assert [p["priority"] for p in body["priority_history"]] == [5, 1]


class TestPriorityHistory:
    async def test_a_lowered_priority_keeps_the_breach_and_past_moments_are_reproducible(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory, NO_CADENCE)
        incident = await desk.raise_incident(impact=1, urgency=1)  # P1: response 15 min
        await backdate(owner_db, incident["id"], timedelta(minutes=30))
        await drain(app)
        lowered = await desk.client.patch(
            f"/api/v1/incidents/{incident['id']}",
            json={"impact": 3, "urgency": 3},
            headers=await desk.as_agent(),
        )
        assert lowered.status_code == 200, lowered.text
        await drain(app)
        opened = await opened_at(owner_db, incident)
        now = clock(await sla(desk, incident), "response")
        assert (now["status"], ts(now["breached_at"])) == ("breached", opened + timedelta(minutes=15))
        assert now["duration_seconds"] == 480 * 60  # the target in force now is P5's
        assert (await stored(owner_db, incident))["response"].status == "breached"  # reports keep it
        # As of 10 minutes in: P1, running, due at 15 minutes.
        then = clock(
            await sla(desk, incident, as_of=(opened + timedelta(minutes=10)).isoformat()), "response"
        )
        assert (then["status"], ts(then["due_at"]), then["duration_seconds"]) == (
            "running",
            opened + timedelta(minutes=15),
            15 * 60,
        )

    @pytest.mark.parametrize(
        "as_of",
        ["2025-01-01T00:00:00", "2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"],
    )
    async def test_bad_as_of(self, desk: Desk, factory: Factory, as_of: str) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)
        response = await desk.client.get(
            f"/api/v1/incidents/{incident['id']}/sla", params={"as_of": as_of}, headers=await desk.as_admin()
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


class TestUpdateCadence:
    async def test_missed_update_is_stored_timed_and_announced(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory)  # P1: a public update every 30 minutes
        incident = await desk.raise_incident(impact=1, urgency=1)
        await backdate(owner_db, incident["id"], timedelta(minutes=50))
        await comment(desk, incident, "internal")  # a work note is no update
        await drain(app)
        opened = await opened_at(owner_db, incident)
        body = await sla(desk, incident)
        cadence = body["update_cadence"]
        assert (cadence["status"], cadence["cycle"]) == ("breached", 0)
        assert ts(body["next_update_due_at"]) == opened + timedelta(minutes=30)  # overdue
        assert [ts(m["due_at"]) for m in body["missed_updates"]] == [opened + timedelta(minutes=30)]
        row = (await stored(owner_db, incident))["update"]
        assert (row.status, row.breached_at, row.duration_seconds) == (
            "breached",
            opened + timedelta(minutes=30),
            30 * 60,
        )
        assert [a for a in await announced(desk, incident) if a[1] == "update"] == [
            ("sla_breached", "update", 100),
            ("sla_warning", "update", 50),
            ("sla_warning", "update", 75),
        ]

        await comment(desk, incident, "public")  # a public update by staff starts the next cycle
        await drain(app)
        body = await sla(desk, incident)
        said = datetime.fromisoformat(body["update_cadence"]["cycle_started_at"])
        assert body["update_cadence"]["cycle"] == 1
        assert ts(body["next_update_due_at"]) == said + timedelta(minutes=30)
        assert (await stored(owner_db, incident))["update"].due_at == said + timedelta(minutes=30)
        # The timer looks again at the next cycle's first warning (50 % of 30 minutes).
        assert (await wake_timer(owner_db, incident)).due_at == said + timedelta(minutes=15)

    async def test_pauses_apply_to_the_cadence(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)
        await desk.move(incident, "on_hold", on_hold_reason="awaiting_caller")
        await backdate(owner_db, incident["id"], timedelta(minutes=50))
        await drain(app)
        cadence = (await sla(desk, incident))["update_cadence"]
        assert (cadence["status"], cadence["missed"], cadence["next_update_due_at"]) == ("paused", [], None)


class TestCalendars:
    async def test_editing_tenant_hours_does_not_rewrite_running_incidents_until_recalculated(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        all_week = {
            "hours": [{"weekday": d, "start": "00:00", "end": "24:00"} for d in range(7)],
            "holidays": [],
        }
        await set_tenant_calendar(owner_db, desk, all_week)
        await publish(desk, factory, {**NO_CADENCE, "calendar": "business_hours"})
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)  # the SLA starts: the calendar is pinned
        await backdate(owner_db, incident["id"], timedelta(minutes=20))
        await desk.move(incident, "in_progress")  # responded after 20 minutes: breached on 24x7
        await drain(app)
        assert clock(await sla(desk, incident), "response")["status"] == "breached"

        closed_now = {"hours": [{"weekday": (utcnow().weekday() + 3) % 7, "start": "00:00", "end": "01:00"}]}
        await set_tenant_calendar(owner_db, desk, {**closed_now, "holidays": []})
        body = await sla(desk, incident)
        assert (body["policy_version"], clock(body, "response")["status"]) == (1, "breached")
        assert body["calendar_definition"]["hours"] == all_week["hours"]

        headers = await admin_headers(desk, factory)
        window = {
            "opened_from": "2000-01-01T00:00:00Z",
            "opened_to": "2100-01-01T00:00:00Z",
            "policy_version": 1,
        }
        preview = (await desk.client.post("/api/v1/sla/recalculate", json=window, headers=headers)).json()
        change = next(c for c in preview["changes"] if c["target"] == "response")
        assert (change["policy_version_before"], change["before"]["status"], change["after"]["status"]) == (
            1,
            "breached",
            "met",
        )
        assert (
            clock(await sla(desk, incident), "response")["status"] == "breached"
        )  # a preview changes nothing
        applied = await desk.client.post(
            "/api/v1/sla/recalculate", json={**window, "apply": True}, headers=headers
        )
        assert applied.status_code == 200, applied.text
        # Same version, yet the stored results are refreshed under the calendar in force now.
        assert (await stored(owner_db, incident))["response"].status == "met"
        assert clock(await sla(desk, incident), "response")["status"] == "met"

    async def test_tenant_holidays_without_hours_close_the_day(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        today = utcnow().date()
        await set_tenant_calendar(
            owner_db, desk, {"hours": [], "holidays": [{"date": today.isoformat(), "name": "x"}]}
        )
        await publish(desk, factory, {**NO_CADENCE, "calendar": "business_hours"})
        incident = await desk.raise_incident(impact=1, urgency=1)
        body = await sla(desk, incident)
        response = clock(body, "response")
        assert body["calendar"] == "tenant business hours (UTC): 24x7 except holidays"
        assert response["elapsed_seconds"] == 0
        tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        assert ts(response["due_at"]) == tomorrow + timedelta(minutes=15)

    async def test_custom_calendar_with_holidays_and_no_hours(
        self, app: Litestar, desk: Desk, factory: Factory
    ) -> None:
        today = utcnow().date()
        custom = {"timezone": "UTC", "hours": [], "holidays": [{"date": today.isoformat(), "name": "x"}]}
        await publish(desk, factory, {**NO_CADENCE, "calendar": "custom", "custom_calendar": custom})
        incident = await desk.raise_incident(impact=1, urgency=1)
        response = clock(await sla(desk, incident), "response")
        tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        assert (response["elapsed_seconds"], ts(response["due_at"])) == (0, tomorrow + timedelta(minutes=15))


class TestBadInput:
    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "UTC",
                        "hours": [{"weekday": 0, "start": "08:00", "end": "17:00"}],
                        "holidays": [{"name": "Xmas"}],
                    },
                },
                "holidays",
            ),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "UTC",
                        "hours": [{"weekday": 0, "start": "08:00", "end": "17:00"}],
                        "holidays": [{"date": 20251225}],
                    },
                },
                "holidays",
            ),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {"timezone": "UTC", "hours": [], "holidays": ["not-a-date"]},
                },
                "holidays",
            ),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "localtime",
                        "hours": [{"weekday": 0, "start": "08:00", "end": "17:00"}],
                    },
                },
                "timezone",
            ),
            ({"name": "   "}, "name"),
            (
                {"pause_states": ["new", "assigned", "in_progress", "on_hold"], "pause_hold_reasons": None},
                "pause_states",
            ),
            (
                {
                    "calendar": "custom",
                    "custom_calendar": {
                        "timezone": "UTC",
                        "hours": [{"weekday": 0, "start": "00:00", "end": "00:01"}],
                    },
                    "targets": {"1": {"response_minutes": 525600, "resolution_minutes": 525600}},
                },
                "targets.1.response_minutes",
            ),
            (
                {"targets": {"1": {"response_minutes": 10, "resolution_minutes": 20, "update_minutes": 0}}},
                "update",
            ),
        ],
    )
    async def test_bad_policies(
        self, desk: Desk, factory: Factory, change: dict[str, Any], field: str
    ) -> None:
        started = utcnow()
        response = await desk.client.post(
            "/api/v1/sla/policies", json={**POLICY, **change}, headers=await admin_headers(desk, factory)
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert utcnow() - started < timedelta(seconds=5)
        assert any(field in e["field"] for e in response.json()["errors"]), response.json()
        assert (await desk.client.get("/api/v1/sla/policies", headers=await desk.as_admin())).json() == []

    async def test_business_hours_too_thin_for_the_targets(
        self, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await set_tenant_calendar(
            owner_db, desk, {"hours": [{"weekday": 0, "start": "00:00", "end": "00:01"}]}
        )
        response = await desk.client.post(
            "/api/v1/sla/policies",
            json={**POLICY, "calendar": "business_hours"},
            headers=await admin_headers(desk, factory),
        )
        assert response.status_code == 422, response.text
        assert "targets.5.resolution_minutes" in {e["field"] for e in response.json()["errors"]}

    @pytest.mark.parametrize(
        "body",
        [
            {"opened_from": "2000-01-01T00:00:00Z", "opened_to": "2100-01-01T00:00:00"},
            {"opened_from": "2000-01-01T00:00:00", "opened_to": "2100-01-01T00:00:00"},
            {"opened_from": "0001-01-01T00:00:00Z", "opened_to": "9999-12-31T23:59:59Z"},
            {"opened_from": "0001-01-01T00:00:00+14:00", "opened_to": "2100-01-01T00:00:00Z"},
            {"opened_from": "2000-01-01T00:00:00Z", "opened_to": "9999-12-31T23:00:00-05:00"},
            {
                "opened_from": "2000-01-01T00:00:00Z",
                "opened_to": "2100-01-01T00:00:00Z",
                "policy_version": 99999999999,
            },
            {"opened_from": "2000-01-01T00:00:00Z", "opened_to": "2100-01-01T00:00:00Z", "policy_version": 0},
            {"opened_from": "2000-01-01T00:00:00Z", "opened_to": "2100-01-01T00:00:00Z", "limit": 0},
            {"opened_from": "2000-01-01T00:00:00Z", "opened_to": "2100-01-01T00:00:00Z", "limit": 5000},
            {"opened_from": "2000-01-01T00:00:00Z", "opened_to": "2100-01-01T00:00:00Z", "cursor": "bm9wZQ"},
            {"opened_from": "2100-01-01T00:00:00Z", "opened_to": "2000-01-01T00:00:00Z"},
        ],
    )
    async def test_bad_recalculations(self, desk: Desk, factory: Factory, body: dict[str, Any]) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)
        response = await desk.client.post(
            "/api/v1/sla/recalculate",
            json={"policy_version": 1, "apply": True, **body},
            headers=await admin_headers(desk, factory),
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (await sla(desk, incident))["policy_version"] == 1


class TestRecalculation:
    async def test_due_time_changes_pages_and_the_version_before(
        self, app: Litestar, desk: Desk, factory: Factory
    ) -> None:
        await publish(desk, factory, NO_CADENCE)
        incidents = [await desk.raise_incident(impact=1, urgency=1) for _ in range(3)]
        await drain(app)
        await publish(
            desk,
            factory,
            {**NO_CADENCE, "targets": {"1": {"response_minutes": 5, "resolution_minutes": 240}}},
        )
        headers = await admin_headers(desk, factory)
        window = {
            "opened_from": "2000-01-01T00:00:00Z",
            "opened_to": "2100-01-01T00:00:00Z",
            "policy_version": 2,
            "limit": 2,
        }
        first = (await desk.client.post("/api/v1/sla/recalculate", json=window, headers=headers)).json()
        assert (first["examined"], first["applied"]) == (2, False)
        # Still running either way, but due 10 minutes sooner: a change.
        response_changes = [c for c in first["changes"] if c["target"] == "response"]
        assert [c["key"] for c in response_changes] == [i["key"] for i in incidents[:2]]
        for change in response_changes:
            assert change["before"]["status"] == change["after"]["status"] == "running"
            due_before = datetime.fromisoformat(change["before"]["due_at"])
            assert datetime.fromisoformat(change["after"]["due_at"]) == due_before - timedelta(minutes=10)
            assert change["policy_version_before"] == 1
        assert first["next_cursor"]
        second = await desk.client.post(
            "/api/v1/sla/recalculate",
            json={**window, "cursor": first["next_cursor"], "apply": True},
            headers=headers,
        )
        assert second.status_code == 200, second.text
        body = second.json()
        assert (body["examined"], body["next_cursor"]) == (1, None)
        assert {c["policy_version_before"] for c in body["changes"]} == {1}
        assert (await sla(desk, incidents[2]))["policy_version"] == 2
        assert (await sla(desk, incidents[0]))["policy_version"] == 1

    async def test_a_breach_announced_under_one_version_is_not_announced_again(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory, NO_CADENCE)
        incident = await desk.raise_incident(impact=1, urgency=1)
        await backdate(owner_db, incident["id"], timedelta(minutes=20))
        await comment(desk, incident)
        await drain(app)
        assert ("sla_breached", "response", 100) in await announced(desk, incident)
        await publish(desk, factory, NO_CADENCE)
        window = {
            "opened_from": "2000-01-01T00:00:00Z",
            "opened_to": "2100-01-01T00:00:00Z",
            "policy_version": 2,
        }
        applied = await desk.client.post(
            "/api/v1/sla/recalculate",
            json={**window, "apply": True},
            headers=await admin_headers(desk, factory),
        )
        assert applied.status_code == 200, applied.text
        await drain(app)
        assert [a for a in await announced(desk, incident) if a[0] == "sla_breached"] == [
            ("sla_breached", "response", 100)
        ]

    async def test_queries_do_not_grow_with_the_page(
        self, app: Litestar, desk: Desk, factory: Factory
    ) -> None:
        """Preview and apply read and write a page in a fixed number of statements, whatever its size (the
        ORM may split the stored rows' UPDATEs by the set of columns that changed: at most a few batches)."""
        await publish(desk, factory, NO_CADENCE)
        await publish(
            desk, factory, {**NO_CADENCE, "targets": {"1": {"response_minutes": 5, "resolution_minutes": 60}}}
        )
        headers = await admin_headers(desk, factory)
        engine = services_of(app).db.engine.sync_engine
        counts: dict[tuple[int, bool], int] = {}
        statements: list[str] = []

        def count(*args: Any) -> None:
            if "outbox_messages" not in str(args[2]):  # the relay, sending what the requests queued
                statements.append(str(args[2]))

        for size in (2, 10):
            start = utcnow()
            for _ in range(size):
                await desk.raise_incident(impact=1, urgency=1)
            await drain(app)  # their SLA started: results stored, calendar pinned
            window = {
                "opened_from": start.isoformat(),
                "opened_to": (utcnow() + timedelta(seconds=1)).isoformat(),
                "policy_version": 2,
            }
            for apply in (False, True):
                statements.clear()
                event.listen(engine, "before_cursor_execute", count)
                try:
                    response = await desk.client.post(
                        "/api/v1/sla/recalculate", json={**window, "apply": apply}, headers=headers
                    )
                finally:
                    event.remove(engine, "before_cursor_execute", count)
                assert response.status_code == 200, response.text
                assert response.json()["examined"] == size
                counts[(size, apply)] = len(statements)
        assert counts[(10, False)] == counts[(2, False)], counts
        assert counts[(10, True)] <= counts[(2, True)] + 2, counts
