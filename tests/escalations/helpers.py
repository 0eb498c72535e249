"""Helpers of the escalation tests: policies through the API, running the in-process broker, fast-forwarding
timers, and reading what happened (pages, escalations, the incident's log)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from litestar import Litestar
from sqlalchemy import select, update
from tests.support.desk import Desk
from tests.support.jobs import drain

from msp_platform.db.engine import Database
from msp_platform.kit.time import utcnow
from msp_platform.models.oncall import Escalation
from msp_platform.models.timer import Timer
from msp_platform.state import services_of
from msp_platform.worker.outbox import PENDING_KEY, enqueue, send_after_commit

SCHEDULES = "/api/v1/oncall/schedules"


def ladder(desk: Desk, **overrides: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "name": f"P1 ladder {uuid.uuid4().hex[:6]}",
        "triggers": [{"type": "incident_created", "priorities": [1]}],
        "levels": [
            {"delay_minutes": 0, "targets": [{"kind": "person", "staff_id": str(desk.agent.id)}]},
            {"delay_minutes": 15, "targets": [{"kind": "person", "staff_id": str(desk.l3.id)}]},
        ],
    }
    policy.update(overrides)
    return policy


def person(who: Any) -> dict[str, str]:
    return {"kind": "person", "staff_id": str(who.id)}


async def create_policy(desk: Desk, policy: dict[str, Any]) -> dict[str, Any]:
    response = await desk.client.post(
        "/api/v1/escalation-policies", json=policy, headers=await desk.as_agent()
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def pages_of(desk: Desk, incident_id: str) -> list[dict[str, Any]]:
    response = await desk.client.get(
        "/api/v1/pages", params={"incident_id": incident_id, "limit": 100}, headers=await desk.as_agent()
    )
    assert response.status_code == 200, response.text
    return sorted(response.json()["items"], key=lambda p: (p["repeat"], p["level"], p["created_at"]))


async def escalations_of(desk: Desk, incident_id: str) -> list[dict[str, Any]]:
    response = await desk.client.get(
        "/api/v1/escalations", params={"incident_id": incident_id}, headers=await desk.as_agent()
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def events_of(desk: Desk, incident_id: str) -> list[dict[str, Any]]:
    response = await desk.client.get(f"/api/v1/incidents/{incident_id}/events", headers=await desk.as_agent())
    assert response.status_code == 200, response.text
    body = response.json()
    return list(body["items"] if isinstance(body, dict) else body)


async def escalation_ids(db: Database, incident_id: str) -> list[uuid.UUID]:
    async with db.dangerously_unscoped_session() as session:
        return list(
            (
                await session.scalars(
                    select(Escalation.id).where(Escalation.incident_id == uuid.UUID(incident_id))
                )
            ).all()
        )


async def timers_of(db: Database, incident_id: str) -> list[Timer]:
    ids = await escalation_ids(db, incident_id)
    async with db.dangerously_unscoped_session() as session:
        return list(
            (
                await session.scalars(select(Timer).where(Timer.subject_id.in_(ids)).order_by(Timer.due_at))
            ).all()
        )


async def make_due(db: Database, incident_id: str) -> None:
    """Fast-forward: every pending escalation timer of the incident becomes due now, and its message is
    presumed lost (its lease is over), as after a broker outage."""
    ids = await escalation_ids(db, incident_id)
    async with db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Timer)
            .where(Timer.subject_id.in_(ids), Timer.fired_at.is_(None), Timer.cancelled_at.is_(None))
            .values(due_at=utcnow() - timedelta(seconds=5), lease_until=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def run_jobs(app: Litestar, *jobs: tuple[str, dict[str, Any]]) -> None:
    """Queue jobs through the outbox, as a commit would, and run everything ready."""
    services = services_of(app)
    async with services.db.session() as session:
        session.info["unscoped"] = True
        for actor_name, kwargs in jobs:
            enqueue(session, actor_name, **kwargs)
        pending = list(session.info.pop(PENDING_KEY))
        await session.commit()
    await send_after_commit(services.broker, services.db.sessionmaker, pending)
    await drain(app)


async def sweep(app: Litestar) -> None:
    """What the periodic sweep does after a broker outage: re-queue overdue timers, then run them."""
    await run_jobs(app, ("timers.sweep", {}))


def closed_all_day() -> dict[str, Any]:
    """Business hours on one weekday that is not today (nor tomorrow): closed now, whatever the time."""
    other_day = (utcnow().weekday() + 3) % 7
    return {"hours": [{"weekday": other_day, "start": "08:00", "end": "17:00"}]}


def open_all_week() -> dict[str, Any]:
    return {"hours": [{"weekday": d, "start": "00:00", "end": "24:00"} for d in range(7)]}


async def schedule_for(
    desk: Desk, people: list[Any], *, publish: bool = True, start: str = "2020-01-06T09:00:00Z"
) -> dict[str, Any]:
    body = {
        "name": f"Schedule {uuid.uuid4().hex[:6]}",
        "timezone": "UTC",
        "layers": [
            {
                "name": "Weekly",
                "start_at": start,
                "turn_length": {"count": 1, "unit": "weeks"},
                "participants": [{"staff_id": str(p.id)} for p in people],
            }
        ],
    }
    created = await desk.client.post(SCHEDULES, json=body, headers=await desk.as_agent())
    assert created.status_code == 201, created.text
    if not publish:
        return dict(created.json())
    published = await desk.client.post(
        f"{SCHEDULES}/{created.json()['id']}/publish", headers=await desk.as_agent()
    )
    assert published.status_code == 200, published.text
    return dict(published.json())
