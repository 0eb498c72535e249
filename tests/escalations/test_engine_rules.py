"""The escalation engine's rules, each pinned by the scenario that broke it: handovers, acknowledging stops
every escalation of an incident, no double pages, frozen ladders, levels with nobody to page, repeats,
people who lost access, SLA and after-hours triggers, and exactly once under duplicate delivery."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from tests.conftest import Factory
from tests.escalations.helpers import (
    SCHEDULES,
    closed_all_day,
    create_policy,
    drain,
    escalation_ids,
    escalations_of,
    events_of,
    ladder,
    make_due,
    open_all_week,
    pages_of,
    person,
    run_jobs,
    schedule_for,
    sweep,
    timers_of,
)
from tests.support.desk import Desk, set_tenant_calendar

from msp_platform.db.engine import Database
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.oncall import OncallSchedule, Page
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.timer import Timer
from msp_platform.models.user import User


def kinds(events: list[dict[str, Any]], *wanted: str) -> list[str]:
    return [e["type"] for e in events if e["type"] in wanted]


async def ack(desk: Desk, page: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await desk.client.post(
        f"/api/v1/pages/{page['id']}/acknowledge", headers=headers or await desk.as_agent()
    )


def who(desk: Desk, page: dict[str, Any]) -> str:
    return {str(desk.agent.id): "agent", str(desk.l3.id): "l3"}.get(page["staff_id"], "other")


# --- acknowledging takes the incident -------------------------------------------------------------------


async def test_acknowledging_an_unassigned_incident_assigns_it_to_whoever_acknowledged(
    app: Litestar, desk: Desk
) -> None:
    await create_policy(desk, ladder(desk))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    (page,) = await pages_of(desk, incident["id"])
    assert (await ack(desk, page)).status_code == 200
    taken = (
        await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=await desk.as_agent())
    ).json()
    assert (taken["assignee_id"], taken["state"]) == (str(desk.agent.id), "assigned")
    assert kinds(await desk.history(incident), "page_acknowledged", "assigned", "state_changed") == [
        "page_acknowledged",
        "assigned",
        "state_changed",
    ]


async def test_acknowledging_leaves_an_assignee_or_a_group_it_cannot_join_alone(
    app: Litestar, desk: Desk
) -> None:
    await create_policy(desk, ladder(desk))
    mine = await desk.raise_incident(await desk.as_l3(), impact=1, urgency=1, assignee_id=str(desk.l3.id))
    others = await desk.group("L3 only", tier=3, members=[desk.l3])
    grouped = await desk.raise_incident(
        await desk.as_l3(), impact=1, urgency=1, assignment_group_id=others["id"]
    )
    await drain(app)
    for incident in (mine, grouped):
        (page,) = await pages_of(desk, incident["id"])
        assert (await ack(desk, page)).status_code == 200
    taken = (await desk.client.get(f"/api/v1/incidents/{mine['id']}", headers=await desk.as_agent())).json()
    assert taken["assignee_id"] == str(desk.l3.id)
    # The agent is not a member of the incident's group: the page is acknowledged, the incident unassigned.
    kept = (await desk.client.get(f"/api/v1/incidents/{grouped['id']}", headers=await desk.as_agent())).json()
    assert kept["assignee_id"] is None
    assert [p["state"] for p in await pages_of(desk, grouped["id"])] == ["acknowledged"]


# --- handovers -------------------------------------------------------------------------------------------


async def test_a_last_level_paging_a_person_and_handing_over_fires_both(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    child = await create_policy(
        desk, ladder(desk, triggers=[], levels=[{"delay_minutes": 0, "targets": [person(desk.l3)]}])
    )
    await create_policy(
        desk,
        ladder(
            desk,
            levels=[
                {
                    "delay_minutes": 0,
                    "targets": [person(desk.agent), {"kind": "policy", "policy_id": child["id"]}],
                }
            ],
        ),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    await drain(app)  # the child's level 0 is due at once
    pages = await pages_of(desk, incident["id"])
    assert sorted(who(desk, p) for p in pages) == ["agent", "l3"]
    escalations = await escalations_of(desk, incident["id"])
    assert sorted((e["trigger"].split(":")[0], e["state"]) for e in escalations) == [
        ("created", "exhausted"),
        ("handover", "exhausted"),
    ]
    assert all(
        t.fired_at is not None and t.last_error is None for t in await timers_of(owner_db, incident["id"])
    )
    history = await events_of(desk, incident["id"])
    assert kinds(history, "escalation_started") == ["escalation_started", "escalation_started"]
    seqs = [e["seq"] for e in history]
    assert len(seqs) == len(set(seqs))


# --- acknowledging stops every escalation of the incident ---------------------------------------------------


async def test_two_triggers_of_one_policy_page_once_and_one_ack_stops_it(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await set_tenant_calendar(owner_db, desk, closed_all_day())
    await create_policy(
        desk,
        ladder(desk, triggers=[{"type": "incident_created", "priorities": [1]}, {"type": "after_hours"}]),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    escalations = await escalations_of(desk, incident["id"])
    assert [(e["trigger"], e["state"]) for e in escalations] == [("created+after_hours", "active")]
    pages = await pages_of(desk, incident["id"])
    assert [(p["level"], who(desk, p)) for p in pages] == [(0, "agent")]
    assert (await ack(desk, pages[0])).status_code == 200
    await make_due(owner_db, incident["id"])
    await sweep(app)
    assert [(p["level"], p["state"]) for p in await pages_of(desk, incident["id"])] == [(0, "acknowledged")]
    # The same event delivered again starts nothing new.
    await run_jobs(
        app,
        (
            "escalations.on_incident_event",
            {
                "tenant_id": desk.tenant.id,
                "event_id": str(uuid.uuid4()),
                "type": "incident.created",
                "occurred_at": utcnow().isoformat(),
                "payload": {"incident_id": incident["id"], "priority": 1, "data": {}},
            },
        ),
    )
    assert len(await escalations_of(desk, incident["id"])) == 1


async def set_priority(desk: Desk, incident: dict[str, Any], level: int) -> None:
    """Impact 1 and urgency ``level`` (1..3): the default matrix gives priority ``level``."""
    changed = await desk.client.patch(
        f"/api/v1/incidents/{incident['id']}",
        json={"impact": 1, "urgency": level},
        headers=await desk.as_agent(),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["priority"] == level


async def test_an_incident_raised_to_a_policys_priority_is_escalated_once(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await create_policy(desk, ladder(desk))  # P1 incidents page the agent, then L3 after 15 minutes
    incident = await desk.raise_incident(impact=3, urgency=3)
    await drain(app)
    assert await escalations_of(desk, incident["id"]) == []

    await set_priority(desk, incident, 2)  # from P5 to P2, still not a P1: nothing
    await drain(app)
    assert await escalations_of(desk, incident["id"]) == []

    await set_priority(desk, incident, 1)
    await drain(app)
    escalations = await escalations_of(desk, incident["id"])
    assert [(e["trigger"], e["state"]) for e in escalations] == [("raised", "active")]
    pages = await pages_of(desk, incident["id"])
    assert [(p["level"], who(desk, p)) for p in pages] == [(0, "agent")]
    assert kinds(await desk.history(incident), "priority_changed", "escalation_started", "paged") == [
        "priority_changed",
        "priority_changed",
        "escalation_started",
        "paged",
    ]

    # Lowered and raised again, acknowledged or not: the policy has already run for this incident.
    await set_priority(desk, incident, 3)
    await set_priority(desk, incident, 1)
    await drain(app)
    assert len(await escalations_of(desk, incident["id"])) == 1
    assert len(await pages_of(desk, incident["id"])) == 1


async def test_a_reopened_incident_is_escalated_again(app: Litestar, desk: Desk, owner_db: Database) -> None:
    await create_policy(desk, ladder(desk))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    (first,) = await pages_of(desk, incident["id"])
    assert (await ack(desk, first)).status_code == 200
    for state in ("in_progress", "resolved"):
        assert (await desk.move(incident, state)).status_code == 200
    # An hour later (past the window in which pages of one person for one incident are merged) the caller
    # says it is still down: the tenant reopens it, and the on-call engineer is paged again.
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Page)
            .where(Page.id == uuid.UUID(first["id"]))
            .values(created_at=utcnow() - timedelta(hours=1))
        )
        await session.commit()
    assert (await desk.move(incident, "in_progress", await desk.as_admin())).status_code == 200
    await drain(app)
    escalations = await escalations_of(desk, incident["id"])
    assert [(e["trigger"], e["state"]) for e in escalations] == [
        ("created", "resolved"),  # ended when the incident was resolved
        ("reopened:1", "active"),
    ]
    pages = await pages_of(desk, incident["id"])
    assert sorted((p["state"], who(desk, p)) for p in pages) == [
        ("acknowledged", "agent"),
        ("triggered", "agent"),
    ]

    # The resolution's job arrives again (or for the first time: jobs of one incident may run in any order,
    # and several workers run them at once). It ends what was running when the incident was resolved, never
    # the escalation of the reopening that came after it.
    (resolution,) = [
        e
        for e in await desk.history(incident)
        if e["type"] == "state_changed" and e["data"]["to"] == "resolved"
    ]
    await run_jobs(
        app,
        (
            "escalations.on_incident_event",
            {
                "tenant_id": desk.tenant.id,
                "event_id": resolution["id"],
                "type": "incident.state_changed",
                "occurred_at": resolution["occurred_at"],
                "payload": {
                    "incident_id": incident["id"],
                    "seq": resolution["seq"],
                    "data": resolution["data"],
                },
            },
        ),
    )
    escalations = await escalations_of(desk, incident["id"])
    assert [(e["trigger"], e["state"]) for e in escalations] == [
        ("created", "resolved"),
        ("reopened:1", "active"),
    ]
    pages = await pages_of(desk, incident["id"])
    assert sorted((p["state"], who(desk, p)) for p in pages) == [
        ("acknowledged", "agent"),
        ("triggered", "agent"),
    ]


async def test_an_incident_opened_at_the_priority_is_not_escalated_again_when_raised_back(
    app: Litestar, desk: Desk
) -> None:
    await create_policy(desk, ladder(desk))
    all_priorities = await create_policy(
        desk,
        ladder(
            desk,
            triggers=[{"type": "incident_created"}],
            levels=[{"delay_minutes": 0, "targets": [person(desk.l3)]}],
        ),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    await set_priority(desk, incident, 3)
    await set_priority(desk, incident, 1)
    await drain(app)
    escalations = await escalations_of(desk, incident["id"])
    # One each: the P1 policy from "created" (not again when raised back); the any-priority policy once.
    assert sorted(e["trigger"] for e in escalations) == ["created", "created"]
    assert {e["policy_id"] for e in escalations} >= {all_priorities["id"]}


async def test_two_policies_page_a_person_once_per_round_and_one_ack_stops_both(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await set_tenant_calendar(owner_db, desk, closed_all_day())
    await create_policy(desk, ladder(desk, name="P1 incidents", repeat_count=1))
    await create_policy(
        desk, ladder(desk, name="After hours", repeat_count=1, triggers=[{"type": "after_hours"}])
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert len(await escalations_of(desk, incident["id"])) == 2
    assert [(p["level"], who(desk, p)) for p in await pages_of(desk, incident["id"])] == [(0, "agent")]
    assert "pages_skipped" in kinds(await events_of(desk, incident["id"]), "pages_skipped")
    # Nobody answers: both ladders reach level 1 together, and L3 is paged once.
    await make_due(owner_db, incident["id"])
    await sweep(app)
    pages = await pages_of(desk, incident["id"])
    assert [(p["level"], who(desk, p)) for p in pages] == [(0, "agent"), (1, "l3")]
    assert (await ack(desk, pages[1], await desk.as_l3())).status_code == 200
    assert {e["state"] for e in await escalations_of(desk, incident["id"])} == {"acknowledged"}
    assert [p["state"] for p in await pages_of(desk, incident["id"])] == ["superseded", "acknowledged"]
    # Their next rounds are cancelled.
    await make_due(owner_db, incident["id"])
    await sweep(app)
    assert len(await pages_of(desk, incident["id"])) == 2


async def test_acknowledging_a_handed_over_page_stops_the_parent_too(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    child = await create_policy(
        desk,
        ladder(
            desk,
            triggers=[],
            levels=[
                {"delay_minutes": 0, "targets": [person(desk.l3)]},
                {"delay_minutes": 5, "targets": [person(desk.l3)]},
            ],
        ),
    )
    await create_policy(
        desk,
        ladder(
            desk,
            levels=[
                {"delay_minutes": 0, "targets": [{"kind": "policy", "policy_id": child["id"]}]},
                {"delay_minutes": 15, "targets": [person(desk.agent)]},
            ],
        ),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    await drain(app)
    pages = await pages_of(desk, incident["id"])
    assert [(p["level"], who(desk, p)) for p in pages] == [(0, "l3")]
    assert (await ack(desk, pages[0], await desk.as_l3())).status_code == 200
    await make_due(owner_db, incident["id"])
    await sweep(app)
    assert [(p["level"], who(desk, p)) for p in await pages_of(desk, incident["id"])] == [(0, "l3")]
    assert {e["state"] for e in await escalations_of(desk, incident["id"])} == {"acknowledged"}
    assert all(t.fired_at or t.cancelled_at for t in await timers_of(owner_db, incident["id"]))


# --- exactly once ----------------------------------------------------------------------------------------


async def test_a_level_delivered_twice_for_real_fires_once(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await create_policy(desk, ladder(desk))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    await make_due(owner_db, incident["id"])
    level1 = [t for t in await timers_of(owner_db, incident["id"]) if t.fired_at is None]
    assert [t.key for t in level1] == ["1:0"]
    fire = ("timers.fire", {"tenant_id": level1[0].tenant_id, "timer_id": str(level1[0].id)})
    await run_jobs(app, fire, fire, fire)  # three messages for one timer, run by two worker threads
    await run_jobs(app, fire)  # and a straggler afterwards
    async with owner_db.dangerously_unscoped_session() as session:
        rows = (
            await session.scalars(select(Page).where(Page.incident_id == uuid.UUID(incident["id"])))
        ).all()
    assert sorted((p.level, p.repeat) for p in rows) == [(0, 0), (1, 0)]
    assert kinds(await events_of(desk, incident["id"]), "paged") == ["paged", "paged"]


async def test_the_database_refuses_a_second_page_of_a_person_for_one_level(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await create_policy(desk, ladder(desk))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    (first,) = await pages_of(desk, incident["id"])
    async with owner_db.dangerously_unscoped_session() as session:
        session.add(
            Page(
                id=new_id(),
                tenant_id=desk.tenant.id,
                escalation_id=uuid.UUID(first["escalation_id"]),
                incident_id=uuid.UUID(incident["id"]),
                level=0,
                repeat=0,
                staff_id=desk.agent.id,
                user_id=None,
                state="triggered",
            )
        )
        with pytest.raises(IntegrityError):
            await session.commit()


# --- frozen ladders --------------------------------------------------------------------------------------


async def test_editing_or_deleting_a_policy_leaves_running_escalations_alone(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    three = [
        {"delay_minutes": 0, "targets": [person(desk.agent)]},
        {"delay_minutes": 15, "targets": [person(desk.l3)]},
        {"delay_minutes": 15, "targets": [person(desk.agent)]},
    ]
    policy = await create_policy(desk, ladder(desk, levels=three))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    shrunk = await desk.client.put(
        f"/api/v1/escalation-policies/{policy['id']}",
        json=ladder(desk, name=policy["name"], levels=[{"delay_minutes": 0, "targets": [person(desk.l3)]}]),
        headers=await desk.as_agent(),
    )
    assert shrunk.status_code == 200, shrunk.text
    gone = await desk.client.delete(
        f"/api/v1/escalation-policies/{policy['id']}", headers=await desk.as_agent()
    )
    assert gone.status_code == 204, gone.text
    for _ in range(2):
        await make_due(owner_db, incident["id"])
        await sweep(app)
    assert [(p["level"], who(desk, p)) for p in await pages_of(desk, incident["id"])] == [
        (0, "agent"),
        (1, "l3"),
        (2, "agent"),
    ]
    assert [e["state"] for e in await escalations_of(desk, incident["id"])] == ["exhausted"]
    # The deactivated policy starts nothing new.
    later = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert await escalations_of(desk, later["id"]) == []


# --- levels with nobody to page --------------------------------------------------------------------------


async def test_a_schedule_gap_is_recorded_and_the_next_level_fires_at_once(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    future = await schedule_for(desk, [desk.agent], start="2099-01-05T09:00:00Z", publish=False)
    # Published with a gap check from its start: nobody is on call before 2099.
    published = await desk.client.post(f"{SCHEDULES}/{future['id']}/publish", headers=await desk.as_agent())
    assert published.status_code == 409  # the gap check sees the gap...
    # ...so cover the check window with an override, publish, and let the override lapse before paging.
    now = utcnow()
    override = await desk.client.post(
        f"{SCHEDULES}/{future['id']}/overrides",
        json={
            "person": {"staff_id": str(desk.agent.id)},
            "start_at": (now - timedelta(days=1)).isoformat(),
            "end_at": (now + timedelta(days=60)).isoformat(),
        },
        headers=await desk.as_agent(),
    )
    assert override.status_code == 201, override.text
    assert (
        await desk.client.post(f"{SCHEDULES}/{future['id']}/publish", headers=await desk.as_agent())
    ).status_code == 200
    async with owner_db.dangerously_unscoped_session() as session:
        schedule = await session.get(OncallSchedule, (desk.tenant.id, uuid.UUID(future["id"])))
        assert schedule is not None
        assert schedule.published_snapshot is not None
        snapshot = dict(schedule.published_snapshot)
        snapshot["overrides"] = []  # the published override is over: a gap now
        schedule.published_snapshot = snapshot
        await session.commit()
    await create_policy(
        desk,
        ladder(
            desk,
            levels=[
                {"delay_minutes": 0, "targets": [{"kind": "schedule", "schedule_id": future["id"]}]},
                {"delay_minutes": 15, "targets": [person(desk.l3)]},
            ],
        ),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert [(p["level"], who(desk, p)) for p in await pages_of(desk, incident["id"])] == [(1, "l3")]
    history = await events_of(desk, incident["id"])
    (skipped,) = [e for e in history if e["type"] == "escalation_level_skipped"]
    assert skipped["data"]["level"] == 0
    assert "nobody is on call" in skipped["data"]["skipped"][0]["reason"]
    assert kinds(history, "escalation_exhausted") == ["escalation_exhausted"]


async def test_a_ladder_with_nobody_at_all_says_so_when_it_ends(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await create_policy(
        desk, ladder(desk, levels=[{"delay_minutes": 0, "targets": [{"kind": "tier_group", "tier": 2}]}])
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert await pages_of(desk, incident["id"]) == []
    history = await events_of(desk, incident["id"])
    (skipped,) = [e for e in history if e["type"] == "escalation_level_skipped"]
    assert "nobody of tier 2" in skipped["data"]["skipped"][0]["reason"]
    (exhausted,) = [e for e in history if e["type"] == "escalation_exhausted"]
    assert exhausted["data"]["paged_anyone"] is False
    assert "nobody was paged" in exhausted["data"]["reason"]


# --- repeats ---------------------------------------------------------------------------------------------


async def test_a_repeat_gives_the_last_level_its_own_delay(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await create_policy(desk, ladder(desk, repeat_count=1))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    await make_due(owner_db, incident["id"])
    await sweep(app)  # level 1 (the last) fires
    timers = {t.key: t for t in await timers_of(owner_db, incident["id"])}
    assert timers["1:0"].fired_at is not None
    assert timers["0:1"].fired_at is None
    assert timers["0:1"].due_at - timers["1:0"].due_at == timedelta(minutes=15)


# --- people without access -------------------------------------------------------------------------------


async def test_people_who_lost_access_are_skipped_with_a_reason(
    app: Litestar, desk: Desk, factory: Factory, owner_db: Database
) -> None:
    on_call = await schedule_for(desk, [desk.l3])
    await create_policy(
        desk,
        ladder(
            desk,
            levels=[
                {"delay_minutes": 0, "targets": [{"kind": "schedule", "schedule_id": on_call["id"]}]},
                {
                    "delay_minutes": 5,
                    "targets": [person(desk.l3), {"kind": "person", "user_id": str(desk.user.id)}],
                },
            ],
        ),
    )
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            delete(StaffGrant).where(
                StaffGrant.staff_id == desk.l3.id, StaffGrant.tenant_id == desk.tenant.id
            )
        )
        await session.execute(update(User).where(User.id == desk.user.id).values(active=False))
        await session.commit()
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert await pages_of(desk, incident["id"]) == []
    history = await events_of(desk, incident["id"])
    reasons = [
        s["reason"] for e in history if e["type"] == "escalation_level_skipped" for s in e["data"]["skipped"]
    ]
    assert any("no longer has access" in r for r in reasons), reasons
    assert any("deactivated" in r for r in reasons), reasons
    # The schedule no longer passes the gap check either: L3's shifts are gaps now.
    gaps = await desk.client.get(f"{SCHEDULES}/{on_call['id']}/gaps", headers=await desk.as_agent())
    assert gaps.json()["covered"] is False
    assert [p["staff_id"] for p in gaps.json()["unreachable"]] == [str(desk.l3.id)]
    republish = await desk.client.post(f"{SCHEDULES}/{on_call['id']}/publish", headers=await desk.as_agent())
    assert republish.status_code == 409
    assert republish.json()["unreachable"][0]["staff_id"] == str(desk.l3.id)


async def test_deactivated_staff_are_not_paged(app: Litestar, desk: Desk, owner_db: Database) -> None:
    await create_policy(
        desk, ladder(desk, levels=[{"delay_minutes": 0, "targets": [person(desk.agent), person(desk.l3)]}])
    )
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(update(StaffMember).where(StaffMember.id == desk.l3.id).values(active=False))
        await session.commit()
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert [who(desk, p) for p in await pages_of(desk, incident["id"])] == ["agent"]
    (skipped,) = [e for e in await events_of(desk, incident["id"]) if e["type"] == "pages_skipped"]
    assert skipped["data"]["skipped"][0]["who"] == f"staff:{desk.l3.id}"


# --- schedules: published versions only ------------------------------------------------------------------


async def test_only_published_schedules_are_targets_and_paging_uses_the_published_version(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    draft = await schedule_for(desk, [desk.agent], publish=False)
    refused = await desk.client.post(
        "/api/v1/escalation-policies",
        json=ladder(
            desk, levels=[{"delay_minutes": 0, "targets": [{"kind": "schedule", "schedule_id": draft["id"]}]}]
        ),
        headers=await desk.as_agent(),
    )
    assert refused.status_code == 422
    assert "not published" in refused.text
    published = await desk.client.post(f"{SCHEDULES}/{draft['id']}/publish", headers=await desk.as_agent())
    assert published.json()["published_version"] == 1
    await create_policy(
        desk,
        ladder(
            desk, levels=[{"delay_minutes": 0, "targets": [{"kind": "schedule", "schedule_id": draft["id"]}]}]
        ),
    )
    # An edit that is not published yet does not page: the agent (published) is paged, not L3 (draft).
    edited = await desk.client.put(
        f"{SCHEDULES}/{draft['id']}/layers",
        json={
            "layers": [
                {
                    "name": "Weekly",
                    "start_at": "2020-01-06T09:00:00Z",
                    "turn_length": {"count": 1, "unit": "weeks"},
                    "participants": [{"staff_id": str(desk.l3.id)}],
                }
            ]
        },
        headers=await desk.as_agent(),
    )
    assert edited.status_code == 200
    assert (edited.json()["version"], edited.json()["published_version"]) == (2, 1)
    first = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert [who(desk, p) for p in await pages_of(desk, first["id"])] == ["agent"]
    # Published again: L3 is on call for paging too.
    assert (
        await desk.client.post(f"{SCHEDULES}/{draft['id']}/publish", headers=await desk.as_agent())
    ).status_code == 200
    second = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert [who(desk, p) for p in await pages_of(desk, second["id"])] == ["l3"]


# --- after hours -----------------------------------------------------------------------------------------


async def test_after_hours_policies_stay_quiet_in_business_hours(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await set_tenant_calendar(owner_db, desk, open_all_week())
    await create_policy(desk, ladder(desk, triggers=[{"type": "after_hours"}]))
    incident = await desk.raise_incident(impact=3, urgency=3)
    await drain(app)
    assert await escalations_of(desk, incident["id"]) == []
    await set_tenant_calendar(owner_db, desk, closed_all_day())
    night = await desk.raise_incident(impact=3, urgency=3)
    await drain(app)
    assert [e["trigger"] for e in await escalations_of(desk, night["id"])] == ["after_hours"]


async def test_an_unreadable_calendar_counts_as_after_hours(
    app: Litestar, desk: Desk, owner_db: Database
) -> None:
    await set_tenant_calendar(owner_db, desk, open_all_week(), timezone="Mars/Olympus_Mons")
    await create_policy(desk, ladder(desk, triggers=[{"type": "after_hours"}]))
    incident = await desk.raise_incident(impact=3, urgency=3)
    await drain(app)
    assert [e["trigger"] for e in await escalations_of(desk, incident["id"])] == ["after_hours"]


# --- cursor pagination of escalations ----------------------------------------------------------------------


async def test_escalations_are_listed_a_page_at_a_time(app: Litestar, desk: Desk) -> None:
    for n in range(3):
        await create_policy(desk, ladder(desk, name=f"Parallel {n} {uuid.uuid4().hex[:4]}"))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"incident_id": incident["id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (
            await desk.client.get("/api/v1/escalations", params=params, headers=await desk.as_agent())
        ).json()
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 3
    assert sorted(seen) == sorted(str(i) for i in await escalation_ids(desk.factory.db, incident["id"]))


# --- SLA triggers, end to end ------------------------------------------------------------------------------


async def fire_sla_timer(app: Litestar, db: Database, incident_id: str) -> None:
    """The incident's SLA timer falls due now (its thresholds were planned before the backdating) and the
    sweep fires it: the SLA engine recomputes and announces what was passed."""
    async with db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Timer)
            .where(Timer.subject_id == uuid.UUID(incident_id), Timer.kind == "sla.threshold")
            .values(
                due_at=utcnow() - timedelta(seconds=5),
                lease_until=utcnow() - timedelta(seconds=1),
                fired_at=None,
                cancelled_at=None,
            )
        )
        await session.commit()
    await sweep(app)
    await drain(app)


async def test_sla_warning_and_breach_triggers_page_end_to_end(
    app: Litestar, desk: Desk, factory: Factory, owner_db: Database
) -> None:
    from tests.sla.test_sla_api import POLICY, backdate, publish

    await publish(desk, factory, POLICY)  # P1: a response within 15 minutes, warnings at 50 % and 75 %
    await create_policy(
        desk,
        ladder(
            desk,
            name="SLA warning",
            triggers=[{"type": "sla_warning", "percent": 60, "target": "response"}],
            levels=[{"delay_minutes": 0, "targets": [person(desk.agent)]}],
        ),
    )
    await create_policy(
        desk,
        ladder(
            desk,
            name="SLA breach",
            triggers=[{"type": "sla_breached", "target": "response"}],
            levels=[{"delay_minutes": 0, "targets": [person(desk.l3)]}],
        ),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert await escalations_of(desk, incident["id"]) == []
    # Eight minutes in: the 50 % warning, below the trigger's 60 %.
    await backdate(owner_db, incident["id"], timedelta(minutes=8))
    await fire_sla_timer(app, owner_db, incident["id"])
    assert [
        e["data"]["percent"] for e in await events_of(desk, incident["id"]) if e["type"] == "sla_warning"
    ] == [50]
    assert await escalations_of(desk, incident["id"]) == []
    # Twelve minutes in: 75 %, the first warning at or above 60 %, starts the policy.
    await backdate(owner_db, incident["id"], timedelta(minutes=4))
    await fire_sla_timer(app, owner_db, incident["id"])
    assert [e["trigger"] for e in await escalations_of(desk, incident["id"])] == ["sla_warning:response:60"]
    assert [(p["level"], who(desk, p)) for p in await pages_of(desk, incident["id"])] == [(0, "agent")]
    # Sixteen minutes in: breached. The breach policy pages L3; the warning policy does not start again.
    await backdate(owner_db, incident["id"], timedelta(minutes=4))
    await fire_sla_timer(app, owner_db, incident["id"])
    assert [e["trigger"] for e in await escalations_of(desk, incident["id"])] == [
        "sla_warning:response:60",
        "sla_breached:response",
    ]
    assert sorted(who(desk, p) for p in await pages_of(desk, incident["id"])) == ["agent", "l3"]


def sla_event(target: str, percent: int, *, cycle: int = 0, late: bool = False) -> dict[str, Any]:
    return {
        "incident_id": str(uuid.uuid4()),
        "data": {"target": target, "percent": percent, "cycle": cycle, "late": late},
    }


@pytest.mark.parametrize(
    ("trigger", "event", "payload", "key"),
    [
        ({"type": "sla_warning", "percent": 60}, "incident.sla_warning", sla_event("response", 50), None),
        (
            {"type": "sla_warning", "percent": 60},
            "incident.sla_warning",
            sla_event("response", 75),
            "sla_warning:response:60",
        ),
        (
            {"type": "sla_warning", "percent": 60},
            "incident.sla_warning",
            sla_event("resolution", 90),
            "sla_warning:resolution:60",
        ),
        # Late warnings (announced after an outage) page nobody; the breach still escalates.
        (
            {"type": "sla_warning", "percent": 60},
            "incident.sla_warning",
            sla_event("response", 75, late=True),
            None,
        ),
        (
            {"type": "sla_breached"},
            "incident.sla_breached",
            sla_event("response", 100, late=True),
            "sla_breached:response",
        ),
        # Missed public updates escalate only when asked for, each miss (cycle) anew.
        ({"type": "sla_breached"}, "incident.sla_breached", sla_event("update", 100, cycle=2), None),
        (
            {"type": "sla_breached", "target": "update"},
            "incident.sla_breached",
            sla_event("update", 100, cycle=2),
            "sla_breached:update:2",
        ),
        (
            {"type": "sla_breached", "target": "response"},
            "incident.sla_breached",
            sla_event("resolution", 100),
            None,
        ),
        ({"type": "sla_warning", "percent": 60}, "incident.sla_breached", sla_event("response", 100), None),
    ],
)
def test_sla_triggers_follow_the_sla_event_contract(
    trigger: dict[str, Any], event: str, payload: dict[str, Any], key: str | None
) -> None:
    from msp_platform.escalations.service import _matches

    assert _matches(trigger, event, payload, after_hours=False) == key


async def test_the_paging_access_check_agrees_with_authz(
    app: Litestar, factory: Factory, owner_db: Database
) -> None:
    """The firing path checks a few people in one statement; it must say what authz.staff_with_access says."""
    from msp_platform.authz.service import staff_with_access, system_tenant_context
    from msp_platform.db.session import set_tenant_context
    from msp_platform.escalations.repository import EscalationRepository
    from msp_platform.state import services_of

    group = await factory.tenant()
    hospital = await factory.tenant(parent=group)
    ward = await factory.tenant(parent=hospital)
    people = [
        await factory.staff(role="msp_admin", tier=None),
        await factory.staff(grants=[ward]),
        await factory.staff(grants=[group]),  # include_children: the group's hospitals and their wards
        await factory.staff(grants=[hospital]),
        await factory.staff(grants=[await factory.tenant()]),
        await factory.staff(),
    ]
    not_children = await factory.staff()
    gone = await factory.staff(grants=[ward])
    async with owner_db.dangerously_unscoped_session() as session:
        session.add(StaffGrant(staff_id=not_children.id, tenant_id=hospital.id, include_children=False))
        await session.execute(update(StaffMember).where(StaffMember.id == gone.id).values(active=False))
        await session.commit()
    ids = [p.id for p in [*people, not_children, gone]]
    for tenant in (group, hospital, ward):
        async with services_of(app).db.session() as session:
            await set_tenant_context(session, system_tenant_context(tenant.id))
            expected = {i for i in ids if i in await staff_with_access(session, tenant.id)}
            found = set(await EscalationRepository(session).staff_who_may_be_paged(tenant.id, ids))
            await session.rollback()
        assert found == expected, tenant.slug
    assert not_children.id not in found  # (ward) a grant without children stops at its tenant
