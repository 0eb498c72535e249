"""What the escalation engine relies on from schedules: instants stay in range (a 422, never a 500),
publishing freezes the version that pages, and people who cannot be paged fail the gap check."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from httpx import AsyncClient
from litestar import Litestar
from sqlalchemy import update
from tests.conftest import Factory
from tests.oncall.test_schedules_api import BASE, create, layer, make_env, people, ref, utc

from msp_platform.authz.service import system_tenant_context
from msp_platform.db.session import set_tenant_context
from msp_platform.models.staff import StaffGrant
from msp_platform.models.user import User
from msp_platform.oncall import service
from msp_platform.state import services_of


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("final", {"from": "9999-12-30T00:00:00Z"}, "from"),
        ("final", {"from": "2024-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}, "to"),
        ("on-call", {"at": "9999-12-31T00:00:00Z"}, "at"),
        ("on-call", {"at": "0001-01-01T00:00:00Z"}, "at"),
        ("gaps", {"from": "9999-12-01T00:00:00Z", "weeks": 4}, "from"),
        ("overrides", {"from": "0001-01-01T00:00:00Z"}, "from"),
        ("final", {"from": "2024-01-01T00:00:00"}, "from"),
    ],
)
async def test_absurd_or_naive_instants_in_queries_are_a_422(
    factory: Factory, client: AsyncClient, path: str, params: dict[str, object], field: str
) -> None:
    env = await make_env(factory)
    team = await people(factory, env, 2)
    schedule = await create(client, env, [layer("L", team, utc(2024, 1, 1), timezone="UTC")])
    response = await client.get(f"{BASE}/{schedule['id']}/{path}", params=params, headers=env.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}


@pytest.mark.parametrize("start", [datetime(1, 1, 2), datetime(9999, 12, 25), datetime(1899, 12, 31)])
async def test_layers_and_overrides_outside_1900_to_9000_are_refused(
    factory: Factory, client: AsyncClient, start: datetime
) -> None:
    from datetime import UTC

    env = await make_env(factory)
    team = await people(factory, env, 2)
    schedule = await create(client, env, [layer("L", team, utc(2024, 1, 1), timezone="UTC")])
    aware = start.replace(tzinfo=UTC)
    replaced = await client.put(
        f"{BASE}/{schedule['id']}/layers",
        json={"layers": [layer("Odd", team, aware, count=1, unit="hours", timezone="UTC")]},
        headers=env.headers,
    )
    assert replaced.status_code == 422, replaced.text
    assert "layers[0].start_at" in {e["field"] for e in replaced.json()["errors"]}
    override = await client.post(
        f"{BASE}/{schedule['id']}/overrides",
        json={
            "person": ref(team[0]),
            "start_at": aware.isoformat(),
            "end_at": (aware + timedelta(hours=1)).isoformat(),
        },
        headers=env.headers,
    )
    assert override.status_code == 422, override.text
    unchanged = (await client.get(f"{BASE}/{schedule['id']}", headers=env.headers)).json()
    assert unchanged["version"] == 1
    assert [lay["name"] for lay in unchanged["layers"]] == ["L"]


async def test_someone_who_cannot_be_paged_fails_the_gap_check(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    user, staff = (await people(factory, env, 2))[::-1]
    schedule = await create(
        client, env, [layer("Pair", [user, staff], utc(2024, 1, 1), count=1, unit="days", timezone="UTC")]
    )
    assert (await client.post(f"{BASE}/{schedule['id']}/publish", headers=env.headers)).status_code == 200
    async with factory.db.dangerously_unscoped_session() as session:
        await session.execute(update(User).where(User.id == user.id).values(active=False))
        await session.commit()
    gaps = (await client.get(f"{BASE}/{schedule['id']}/gaps", headers=env.headers)).json()
    assert gaps["covered"] is False
    assert [p["user_id"] for p in gaps["unreachable"]] == [str(user.id)]
    assert 13 <= len(gaps["gaps"]) <= 15  # every other day over four weeks
    republish = await client.post(f"{BASE}/{schedule['id']}/publish", headers=env.headers)
    assert republish.status_code == 409
    body = republish.json()
    assert body["type"] == "/problems/oncall-coverage-gaps"
    assert "cannot be paged" in body["detail"]
    assert body["unreachable"][0]["user_id"] == str(user.id)
    # Staff whose grant is revoked likewise.
    async with factory.db.dangerously_unscoped_session() as session:
        await session.execute(update(User).where(User.id == user.id).values(active=True))
        await session.execute(
            StaffGrant.__table__.delete().where(
                StaffGrant.staff_id == staff.id, StaffGrant.tenant_id == env.tenant.id
            )
        )
        await session.commit()
    gaps = (await client.get(f"{BASE}/{schedule['id']}/gaps", headers=env.headers)).json()
    assert [p["staff_id"] for p in gaps["unreachable"]] == [str(staff.id)]


async def test_paging_uses_the_published_version(
    factory: Factory, client: AsyncClient, app: Litestar
) -> None:
    env = await make_env(factory)
    a, b = await people(factory, env, 2)
    draft = await create(client, env, [layer("Solo", [a], utc(2024, 1, 1), timezone="UTC")])
    sid = uuid.UUID(draft["id"])
    async with services_of(app).db.session() as session:
        await set_tenant_context(session, system_tenant_context(env.tenant.id))
        never = await service.paging_on_call(session, sid, utc(2025, 1, 1))
        assert never.people == []
        assert "never been published" in (never.reason or "")
        await session.rollback()
    published = await client.post(f"{BASE}/{draft['id']}/publish", headers=env.headers)
    assert (published.json()["version"], published.json()["published_version"]) == (1, 1)
    edited = await client.put(
        f"{BASE}/{draft['id']}/layers",
        json={"layers": [layer("Solo", [b], utc(2024, 1, 1), timezone="UTC")]},
        headers=env.headers,
    )
    assert (edited.json()["published_at"], edited.json()["published_version"]) == (None, 1)
    async with services_of(app).db.session() as session:
        await set_tenant_context(session, system_tenant_context(env.tenant.id))
        answer = await service.paging_on_call(session, sid, utc(2025, 1, 1))
        assert answer.people == [service.OnCallPerson(staff_id=a.id)]
        assert answer.version == 1
        gone = await service.paging_on_call(session, uuid.uuid4(), utc(2025, 1, 1))
        assert gone.people == []
        assert gone.reason == "the schedule was deleted"
        await session.rollback()
