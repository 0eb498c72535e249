"""``msp serve --demo``: the demo's data makes SLA and escalation work out of the box. A P1 raised at St. Mary's
gets the clocks of the policy in tenants/st-marys.yaml and pages whoever is on call."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient
from sqlalchemy import func, select
from tests.conftest import serving
from tests.support.echo import Captured
from tests.support.jobs import drain

from msp_platform.app import create_app
from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.demo import DEMO_AGENTS, DEMO_ESCALATION, DEMO_SCHEDULE, DEMO_TENANT, prepare_demo
from msp_platform.models.oncall import EscalationPolicy, OncallSchedule
from msp_platform.models.sla import SlaPolicy
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant


async def _counts(settings: Settings) -> dict[str, int]:
    db = Database.create(settings)
    try:
        async with db.dangerously_unscoped_session() as session:
            tenant_id = await session.scalar(select(Tenant.id).where(Tenant.slug == DEMO_TENANT))
            out: dict[str, int] = {}
            for name, model in {
                "staff": StaffMember,
                "grants": StaffGrant,
                "schedules": OncallSchedule,
                "escalation_policies": EscalationPolicy,
                "sla_policies": SlaPolicy,
            }.items():
                query = select(func.count()).select_from(model)
                if model is not StaffMember:
                    query = query.where(model.tenant_id == tenant_id)
                out[name] = int(await session.scalar(query) or 0)
            return out
    finally:
        await db.dispose()


async def _sign_in(http: AsyncClient, body: dict[str, str]) -> dict[str, str]:
    response = await http.post("/api/v1/auth/sign-in", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _get(http: AsyncClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = await http.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_demo_p1_gets_sla_clocks_and_pages_the_on_call_engineer(fresh: Settings) -> None:
    out = Captured()
    credentials = await prepare_demo(fresh, echo=out)
    assert f"+ on-call schedule {DEMO_SCHEDULE!r} (published)" in out.text
    assert f"+ escalation policy {DEMO_ESCALATION!r}" in out.text
    assert '+ sla_policy "St. Mary\'s clinical support 24x7" (version 1)' in out.text
    made = await _counts(fresh)
    assert made["schedules"] == made["escalation_policies"] == made["sla_policies"] == 1
    assert made["grants"] == len(DEMO_AGENTS)

    again = Captured()
    assert await prepare_demo(fresh, echo=again) == credentials
    assert not [line for line in again.lines if line.lstrip().startswith(("+", "~", "!"))], again.text
    assert "SLA policies: 0 created, 0 new versions, 4 unchanged" in again.text
    assert await _counts(fresh) == made, "running the demo again creates nothing"

    app = create_app(fresh)
    async with serving(app) as http:
        nurse = await _sign_in(
            http,
            {
                "email": credentials["tenant_admin_email"],
                "password": credentials["tenant_admin_password"],
                "tenant": DEMO_TENANT,
            },
        )
        msp = await _sign_in(
            http, {"email": credentials["msp_admin_email"], "password": credentials["msp_admin_password"]}
        )
        msp["MSP-Tenant"] = DEMO_TENANT

        created = await http.post(
            "/api/v1/incidents",
            json={"title": "EHR down in the Emergency Department", "impact": 1, "urgency": 1},
            headers=nurse,
        )
        assert created.status_code == 201, created.text
        incident = created.json()
        assert incident["priority"] == 1

        sla = await _get(http, f"/api/v1/incidents/{incident['id']}/sla", nurse)
        assert sla["policy_version"] == 1
        assert sla["calendar"] == "24x7"
        durations = {c["target"]: c["duration_seconds"] for c in sla["clocks"]}
        assert durations == {"response": 15 * 60, "resolution": 4 * 3600}, "the targets of st-marys.yaml"
        assert sla["update_cadence_minutes"] == 30

        await drain(app)  # the bus event starts the escalation; its level 0 timer is due at once

        escalations = (await _get(http, "/api/v1/escalations", msp, incident_id=incident["id"]))["items"]
        assert [(e["state"], e["trigger"]) for e in escalations] == [("active", "created")]
        (schedule,) = (await _get(http, "/api/v1/oncall/schedules", msp))["items"]
        assert schedule["name"] == DEMO_SCHEDULE
        assert schedule["published_at"] is not None
        now = await _get(http, f"/api/v1/oncall/schedules/{schedule['id']}/on-call", msp)
        (on_call,) = [shift["person"]["staff_id"] for shift in now["on_call"]]
        pages = (await _get(http, "/api/v1/pages", msp, incident_id=incident["id"]))["items"]
        assert [(p["level"], p["staff_id"], p["state"]) for p in pages] == [(0, on_call, "triggered")]
        names = {name for _, name, tier in DEMO_AGENTS if tier < 3}
        assert now["on_call"][0]["person"]["name"] in names
