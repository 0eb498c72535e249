"""/api/v1/oncall/schedules through the API: hand-checked schedules, who is on call, gaps and publishing,
overrides, bad input, Idempotency-Key, versions. Feeds and the cross-tenant matrix: test_feeds_api.py."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from httpx import AsyncClient
from litestar import Litestar
from tests.conftest import Factory, Person
from tests.support.isolation import all_ids

from msp_platform.authz.service import system_tenant_context
from msp_platform.db.session import set_tenant_context
from msp_platform.models.tenant import Tenant
from msp_platform.oncall import service
from msp_platform.state import services_of

BASE = "/api/v1/oncall/schedules"
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ref(person: Person) -> dict[str, str]:
    return {"user_id": str(person.id)} if person.tenant_slug else {"staff_id": str(person.id)}


def key(ref_or_out: dict[str, Any]) -> str:
    if ref_or_out.get("staff_id"):
        return f"staff:{ref_or_out['staff_id']}"
    return f"user:{ref_or_out['user_id']}"


def layer(
    name: str,
    people: list[Person],
    start: datetime,
    *,
    count: int = 1,
    unit: str = "weeks",
    timezone: str | None = None,
    restrictions: list[dict[str, Any]] | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "start_at": iso(start),
        "turn_length": {"count": count, "unit": unit},
        "participants": [ref(p) for p in people],
    }
    if timezone is not None:
        body["timezone"] = timezone
    if restrictions:
        body["restrictions"] = restrictions
    if end is not None:
        body["end_at"] = iso(end)
    return body


class Env:
    def __init__(self, tenant: Tenant, headers: dict[str, str]) -> None:
        self.tenant = tenant
        self.headers = headers


async def make_env(factory: Factory) -> Env:
    tenant = await factory.tenant()
    agent = await factory.staff(role="msp_agent", grants=[tenant])
    return Env(tenant, await factory.headers(agent, tenant=tenant))


async def people(factory: Factory, env: Env, n: int) -> list[Person]:
    """Alternately staff granted the tenant and users of the tenant."""
    out: list[Person] = []
    for i in range(n):
        if i % 2:
            out.append(await factory.user(env.tenant))
        else:
            out.append(await factory.staff(grants=[env.tenant]))
    return out


async def create(
    client: AsyncClient, env: Env, layers: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    body = {"name": f"Schedule {uuid.uuid4().hex[:6]}", "layers": layers, **fields}
    response = await client.post(BASE, json=body, headers=env.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def final(
    client: AsyncClient, env: Env, sid: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{BASE}/{sid}/final", params={"from": iso(start), "to": iso(end)}, headers=env.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["shifts"])


async def on_call(client: AsyncClient, env: Env, sid: str, at: datetime) -> dict[str, Any] | None:
    response = await client.get(f"{BASE}/{sid}/on-call", params={"at": iso(at)}, headers=env.headers)
    assert response.status_code == 200, response.text
    shifts = response.json()["on_call"]
    assert len(shifts) <= 1
    return shifts[0] if shifts else None


async def who(client: AsyncClient, env: Env, sid: str, at: datetime) -> str | None:
    shift = await on_call(client, env, sid, at)
    return key(shift["person"]) if shift else None


def k(person: Person) -> str:
    return key(ref(person))


# --------------------------------------------------------------------------------------------------------
# Hand-checked schedules


async def test_twelve_person_weekly_rotation_keeps_local_handoffs_across_dst(
    factory: Factory, client: AsyncClient
) -> None:
    env = await make_env(factory)
    team = await people(factory, env, 12)
    first = ny(2024, 1, 1, 9)  # Monday 09:00 EST
    created = await create(
        client, env, [layer("Primary", team, first, timezone="America/New_York")], timezone="America/New_York"
    )
    assert created["version"] == 1
    assert created["published_at"] is None
    assert [key(p) for p in created["layers"][0]["participants"]] == [k(p) for p in team]
    assert created["layers"][0]["turn_length"] == {"count": 1, "unit": "weeks"}

    # 45 weeks: through the spring-forward (10 Mar) and fall-back (3 Nov) weekends.
    shifts = await final(client, env, created["id"], first, first + timedelta(weeks=45))
    assert len(shifts) == 45
    for i, shift in enumerate(shifts):
        start, end = parse(shift["start_at"]), parse(shift["end_at"])
        assert key(shift["person"]) == k(team[i % 12]), i
        assert shift["source"] == "layer"
        assert shift["layer_name"] == "Primary"
        assert shift["layer_id"] == created["layers"][0]["id"]
        local = start.astimezone(NEW_YORK)
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0), (i, local)
        hours = (end - start).total_seconds() / 3600
        if local.date() == datetime(2024, 3, 4).date():
            assert hours == 167  # the week the clocks go forward
        elif local.date() == datetime(2024, 10, 28).date():
            assert hours == 169  # the week they go back
        else:
            assert hours == 168
    # Each person once every 12 weeks.
    by_person: dict[str, list[datetime]] = {}
    for shift in shifts:
        by_person.setdefault(key(shift["person"]), []).append(parse(shift["start_at"]))
    assert set(by_person) == {k(p) for p in team}
    for starts in by_person.values():
        for a, b in pairwise(starts):
            assert (b.astimezone(NEW_YORK).date() - a.astimezone(NEW_YORK).date()).days == 84
    assert Counter(len(v) for v in by_person.values()) == {4: 9, 3: 3}
    names = {key(s["person"]): s["person"]["name"] for s in shifts}
    assert all(names.values())

    # The spring-forward handoff: Monday 11 March 09:00 EDT is 13:00 UTC (EST handoffs are at 14:00 UTC).
    assert await who(client, env, created["id"], utc(2024, 3, 11, 12, 59)) == k(team[9])
    assert await who(client, env, created["id"], utc(2024, 3, 11, 13, 0)) == k(team[10])
    shift = await on_call(client, env, created["id"], utc(2024, 3, 12))
    assert shift is not None
    assert (shift["start_at"], shift["end_at"]) == ("2024-03-11T13:00:00Z", "2024-03-18T13:00:00Z")
    assert await who(client, env, created["id"], utc(2023, 12, 31)) is None  # before the first handoff


async def test_nights_and_weekends_layer_over_a_daytime_layer(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    a, b, c, d = await people(factory, env, 4)
    day = layer("Daytime", [a, b], ny(2024, 4, 1, 8), timezone="America/New_York")
    nights = layer(
        "Nights and weekends",
        [c, d],
        ny(2024, 4, 1, 18),
        unit="days",
        timezone="America/New_York",
        restrictions=[
            {"kind": "daily", "start": "18:00", "end": "08:00"},
            {"kind": "weekly", "start_weekday": 4, "start": "18:00", "end_weekday": 0, "end": "08:00"},
        ],
    )
    created = await create(client, env, [day, nights], timezone="America/New_York")
    assert created["layers"][1]["restrictions"][1] == {
        "kind": "weekly",
        "start": "18:00",
        "end": "08:00",
        "start_weekday": 4,
        "end_weekday": 0,
    }
    sid = created["id"]
    expected = [
        (ny(2024, 4, 1, 12), a),  # Monday daytime: bottom layer
        (ny(2024, 4, 1, 20), c),  # Monday night: top layer's first daily turn (Mon 18:00 - Tue 18:00)
        (ny(2024, 4, 2, 3), c),  # still Monday's night
        (ny(2024, 4, 2, 10), a),  # Tuesday daytime
        (ny(2024, 4, 2, 20), d),  # Tuesday night: the second daily turn
        (ny(2024, 4, 5, 17), a),  # Friday before the weekend starts
        (ny(2024, 4, 6, 12), c),  # Saturday daytime: weekend window, Friday's turn (C) runs to Sat 18:00
        (ny(2024, 4, 6, 20), d),  # Saturday evening: Saturday's turn
        (ny(2024, 4, 7, 12), d),
        (ny(2024, 4, 7, 20), c),  # Sunday's turn
        (ny(2024, 4, 8, 7, 59), c),
        (ny(2024, 4, 8, 8), b),  # Monday 08:00: weekend over, second daytime week
    ]
    for at, person in expected:
        assert await who(client, env, sid, at) == k(person), at

    shifts = await final(client, env, sid, ny(2024, 4, 1, 8), ny(2024, 4, 2, 8))
    assert [(key(s["person"]), s["layer_name"], s["start_at"], s["end_at"]) for s in shifts] == [
        (k(a), "Daytime", "2024-04-01T12:00:00Z", "2024-04-01T22:00:00Z"),
        (k(c), "Nights and weekends", "2024-04-01T22:00:00Z", "2024-04-02T12:00:00Z"),
    ]
    weekend = await final(client, env, sid, ny(2024, 4, 5, 8), ny(2024, 4, 8, 12))
    assert [(key(s["person"]), s["start_at"], s["end_at"]) for s in weekend] == [
        (k(a), "2024-04-05T12:00:00Z", "2024-04-05T22:00:00Z"),
        (k(c), "2024-04-05T22:00:00Z", "2024-04-06T22:00:00Z"),
        (k(d), "2024-04-06T22:00:00Z", "2024-04-07T22:00:00Z"),
        (k(c), "2024-04-07T22:00:00Z", "2024-04-08T12:00:00Z"),
        (k(b), "2024-04-08T12:00:00Z", "2024-04-08T16:00:00Z"),
    ]


async def test_overrides_split_a_turn_and_the_last_created_wins(
    factory: Factory, client: AsyncClient
) -> None:
    env = await make_env(factory)
    a, b, c, d = await people(factory, env, 4)
    created = await create(client, env, [layer("Primary", [a, b], utc(2024, 5, 6, 9), timezone="UTC")])
    sid = created["id"]
    vacation = await client.post(
        f"{BASE}/{sid}/overrides",
        json={
            "person": ref(c),
            "start_at": "2024-05-08T12:00:00Z",
            "end_at": "2024-05-09T12:00:00Z",
            "reason": "A at a conference",
        },
        headers=env.headers,
    )
    assert vacation.status_code == 201, vacation.text
    override = vacation.json()
    assert key(override["person"]) == k(c)
    assert override["person"]["name"]
    assert override["created_by"].startswith("staff:")

    shifts = await final(client, env, sid, utc(2024, 5, 6, 9), utc(2024, 5, 14))
    assert [(key(s["person"]), s["source"], s["start_at"], s["end_at"]) for s in shifts] == [
        (k(a), "layer", "2024-05-06T09:00:00Z", "2024-05-08T12:00:00Z"),
        (k(c), "override", "2024-05-08T12:00:00Z", "2024-05-09T12:00:00Z"),
        (k(a), "layer", "2024-05-09T12:00:00Z", "2024-05-13T09:00:00Z"),
        (k(b), "layer", "2024-05-13T09:00:00Z", "2024-05-14T00:00:00Z"),
    ]
    assert shifts[1]["override_id"] == override["id"]
    assert shifts[1]["layer_id"] is None
    now_on = await on_call(client, env, sid, utc(2024, 5, 8, 13))
    assert now_on is not None
    assert (key(now_on["person"]), now_on["source"], now_on["override_id"]) == (
        k(c),
        "override",
        override["id"],
    )

    # Another person overlapping C's override: allowed, the later override wins where they overlap.
    later = await client.post(
        f"{BASE}/{sid}/overrides",
        json={"person": ref(d), "start_at": "2024-05-09T00:00:00Z", "end_at": "2024-05-09T06:00:00Z"},
        headers=env.headers,
    )
    assert later.status_code == 201, later.text
    # C again, adjacent to the first override: pieces keep their own override ids.
    adjacent = await client.post(
        f"{BASE}/{sid}/overrides",
        json={"person": ref(c), "start_at": "2024-05-09T12:00:00Z", "end_at": "2024-05-09T18:00:00Z"},
        headers=env.headers,
    )
    assert adjacent.status_code == 201, adjacent.text
    shifts = await final(client, env, sid, utc(2024, 5, 8), utc(2024, 5, 10))
    assert [
        (key(s["person"]), s["source"], s["start_at"], s["end_at"], s["override_id"]) for s in shifts
    ] == [
        (k(a), "layer", "2024-05-08T00:00:00Z", "2024-05-08T12:00:00Z", None),
        (k(c), "override", "2024-05-08T12:00:00Z", "2024-05-09T00:00:00Z", override["id"]),
        (k(d), "override", "2024-05-09T00:00:00Z", "2024-05-09T06:00:00Z", later.json()["id"]),
        (k(c), "override", "2024-05-09T06:00:00Z", "2024-05-09T12:00:00Z", override["id"]),
        (k(c), "override", "2024-05-09T12:00:00Z", "2024-05-09T18:00:00Z", adjacent.json()["id"]),
        (k(a), "layer", "2024-05-09T18:00:00Z", "2024-05-10T00:00:00Z", None),
    ]

    # Overlapping overrides of one person are refused, also against stored ones.
    clash = await client.post(
        f"{BASE}/{sid}/overrides",
        json={"person": ref(c), "start_at": "2024-05-09T17:00:00Z", "end_at": "2024-05-10T00:00:00Z"},
        headers=env.headers,
    )
    assert clash.status_code == 422, clash.text
    assert clash.json()["errors"][0]["field"] == "start_at"
    assert adjacent.json()["id"] in clash.json()["errors"][0]["message"]

    listed = await client.get(f"{BASE}/{sid}/overrides", headers=env.headers, params={"staff_id": str(c.id)})
    assert [o["id"] for o in listed.json()["items"]] == [override["id"], adjacent.json()["id"]]
    window = await client.get(
        f"{BASE}/{sid}/overrides",
        headers=env.headers,
        params={"from": "2024-05-09T06:00:00Z", "to": "2024-05-09T13:00:00Z"},
    )
    assert [o["id"] for o in window.json()["items"]] == [override["id"], adjacent.json()["id"]]
    got = await client.get(f"{BASE}/{sid}/overrides/{override['id']}", headers=env.headers)
    assert got.json()["reason"] == "A at a conference"

    # Removing the override gives the turn back to the layer.
    assert (
        await client.delete(f"{BASE}/{sid}/overrides/{override['id']}", headers=env.headers)
    ).status_code == 204
    assert await who(client, env, sid, utc(2024, 5, 8, 13)) == k(a)
    assert (
        await client.get(f"{BASE}/{sid}/overrides/{override['id']}", headers=env.headers)
    ).status_code == 404
    schedule = (await client.get(f"{BASE}/{sid}", headers=env.headers)).json()
    assert schedule["version"] == 1 + 3 + 1  # three overrides added, one removed


# --------------------------------------------------------------------------------------------------------
# Gaps, publishing, versions


async def test_gaps_refuse_publish_until_covered(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    a, b, c = await people(factory, env, 3)
    office = layer(
        "Office hours",
        [a, b],
        utc(2024, 1, 1),
        timezone="UTC",
        restrictions=[{"kind": "daily", "start": "08:00", "end": "18:00"}],
    )
    created = await create(client, env, [office])
    sid = created["id"]

    gaps = await client.get(f"{BASE}/{sid}/gaps", params={"weeks": 1}, headers=env.headers)
    assert gaps.status_code == 200, gaps.text
    report = gaps.json()
    assert report["covered"] is False
    assert report["weeks"] == 1
    assert 7 <= len(report["gaps"]) <= 8
    for gap in report["gaps"]:
        start, end = parse(gap["start_at"]), parse(gap["end_at"])
        assert gap["hours"] <= 14
        assert start.hour >= 18 or start.hour < 8 or start == parse(report["window_start"])
        assert end.hour == 8 or end == parse(report["window_end"])
    assert abs(report["total_gap_hours"] - sum(g["hours"] for g in report["gaps"])) < 0.1
    fixed = await client.get(
        f"{BASE}/{sid}/gaps", params={"weeks": 1, "from": "2024-06-03T08:00:00Z"}, headers=env.headers
    )
    assert [(g["start_at"], g["end_at"]) for g in fixed.json()["gaps"]][:2] == [
        ("2024-06-03T18:00:00Z", "2024-06-04T08:00:00Z"),
        ("2024-06-04T18:00:00Z", "2024-06-05T08:00:00Z"),
    ]
    assert fixed.json()["gaps"][0]["hours"] == 14

    refused = await client.post(f"{BASE}/{sid}/publish", params={"weeks": 2}, headers=env.headers)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"] == "/problems/oncall-coverage-gaps"
    assert problem["weeks"] == 2
    assert 14 <= len(problem["gaps"]) <= 15
    assert "unpublished" in problem["detail"]
    assert (await client.get(f"{BASE}/{sid}", headers=env.headers)).json()["published_at"] is None

    nights = layer(
        "Nights",
        [c],
        utc(2024, 1, 1, 18),
        unit="days",
        timezone="UTC",
        restrictions=[{"kind": "daily", "start": "18:00", "end": "08:00"}],
    )
    replaced = await client.put(
        f"{BASE}/{sid}/layers", json={"layers": [office, nights]}, headers=env.headers
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2
    assert [lyr["name"] for lyr in replaced.json()["layers"]] == ["Office hours", "Nights"]
    assert [lyr["position"] for lyr in replaced.json()["layers"]] == [0, 1]
    assert (await client.get(f"{BASE}/{sid}/gaps", headers=env.headers)).json()["covered"] is True

    published = await client.post(f"{BASE}/{sid}/publish", headers=env.headers)
    assert published.status_code == 200, published.text
    assert published.json()["published_at"] is not None
    assert published.json()["version"] == 2
    assert published.headers["etag"] == '"2"'
    listed = await client.get(BASE, params={"published": "true"}, headers=env.headers)
    assert sid in {s["id"] for s in listed.json()["items"]}

    # Any change unpublishes and bumps the version.
    override = await client.post(
        f"{BASE}/{sid}/overrides",
        json={"person": ref(c), "start_at": "2030-01-01T00:00:00Z", "end_at": "2030-01-02T00:00:00Z"},
        headers=env.headers,
    )
    assert override.status_code == 201
    after = (await client.get(f"{BASE}/{sid}", headers=env.headers)).json()
    assert (after["version"], after["published_at"]) == (3, None)
    assert sid not in await all_ids(client, BASE, env.headers, {"published": "true"})
    assert (await client.post(f"{BASE}/{sid}/publish", headers=env.headers)).status_code == 200
    renamed = await client.patch(f"{BASE}/{sid}", json={"description": "Service desk"}, headers=env.headers)
    assert (renamed.json()["version"], renamed.json()["published_at"]) == (4, None)
    assert renamed.json()["name"] == created["name"], "fields not sent must not change"

    # A layer that ends leaves a gap after its end.
    ending = await create(
        client,
        env,
        [layer("Temp", [a], utc(2024, 1, 1), timezone="UTC", end=datetime.now(UTC) + timedelta(days=3))],
    )
    report = (await client.get(f"{BASE}/{ending['id']}/gaps", headers=env.headers)).json()
    assert len(report["gaps"]) == 1
    assert parse(report["gaps"][0]["end_at"]) == parse(report["window_end"])
    assert parse(report["gaps"][0]["start_at"]) > datetime.now(UTC) + timedelta(days=2)


async def test_if_match_guards_against_lost_updates(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    (a,) = await people(factory, env, 1)
    created = await create(client, env, [layer("Primary", [a], utc(2024, 1, 1))])
    path = f"{BASE}/{created['id']}"
    got = await client.get(path, headers=env.headers)
    assert got.headers["etag"] == '"1"'
    ok = await client.patch(path, json={"name": "Renamed"}, headers={**env.headers, "If-Match": '"1"'})
    assert ok.status_code == 200
    stale = await client.patch(path, json={"name": "Again"}, headers={**env.headers, "If-Match": '"1"'})
    assert stale.status_code == 412, stale.text
    assert stale.json()["type"] == "/problems/precondition-failed"
    unchanged = await client.patch(path, json={"name": "Renamed"}, headers=env.headers)
    assert unchanged.json()["version"] == 2, "a PATCH that changes nothing is not a new version"
    gone = await client.delete(path, headers={**env.headers, "If-Match": '"2"'})
    assert gone.status_code == 204
    assert (await client.get(path, headers=env.headers)).status_code == 404
    assert (await client.get(f"{path}/final", headers=env.headers)).status_code == 404


async def test_on_call_now_for_the_escalation_engine(
    factory: Factory, client: AsyncClient, app: Litestar
) -> None:
    env = await make_env(factory)
    a, b = await people(factory, env, 2)
    created = await create(client, env, [layer("Primary", [a, b], utc(2024, 1, 1), unit="days")])
    sid = uuid.UUID(created["id"])
    other = await factory.tenant()
    async with services_of(app).db.session() as session:
        await set_tenant_context(session, system_tenant_context(env.tenant.id))
        first = await service.on_call_now(session, sid, utc(2024, 1, 1, 12))
        second = await service.on_call_now(session, sid, utc(2024, 1, 2, 12))
        before = await service.on_call_now(session, sid, utc(2023, 1, 1))
        assert first == [service.OnCallPerson(staff_id=a.id)]
        assert second == [service.OnCallPerson(user_id=b.id)]
        assert before == []
        assert len(await service.on_call_now(session, sid)) == 1
        await set_tenant_context(session, system_tenant_context(other.id))
        try:
            await service.on_call_now(session, sid, utc(2024, 1, 1, 12))
        except service.NotFound:
            pass
        else:
            raise AssertionError("another tenant's context must not find the schedule")
        await session.rollback()


# --------------------------------------------------------------------------------------------------------
# Bad input, idempotency, roles


async def test_bad_input_is_a_clear_422(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    a, b = await people(factory, env, 2)
    other = await factory.tenant()
    foreign_user = await factory.user(other)
    ungranted = await factory.staff(grants=[other])
    start = utc(2024, 1, 1)
    good = layer("Primary", [a, b], start)

    def with_layer(**changes: Any) -> dict[str, Any]:
        return {"name": "Bad", "layers": [{**good, **changes}]}

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"name": "Bad", "layers": []}, "layers", "at least one layer"),
        (with_layer(participants=[]), "layers[0].participants", "no participants"),
        (with_layer(participants=[ref(foreign_user)]), "layers[0].participants[0].user_id", "no such person"),
        (with_layer(participants=[ref(ungranted)]), "layers[0].participants[0].staff_id", "no such person"),
        (
            with_layer(participants=[{"staff_id": str(a.id), "user_id": str(b.id)}]),
            "layers[0].participants[0]",
            "exactly one",
        ),
        (
            with_layer(participants=[{"user_id": str(uuid.uuid4())}]),
            "layers[0].participants[0].user_id",
            "no such person",
        ),
        (with_layer(end_at=iso(start)), "layers[0].end_at", "must be after"),
        (with_layer(end_at=iso(start - timedelta(days=1))), "layers[0].end_at", "must be after"),
        ({**with_layer(), "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        (with_layer(timezone="Not/AZone"), "layers[0].timezone", "unknown time zone"),
        (with_layer(timezone="localtime"), "layers[0].timezone", "unknown time zone"),
        (with_layer(start_at="2024-01-01T09:00:00"), "layers[0].start_at", "UTC offset"),
        (
            with_layer(turn_length={"count": 0, "unit": "weeks"}),
            "layers[0].turn_length.count",
            "greater than zero",
        ),
        (with_layer(turn_length={"count": 1, "unit": "months"}), "layers[0].turn_length.unit", "hours, days"),
        (with_layer(turn_length={"count": 400, "unit": "days"}), "layers[0].turn_length.count", "at most"),
        (
            with_layer(restrictions=[{"kind": "daily", "start": "25:00", "end": "08:00"}]),
            "layers[0].restrictions[0].start",
            "time of day",
        ),
        (
            with_layer(restrictions=[{"kind": "daily", "start": "08:00", "end": "08:00"}]),
            "layers[0].restrictions[0]",
            "no length",
        ),
        (
            with_layer(restrictions=[{"kind": "monthly", "start": "08:00", "end": "18:00"}]),
            "layers[0].restrictions[0].kind",
            "daily' or 'weekly",
        ),
        (
            with_layer(
                restrictions=[
                    {"kind": "weekly", "start_weekday": 9, "start": "08:00", "end_weekday": 0, "end": "08:00"}
                ]
            ),
            "layers[0].restrictions[0].start_weekday",
            "weekday",
        ),
        (
            with_layer(
                restrictions=[{"kind": "daily", "start": "18:00", "end": "08:00", "start_weekday": 1}]
            ),
            "layers[0].restrictions[0].start_weekday",
            "every day",
        ),
        ({"name": "Bad", "layers": [good, good]}, "layers[1].name", "unique"),
        ({"name": "Bad", "layers": [{**good, "name": "override"}]}, "layers[0].name", "reserved"),
        ({"name": "  ", "layers": [good]}, "name", "empty"),
    ]
    for payload, field, message in cases:
        response = await client.post(BASE, json=payload, headers=env.headers)
        assert response.status_code == 422, (payload, response.text)
        errors = response.json()["errors"]
        assert any(e["field"] == field and message in e["message"] for e in errors), (field, errors)
        assert foreign_user.email not in response.text

    unknown_field = await client.post(
        BASE, json={**with_layer(), "tenant_id": str(other.id)}, headers=env.headers
    )
    assert unknown_field.status_code == 422
    assert "tenant_id" in unknown_field.text
    assert await all_ids(client, BASE, env.headers) == set(), "nothing was created"

    created = await create(client, env, [good], name="Primary")
    duplicate = await client.post(BASE, json={"name": "Primary", "layers": [good]}, headers=env.headers)
    assert duplicate.status_code == 422
    assert duplicate.json()["errors"][0]["field"] == "name"
    sid = created["id"]
    bad_patch = await client.patch(f"{BASE}/{sid}", json={"timezone": "Nowhere/Land"}, headers=env.headers)
    assert bad_patch.status_code == 422
    bad_layers = await client.put(f"{BASE}/{sid}/layers", json={"layers": []}, headers=env.headers)
    assert bad_layers.status_code == 422
    assert (await client.get(f"{BASE}/{sid}", headers=env.headers)).json()["version"] == 1

    override_cases: list[tuple[dict[str, Any], str]] = [
        ({"person": ref(a), "start_at": "2024-02-02T00:00:00Z", "end_at": "2024-02-01T00:00:00Z"}, "end_at"),
        ({"person": ref(a), "start_at": "2024-02-01T00:00:00Z", "end_at": "2024-02-01T00:00:00Z"}, "end_at"),
        ({"person": ref(a), "start_at": "2024-02-01T00:00:00", "end_at": "2024-02-02T00:00:00Z"}, "start_at"),
        (
            {
                "person": ref(foreign_user),
                "start_at": "2024-02-01T00:00:00Z",
                "end_at": "2024-02-02T00:00:00Z",
            },
            "person.user_id",
        ),
        ({"person": {}, "start_at": "2024-02-01T00:00:00Z", "end_at": "2024-02-02T00:00:00Z"}, "person"),
    ]
    for payload, field in override_cases:
        response = await client.post(f"{BASE}/{sid}/overrides", json=payload, headers=env.headers)
        assert response.status_code == 422, (payload, response.text)
        assert any(e["field"] == field for e in response.json()["errors"]), response.json()

    windows = [
        ("final", {"from": "2024-02-02T00:00:00Z", "to": "2024-02-01T00:00:00Z"}, "to"),
        ("final", {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ("final", {"from": "2024-01-01T00:00:00", "to": "2024-01-02T00:00:00Z"}, "from"),
        ("on-call", {"at": "2024-01-01T00:00:00"}, "at"),
    ]
    for endpoint, params, field in windows:
        response = await client.get(f"{BASE}/{sid}/{endpoint}", params=params, headers=env.headers)
        assert response.status_code == 422, (endpoint, params, response.text)
        assert any(e["field"] == field for e in response.json()["errors"]), response.json()
    for weeks in ("0", "53", "x"):
        response = await client.get(f"{BASE}/{sid}/gaps", params={"weeks": weeks}, headers=env.headers)
        assert response.status_code in {400, 422}, response.text
        assert response.headers["content-type"] == "application/problem+json"
        publish = await client.post(f"{BASE}/{sid}/publish", params={"weeks": weeks}, headers=env.headers)
        assert publish.status_code in {400, 422}, publish.text


async def test_idempotency_key_replays_a_create(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    (a,) = await people(factory, env, 1)
    body = {"name": "Replayed", "layers": [layer("Primary", [a], utc(2024, 1, 1))]}
    keyed = {**env.headers, "Idempotency-Key": f"create-schedule-{uuid.uuid4()}"}
    first = await client.post(BASE, json=body, headers=keyed)
    assert first.status_code == 201, first.text
    again = await client.post(BASE, json=body, headers=keyed)
    assert again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert await all_ids(client, BASE, env.headers) == {first.json()["id"]}
    other_body = await client.post(BASE, json={**body, "name": "Different"}, headers=keyed)
    assert other_body.status_code == 422
    assert other_body.json()["type"] == "/problems/idempotency-key-reused"

    sid = first.json()["id"]
    override = {"person": ref(a), "start_at": "2024-03-01T00:00:00Z", "end_at": "2024-03-02T00:00:00Z"}
    keyed_override = {**env.headers, "Idempotency-Key": f"override-{uuid.uuid4()}"}
    one = await client.post(f"{BASE}/{sid}/overrides", json=override, headers=keyed_override)
    two = await client.post(f"{BASE}/{sid}/overrides", json=override, headers=keyed_override)
    assert one.status_code == two.status_code == 201
    assert one.json()["id"] == two.json()["id"]
    assert (await client.get(f"{BASE}/{sid}", headers=env.headers)).json()["version"] == 2


async def test_who_may_read_and_write(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    (a,) = await people(factory, env, 1)
    created = await create(client, env, [layer("Primary", [a], utc(2024, 1, 1))])
    # Tenant admins read their tenant's coverage (oncall:read) but cannot change it; tenant users see
    # nothing of it (auth/scopes.py): 403 insufficient-scope.
    admin = await factory.user(env.tenant, role="tenant_admin")
    admin_headers = await factory.headers(admin)
    assert created["id"] in await all_ids(client, BASE, admin_headers)
    assert (await client.get(f"{BASE}/{created['id']}", headers=admin_headers)).status_code == 200
    refused = await client.post(BASE, headers=admin_headers, json={})
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == "/problems/insufficient-scope"
    user = await factory.user(env.tenant, role="tenant_user")
    user_headers = await factory.headers(user)
    for method, path in (("GET", BASE), ("GET", f"{BASE}/{created['id']}"), ("POST", BASE)):
        response = await client.request(
            method, path, headers=user_headers, json={} if method == "POST" else None
        )
        assert response.status_code == 403, response.text
        assert response.json()["type"] == "/problems/insufficient-scope"
    # Staff without MSP-Tenant read across their tenants but must name the tenant to write.
    agent = await factory.staff(grants=[env.tenant])
    no_tenant = await factory.headers(agent)
    assert (await client.get(f"{BASE}/{created['id']}", headers=no_tenant)).status_code == 200
    assert created["id"] in await all_ids(client, BASE, no_tenant)
    write = await client.patch(f"{BASE}/{created['id']}", json={"name": "x"}, headers=no_tenant)
    assert write.status_code == 400
    assert "MSP-Tenant" in write.json()["detail"]
