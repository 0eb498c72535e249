"""Escalation policies and the engine: triggers, levels on durable timers, pages, acknowledgement."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import select
from tests.conftest import Factory
from tests.escalations.helpers import (
    closed_all_day,
    create_policy,
    drain,
    escalations_of,
    events_of,
    ladder,
    make_due,
    pages_of,
    sweep,
)
from tests.sla.test_sla_api import POLICY, backdate, publish
from tests.support.desk import Desk, set_tenant_calendar

from msp_platform.db.engine import Database
from msp_platform.models.oncall import Page


class TestPolicies:
    async def test_create_and_read(self, desk: Desk) -> None:
        created = await create_policy(desk, ladder(desk, repeat_count=2))
        assert [lv["delay_minutes"] for lv in created["levels"]] == [0, 15]
        assert created["levels"][1]["targets"][0]["staff_id"] == str(desk.l3.id)
        fetched = await desk.client.get(
            f"/api/v1/escalation-policies/{created['id']}", headers=await desk.as_agent()
        )
        assert fetched.json() == created

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"levels": []}, "levels"),
            ({"levels": [{"delay_minutes": 0, "targets": []}]}, "levels"),
            (
                {"levels": [{"delay_minutes": -1, "targets": [{"kind": "tier_group", "tier": 1}]}]},
                "delay_minutes",
            ),
            ({"levels": [{"delay_minutes": 0, "targets": [{"kind": "person"}]}]}, "levels[0].targets[0]"),
            (
                {
                    "levels": [
                        {
                            "delay_minutes": 0,
                            "targets": [{"kind": "schedule", "schedule_id": str(uuid.uuid4())}],
                        }
                    ]
                },
                "schedule_id",
            ),
            (
                {
                    "levels": [
                        {"delay_minutes": 0, "targets": [{"kind": "person", "user_id": str(uuid.uuid4())}]}
                    ]
                },
                "user_id",
            ),
            ({"levels": [{"delay_minutes": 0, "targets": [{"kind": "tier_group"}]}]}, "tier"),
            ({"triggers": [{"type": "sla_warning"}]}, "triggers[0].percent"),
            ({"triggers": [{"type": "meteor_strike"}]}, "type"),
        ],
    )
    async def test_bad_policies(self, desk: Desk, change: dict[str, Any], field: str) -> None:
        response = await desk.client.post(
            "/api/v1/escalation-policies", json=ladder(desk, **change), headers=await desk.as_agent()
        )
        assert response.status_code == 422, response.text
        assert field in response.text

    async def test_people_of_other_tenants_and_ungranted_staff_are_unknown(
        self, desk: Desk, factory: Factory
    ) -> None:
        other = await factory.tenant()
        stranger = await factory.user(other)
        outsider = await factory.staff(grants=[other])
        for target in (
            {"kind": "person", "user_id": str(stranger.id)},
            {"kind": "person", "staff_id": str(outsider.id)},
        ):
            response = await desk.client.post(
                "/api/v1/escalation-policies",
                json=ladder(desk, levels=[{"delay_minutes": 0, "targets": [target]}]),
                headers=await desk.as_agent(),
            )
            assert response.status_code == 422
            assert "no such person" in response.text

    async def test_handover_cycles_are_refused(self, desk: Desk) -> None:
        a = await create_policy(desk, ladder(desk, triggers=[]))
        b = await create_policy(
            desk,
            ladder(
                desk,
                triggers=[],
                levels=[{"delay_minutes": 0, "targets": [{"kind": "policy", "policy_id": a["id"]}]}],
            ),
        )
        closing = await desk.client.put(
            f"/api/v1/escalation-policies/{a['id']}",
            json=ladder(
                desk,
                name=a["name"],
                triggers=[],
                levels=[{"delay_minutes": 0, "targets": [{"kind": "policy", "policy_id": b["id"]}]}],
            ),
            headers=await desk.as_agent(),
        )
        assert closing.status_code == 422
        assert "cycle" in closing.text
        unchanged = (
            await desk.client.get(f"/api/v1/escalation-policies/{a['id']}", headers=await desk.as_agent())
        ).json()
        assert unchanged["levels"][0]["targets"][0]["kind"] == "person"


class TestEngine:
    async def test_levels_fire_in_order_unless_acknowledged(
        self, app: Litestar, desk: Desk, owner_db: Database
    ) -> None:
        await create_policy(desk, ladder(desk))
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        pages = await pages_of(desk, incident["id"])
        assert [(p["level"], p["staff_id"], p["state"]) for p in pages] == [
            (0, str(desk.agent.id), "triggered")
        ]
        # Nobody acknowledges; 15 minutes pass.
        await make_due(owner_db, incident["id"])
        await sweep(app)
        pages = await pages_of(desk, incident["id"])
        assert [(p["level"], p["staff_id"]) for p in pages] == [(0, str(desk.agent.id)), (1, str(desk.l3.id))]
        escalations = await escalations_of(desk, incident["id"])
        assert [e["state"] for e in escalations] == ["exhausted"]
        history = await events_of(desk, incident["id"])
        assert [
            e["type"] for e in history if e["type"] in ("escalation_started", "paged", "escalation_exhausted")
        ] == [
            "escalation_started",
            "paged",
            "paged",
            "escalation_exhausted",
        ]
        tenant_view = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}/events", headers=await desk.as_admin())
        ).json()["items"]
        assert not [e for e in tenant_view if e["type"] == "paged"], "pages are internal"

    async def test_acknowledgement_stops_further_levels(
        self, app: Litestar, desk: Desk, owner_db: Database
    ) -> None:
        await create_policy(desk, ladder(desk))
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        page = (await pages_of(desk, incident["id"]))[0]
        ack = await desk.client.post(f"/api/v1/pages/{page['id']}/acknowledge", headers=await desk.as_agent())
        assert ack.status_code == 200, ack.text
        assert ack.json()["state"] == "acknowledged"
        again = await desk.client.post(
            f"/api/v1/pages/{page['id']}/acknowledge", headers=await desk.as_agent()
        )
        assert again.status_code == 409
        await make_due(owner_db, incident["id"])
        await sweep(app)
        assert [p["level"] for p in await pages_of(desk, incident["id"])] == [0]
        history = await events_of(desk, incident["id"])
        assert "page_acknowledged" in [e["type"] for e in history]

    async def test_only_the_paged_person_or_staff_acknowledge(
        self, app: Litestar, desk: Desk, factory: Factory
    ) -> None:
        await create_policy(desk, ladder(desk))
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        page = (await pages_of(desk, incident["id"]))[0]
        refused = await desk.client.post(
            f"/api/v1/pages/{page['id']}/acknowledge", headers=await desk.as_admin()
        )
        assert refused.status_code == 403

    async def test_resolving_the_incident_ends_its_escalations(
        self, app: Litestar, desk: Desk, owner_db: Database
    ) -> None:
        await create_policy(desk, ladder(desk))
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        await desk.move(incident, "resolved")
        await drain(app)
        await make_due(owner_db, incident["id"])
        await sweep(app)
        assert [p["level"] for p in await pages_of(desk, incident["id"])] == [0]
        escalations = await escalations_of(desk, incident["id"])
        assert [e["state"] for e in escalations] == ["resolved"]

    async def test_other_priorities_do_not_trigger(self, app: Litestar, desk: Desk) -> None:
        await create_policy(desk, ladder(desk))
        incident = await desk.raise_incident(impact=3, urgency=3)
        await drain(app)
        assert await pages_of(desk, incident["id"]) == []

    async def test_repeats_go_round_the_ladder_again(
        self, app: Litestar, desk: Desk, owner_db: Database
    ) -> None:
        await create_policy(
            desk,
            ladder(
                desk,
                repeat_count=1,
                levels=[
                    {"delay_minutes": 0, "targets": [{"kind": "person", "staff_id": str(desk.agent.id)}]}
                ],
            ),
        )
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        await make_due(owner_db, incident["id"])
        await sweep(app)
        assert [(p["repeat"], p["level"]) for p in await pages_of(desk, incident["id"])] == [(0, 0), (1, 0)]

    async def test_tier_groups_page_granted_staff_of_that_tier(
        self, app: Litestar, desk: Desk, factory: Factory
    ) -> None:
        other = await factory.tenant()
        ungranted_l3 = await factory.staff(tier=3, grants=[other])
        await create_policy(
            desk, ladder(desk, levels=[{"delay_minutes": 0, "targets": [{"kind": "tier_group", "tier": 3}]}])
        )
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        paged = {p["staff_id"] for p in await pages_of(desk, incident["id"])}
        assert str(desk.l3.id) in paged
        assert str(ungranted_l3.id) not in paged
        assert str(desk.agent.id) not in paged

    async def test_sla_breach_triggers(
        self, app: Litestar, desk: Desk, factory: Factory, owner_db: Database
    ) -> None:
        await publish(desk, factory, POLICY)
        await create_policy(desk, ladder(desk, triggers=[{"type": "sla_breached", "target": "response"}]))
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        assert await pages_of(desk, incident["id"]) == []
        await backdate(owner_db, incident["id"], timedelta(minutes=20))
        await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/comments",
            json={"body": "still broken"},
            headers=await desk.as_admin(),
        )
        await drain(app)
        await drain(app)
        pages = await pages_of(desk, incident["id"])
        assert [p["level"] for p in pages] == [0]
        escalations = await escalations_of(desk, incident["id"])
        assert [e["trigger"] for e in escalations] == ["sla_breached:response"]

    async def test_after_hours_routing(self, app: Litestar, desk: Desk, owner_db: Database) -> None:
        await set_tenant_calendar(owner_db, desk, closed_all_day())
        await create_policy(desk, ladder(desk, triggers=[{"type": "after_hours"}]))
        incident = await desk.raise_incident(impact=3, urgency=3)
        await drain(app)
        assert [p["level"] for p in await pages_of(desk, incident["id"])] == [0]

    async def test_a_level_fires_once_however_often_its_timer_is_delivered(
        self, app: Litestar, desk: Desk, owner_db: Database
    ) -> None:
        await create_policy(desk, ladder(desk))
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        await make_due(owner_db, incident["id"])
        for _ in range(5):
            await sweep(app)
        async with owner_db.dangerously_unscoped_session() as session:
            rows = (
                await session.scalars(select(Page).where(Page.incident_id == uuid.UUID(incident["id"])))
            ).all()
        assert sorted((p.level, p.repeat) for p in rows) == [(0, 0), (1, 0)]


async def test_cross_tenant_matrix(app: Litestar, desk: Desk, factory: Factory) -> None:
    from tests.support.isolation import assert_isolated

    policy = await create_policy(desk, ladder(desk))
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    page = (await pages_of(desk, incident["id"]))[0]
    other = await factory.tenant()
    outsider_admin = await factory.staff(role="msp_admin", tier=None)
    headers = await factory.headers(outsider_admin, tenant=other)
    await assert_isolated(
        desk.client,
        headers,
        foreign_paths=[f"/api/v1/escalation-policies/{policy['id']}"],
        deletable=True,
        lists=["/api/v1/escalation-policies"],
        foreign_ids=[policy["id"]],
        secrets=[policy["name"]],
    )
    for action in ("acknowledge", "resolve"):
        assert (
            await desk.client.post(f"/api/v1/pages/{page['id']}/{action}", headers=headers)
        ).status_code == 404
    assert (
        await desk.client.get("/api/v1/pages", params={"incident_id": incident["id"]}, headers=headers)
    ).json()["items"] == []
