"""/api/v1/me/oncall: one person's shifts across every schedule and tenant they can see (calendar, JSON
list, subscription URLs), and what must never be in it: other tenants, never-published drafts, people
whose access ended."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient
from icalendar import Calendar
from sqlalchemy import delete, update
from tests.conftest import BASE_URL, Factory, Person
from tests.oncall.test_feeds_api import FEEDS, _payload, _with_payload, events, fetch, path_of, today
from tests.oncall.test_schedules_api import BASE, Env, create, layer

from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant
from msp_platform.oncall.ical import shift_uid

ME = "/api/v1/me/oncall"


def day0() -> datetime:
    """Every rotation here starts two weeks ago at 00:00 UTC with one-day turns."""
    return today() - timedelta(days=14)


def every_other_day(offset: int) -> list[datetime]:
    """Starts of the daily turns of the participant at ``offset`` (0 or 1) of a two-person rotation, within
    the feed window (7 days back to 12 weeks ahead = days 7..97 after day0)."""
    return [day0() + timedelta(days=d) for d in range(7, 7 + 7 + 84) if d % 2 == offset]


async def agent_env(factory: Factory, tenant: Tenant) -> Env:
    agent = await factory.staff(role="msp_agent", grants=[tenant])
    return Env(tenant, await factory.headers(agent, tenant=tenant))


async def published(
    client: AsyncClient, env: Env, name: str, participants: list[Person], *, publish: bool = True
) -> dict[str, Any]:
    created = await create(
        client,
        env,
        [layer("Primary", participants, day0(), unit="days", timezone="UTC")],
        name=name,
        timezone="UTC",
    )
    if publish:
        answer = await client.post(f"{BASE}/{created['id']}/publish", headers=env.headers)
        assert answer.status_code == 200, answer.text
    return created


def by_start(body: bytes) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """Summary -> [(start, end, uid)] in time order."""
    out: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for e in events(body):
        out.setdefault(str(e["SUMMARY"]), []).append((e.start, e.end, str(e["UID"])))
    return out


@dataclass
class World:
    """me: an agent granted A and B, in published daily rotations of both (and of a draft in A); put in C's
    rotation while granted C, then the grant on C was removed."""

    a: Tenant
    b: Tenant
    c: Tenant
    env_a: Env
    env_b: Env
    env_c: Env
    me: Person
    a_user: Person
    sched_a: dict[str, Any]
    sched_b: dict[str, Any]
    sched_c: dict[str, Any]
    draft: dict[str, Any]
    me_headers: dict[str, str]
    secrets: list[str]


async def make_world(factory: Factory, client: AsyncClient, owner_db: Any) -> World:
    suffix = uuid.uuid4().hex[:6]
    a = await factory.tenant(name=f"Alpha Clinic {suffix}")
    b = await factory.tenant(name=f"Beta Labs {suffix}")
    c = await factory.tenant(name=f"Gamma Secret {suffix}")
    env_a, env_b, env_c = (
        await agent_env(factory, a),
        await agent_env(factory, b),
        await agent_env(factory, c),
    )
    me = await factory.staff(role="msp_agent", grants=[a, b, c])
    a_user = await factory.user(a, role="tenant_admin")
    b_mate = await factory.staff(grants=[b])
    c_mate = await factory.staff(grants=[c])
    # me is first (days 0, 2, 4, ...) in A and B: the two schedules' shifts start at the same instants.
    sched_a = await published(client, env_a, f"Network {suffix}", [me, a_user])
    sched_b = await published(client, env_b, f"Lab systems {suffix}", [me, b_mate])
    sched_c = await published(client, env_c, f"Gamma Oncall Secret {suffix}", [me, c_mate])
    draft = await published(client, env_a, f"Draft {suffix}", [me], publish=False)
    # me loses the grant on C after being put in C's schedule.
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            delete(StaffGrant).where(StaffGrant.staff_id == me.id, StaffGrant.tenant_id == c.id)
        )
        await session.commit()
    me_headers = await factory.headers(me)  # no MSP-Tenant: the personal calendar spans every tenant
    return World(
        a=a,
        b=b,
        c=c,
        env_a=env_a,
        env_b=env_b,
        env_c=env_c,
        me=me,
        a_user=a_user,
        sched_a=sched_a,
        sched_b=sched_b,
        sched_c=sched_c,
        draft=draft,
        me_headers=me_headers,
        secrets=[c.name, sched_c["name"], sched_c["id"], str(c_mate.id), draft["name"]],
    )


def summary(schedule: dict[str, Any], tenant: Tenant, source: str = "Primary") -> str:
    return f"On call: {schedule['name']} ({tenant.name}, {source})"


async def test_staff_calendar_unites_schedules_of_every_granted_tenant(
    factory: Factory, client: AsyncClient, owner_db: Any
) -> None:
    w = await make_world(factory, client, owner_db)
    response = await client.get(f"{ME}/calendar.ics", headers=w.me_headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    for secret in w.secrets:
        assert secret not in response.text

    got = by_start(response.content)
    in_a, in_b = summary(w.sched_a, w.a), summary(w.sched_b, w.b)
    assert set(got) == {in_a, in_b}
    expected = [(s, s + timedelta(days=1)) for s in every_other_day(0)]
    assert len(expected) == 45
    assert [(s, e) for s, e, _ in got[in_a]] == expected
    assert [(s, e) for s, e, _ in got[in_b]] == expected
    # Same instants in two schedules, still one event each: UIDs are per (schedule, person, start).
    uids = [uid for entries in got.values() for _, _, uid in entries]
    assert len(uids) == len(set(uids)) == 90
    first = expected[0][0]
    me_key = f"staff:{w.me.id}"
    assert got[in_a][0][2] == shift_uid(f"me:{me_key}:schedule:{w.sched_a['id']}", me_key, first)
    assert got[in_b][0][2] == shift_uid(f"me:{me_key}:schedule:{w.sched_b['id']}", me_key, first)
    calendar = Calendar.from_ical(response.content)
    assert calendar["X-WR-CALNAME"] == f"{w.me.email}: on call"

    # Stable: the same bytes again (conditional GET), so clients update events rather than duplicate them.
    again = await client.get(
        f"{ME}/calendar.ics", headers={**w.me_headers, "If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    # MSP-Tenant neither narrows nor widens it.
    with_header = await client.get(f"{ME}/calendar.ics", headers={**w.me_headers, "MSP-Tenant": str(w.a.id)})
    assert with_header.status_code == 200
    assert with_header.content == response.content

    # An override in A (someone else covering one of my days) takes that day out of my A shifts only.
    day = every_other_day(0)[3]
    override = await client.post(
        f"{BASE}/{w.sched_a['id']}/overrides",
        json={
            "person": {"user_id": str(w.a_user.id)},
            "start_at": day.isoformat(),
            "end_at": (day + timedelta(days=1)).isoformat(),
        },
        headers=w.env_a.headers,
    )
    assert override.status_code == 201, override.text
    assert (
        await client.post(f"{BASE}/{w.sched_a['id']}/publish", headers=w.env_a.headers)
    ).status_code == 200
    after = by_start((await client.get(f"{ME}/calendar.ics", headers=w.me_headers)).content)
    assert [s for s, _, _ in after[in_a]] == [s for s, _ in expected if s != day]
    assert [s for s, _, _ in after[in_b]] == [s for s, _ in expected]
    # Kept UIDs for the shifts that did not change.
    assert {uid for _, _, uid in after[in_a]} < {uid for _, _, uid in got[in_a]}


async def test_drafts_are_left_out_and_an_edited_schedule_keeps_its_published_version(
    factory: Factory, client: AsyncClient, owner_db: Any
) -> None:
    w = await make_world(factory, client, owner_db)
    b_mate_only = (await client.get(f"{BASE}/{w.sched_b['id']}", headers=w.env_b.headers)).json()
    other = b_mate_only["layers"][0]["participants"][1]
    # Take me out of B's layer: B is now an unpublished edit; its published version (with me) stays in force.
    replaced = await client.put(
        f"{BASE}/{w.sched_b['id']}/layers",
        json={
            "layers": [
                {
                    "name": "Primary",
                    "start_at": day0().isoformat(),
                    "turn_length": {"count": 1, "unit": "days"},
                    "timezone": "UTC",
                    "participants": [{"staff_id": other["staff_id"]}],
                }
            ]
        },
        headers=w.env_b.headers,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["published_at"] is None
    got = by_start((await client.get(f"{ME}/calendar.ics", headers=w.me_headers)).content)
    assert set(got) == {summary(w.sched_a, w.a), summary(w.sched_b, w.b)}
    assert len(got[summary(w.sched_b, w.b)]) == 45
    assert w.draft["name"] not in str(got)
    # Publishing the edit takes effect.
    assert (
        await client.post(f"{BASE}/{w.sched_b['id']}/publish", headers=w.env_b.headers)
    ).status_code == 200
    got = by_start((await client.get(f"{ME}/calendar.ics", headers=w.me_headers)).content)
    assert set(got) == {summary(w.sched_a, w.a)}


async def test_tenant_user_gets_only_their_tenant(
    factory: Factory, client: AsyncClient, owner_db: Any
) -> None:
    w = await make_world(factory, client, owner_db)
    headers = await factory.headers(w.a_user)
    response = await client.get(f"{ME}/calendar.ics", headers=headers)
    assert response.status_code == 200, response.text
    got = by_start(response.content)
    assert set(got) == {summary(w.sched_a, w.a)}
    assert [s for s, _, _ in got[summary(w.sched_a, w.a)]] == every_other_day(1)
    for secret in [*w.secrets, w.b.name, w.sched_b["name"]]:
        assert secret not in response.text

    listed = await client.get(
        f"{ME}/shifts",
        params={"from": day0().isoformat(), "to": (day0() + timedelta(days=4)).isoformat()},
        headers=headers,
    )
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["person"]["user_id"] == str(w.a_user.id)
    assert [
        (s["start_at"], s["end_at"], s["schedule_name"], s["tenant_name"], s["source"], s["layer_name"])
        for s in body["shifts"]
    ] == [
        (
            (day0() + timedelta(days=d)).isoformat().replace("+00:00", "Z"),
            (day0() + timedelta(days=d + 1)).isoformat().replace("+00:00", "Z"),
            w.sched_a["name"],
            w.a.name,
            "layer",
            "Primary",
        )
        for d in (1, 3)
    ]

    # A plain tenant user (no oncall:read: they cannot read the schedules) still gets their own calendar,
    # empty here because they are in no rotation; the schedules of their tenant do not leak into it.
    plain = await factory.user(w.a)
    plain_headers = await factory.headers(plain)
    refused = await client.get(f"/api/v1/oncall/schedules/{w.sched_a['id']}", headers=plain_headers)
    assert refused.status_code == 403
    own = await client.get(f"{ME}/calendar.ics", headers=plain_headers)
    assert own.status_code == 200, own.text
    assert by_start(own.content) == {}
    assert w.sched_a["name"] not in own.text


async def test_shifts_json_window_and_bad_input(factory: Factory, client: AsyncClient, owner_db: Any) -> None:
    w = await make_world(factory, client, owner_db)
    start = day0() + timedelta(days=7)
    listed = await client.get(
        f"{ME}/shifts",
        params={"from": start.isoformat(), "to": (start + timedelta(days=3)).isoformat()},
        headers=w.me_headers,
    )
    assert listed.status_code == 200, listed.text
    shifts = listed.json()["shifts"]
    # Day 8 in both A and B (ordered by tenant name: Alpha before Beta), nothing from C or the draft.
    assert [(s["start_at"], s["schedule_id"], s["tenant_id"]) for s in shifts] == [
        ((day0() + timedelta(days=8)).isoformat().replace("+00:00", "Z"), w.sched_a["id"], str(w.a.id)),
        ((day0() + timedelta(days=8)).isoformat().replace("+00:00", "Z"), w.sched_b["id"], str(w.b.id)),
    ]
    for params in (
        {"from": "2024-01-01T00:00:00"},  # naive
        {"to": "2024-01-01T00:00:00"},
        {"from": "2024-01-01T00:00:00Z", "to": "2024-05-01T00:00:00Z"},  # more than 92 days
        {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"},  # backwards
        {"from": "not a date"},
    ):
        bad = await client.get(f"{ME}/shifts", params=params, headers=w.me_headers)
        assert bad.status_code in {400, 422}, (params, bad.status_code, bad.text)
        assert bad.headers["content-type"] == "application/problem+json"


async def test_subscription_url_works_without_auth_until_revoked_or_deactivated(
    factory: Factory, client: AsyncClient, owner_db: Any
) -> None:
    w = await make_world(factory, client, owner_db)
    issued = await client.post(f"{ME}/feed-tokens", json={"expires_in_days": 30}, headers=w.me_headers)
    assert issued.status_code == 201, issued.text
    token = issued.json()
    assert token["url"].startswith(f"{BASE_URL}{FEEDS}/mspcal_")
    assert token["webcal_url"] == "webcal://" + token["url"].split("://", 1)[1]
    assert token["person"]["staff_id"] == str(w.me.id)
    assert (
        timedelta(days=29)
        < datetime.fromisoformat(token["expires_at"]) - datetime.now(UTC)
        <= timedelta(days=30)
    )

    authed = await client.get(f"{ME}/calendar.ics", headers=w.me_headers)
    public = await client.get(path_of(token["url"]))  # no Authorization header
    assert public.status_code == 200, public.text
    assert public.content == authed.content
    assert len(events(public.content)) == 90
    for secret in w.secrets:
        assert secret not in public.text

    # Personal and schedule tokens do not stand in for each other.
    schedule_token = await client.post(
        f"{BASE}/{w.sched_a['id']}/feed-tokens", json={}, headers=w.env_a.headers
    )
    assert schedule_token.status_code == 201
    wrong_kind = await client.post(
        f"{ME}/feed-tokens/revoke", json={"token": schedule_token.json()["token"]}, headers=w.me_headers
    )
    assert wrong_kind.status_code == 422
    wrong_kind = await client.post(
        f"{BASE}/{w.sched_a['id']}/feed-tokens/revoke",
        json={"token": token["token"]},
        headers=w.env_a.headers,
    )
    assert wrong_kind.status_code == 422
    # Nobody else can revoke it, and it cannot be re-pointed at another person.
    someone = await factory.staff(grants=[w.a])
    someone_headers = await factory.headers(someone)
    not_theirs = await client.post(
        f"{ME}/feed-tokens/revoke", json={"token": token["token"]}, headers=someone_headers
    )
    assert not_theirs.status_code == 422
    forged = _payload(token["token"])
    forged[3] = forged[4] = f"staff:{someone.id}"
    assert (await fetch(client, _with_payload(token["token"], forged))).status_code == 404
    assert (await fetch(client, token["token"])).status_code == 200

    # Revoke one; the others keep working.
    second = (await client.post(f"{ME}/feed-tokens", json={}, headers=w.me_headers)).json()
    revoked = await client.post(
        f"{ME}/feed-tokens/revoke", json={"token": token["token"]}, headers=w.me_headers
    )
    assert revoked.status_code == 204, revoked.text
    gone = await fetch(client, token["token"])
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert (await fetch(client, second["token"])).status_code == 200

    # Revoke all; tokens issued afterwards work.
    assert (await client.delete(f"{ME}/feed-tokens", headers=w.me_headers)).status_code == 204
    assert (await fetch(client, second["token"])).status_code == 404
    third = (await client.post(f"{ME}/feed-tokens", json={}, headers=w.me_headers)).json()
    assert (await fetch(client, third["token"])).status_code == 200

    # Losing the grant on B drops B's shifts from the feed; losing every grant ends the feed.
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            delete(StaffGrant).where(StaffGrant.staff_id == w.me.id, StaffGrant.tenant_id == w.b.id)
        )
        await session.commit()
    only_a = by_start((await fetch(client, third["token"])).content)
    assert set(only_a) == {summary(w.sched_a, w.a)}

    # Deactivated: the feed is gone (and comes back only if reactivated while the token is still valid).
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(update(StaffMember).where(StaffMember.id == w.me.id).values(active=False))
        await session.commit()
    assert (await fetch(client, third["token"])).status_code == 404
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(update(StaffMember).where(StaffMember.id == w.me.id).values(active=True))
        await session.execute(delete(StaffGrant).where(StaffGrant.staff_id == w.me.id))
        await session.commit()
    assert (await fetch(client, third["token"])).status_code == 404  # no tenant left


async def test_tenant_user_subscription_and_bad_requests(
    factory: Factory, client: AsyncClient, owner_db: Any
) -> None:
    w = await make_world(factory, client, owner_db)
    headers = await factory.headers(w.a_user)
    token = (await client.post(f"{ME}/feed-tokens", json={}, headers=headers)).json()
    feed = await fetch(client, token["token"])
    assert feed.status_code == 200
    assert set(by_start(feed.content)) == {summary(w.sched_a, w.a)}
    from msp_platform.models.user import User

    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(update(User).where(User.id == w.a_user.id).values(active=False))
        await session.commit()
    assert (await fetch(client, token["token"])).status_code == 404

    for body in ({"expires_in_days": 0}, {"expires_in_days": 10_000}, {"nope": 1}, {"expires_in_days": "x"}):
        bad = await client.post(f"{ME}/feed-tokens", json=body, headers=w.me_headers)
        assert bad.status_code in {400, 422}, (body, bad.text)
        assert bad.headers["content-type"] == "application/problem+json"
    for body in ({"token": "nope"}, {}, {"token": 5}):
        bad = await client.post(f"{ME}/feed-tokens/revoke", json=body, headers=w.me_headers)
        assert bad.status_code in {400, 422}, (body, bad.text)
        assert bad.headers["content-type"] == "application/problem+json"

    # Integrations have no shifts of their own.
    client_id, secret = await factory.integration_client(w.a, scopes="oncall:read")
    bearer = {"Authorization": f"Bearer {await factory.client_token(client_id, secret)}"}
    for method, path in (
        ("GET", f"{ME}/calendar.ics"),
        ("GET", f"{ME}/shifts"),
        ("POST", f"{ME}/feed-tokens"),
    ):
        refused = await client.request(method, path, json={} if method == "POST" else None, headers=bearer)
        assert refused.status_code == 403, (method, path, refused.text)
