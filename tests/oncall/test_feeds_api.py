"""iCalendar feeds (authenticated and by feed token), feed-token revocation, and the cross-tenant matrix of
every /api/v1/oncall endpoint."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from httpx import AsyncClient, Response
from icalendar import Calendar, Event
from sqlalchemy import delete, update
from tests.conftest import BASE_URL, Factory
from tests.oncall.test_schedules_api import BASE, Env, create, k, layer, make_env, people, ref
from tests.support.isolation import assert_isolated

from msp_platform.models.staff import StaffGrant
from msp_platform.models.tenant import Tenant, TenantStatus

FEEDS = "/api/v1/oncall/feeds"


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def events(body: bytes) -> list[Event]:
    return [e for e in Calendar.from_ical(body).walk("VEVENT") if isinstance(e, Event)]


def path_of(url: str) -> str:
    assert url.startswith(BASE_URL), url
    return url[len(BASE_URL) :]


async def issue(
    client: AsyncClient, env: Env, sid: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post(f"{BASE}/{sid}/feed-tokens", json=body or {}, headers=env.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def fetch(client: AsyncClient, token: str, **headers: str) -> Response:
    return await client.get(f"{FEEDS}/{token}/calendar.ics", headers=headers)


async def daily_schedule(factory: Factory, client: AsyncClient, env: Env) -> tuple[dict[str, Any], list[Any]]:
    a, b = await people(factory, env, 2)
    created = await create(
        client, env, [layer("Primary", [a, b], today() - timedelta(days=14), unit="days", timezone="UTC")]
    )
    return created, [a, b]


async def test_calendar_feeds_of_a_schedule_and_of_one_person(factory: Factory, client: AsyncClient) -> None:
    env = await make_env(factory)
    created, (a, b) = await daily_schedule(factory, client, env)
    sid = created["id"]
    response = await client.get(f"{BASE}/{sid}/calendar.ics", headers=env.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    calendar = Calendar.from_ical(response.content)
    assert calendar["X-WR-CALNAME"] == f"On call: {created['name']}"
    parsed = events(response.content)
    # A week back to 12 weeks ahead, one daily turn each.
    assert len(parsed) == 7 + 84
    first = parsed[0]
    assert first.start == today() - timedelta(days=7)
    assert first.end == today() - timedelta(days=6)
    names = {a.email: str(a.email), b.email: b.email.split("@")[0]}
    summaries = {str(e["SUMMARY"]) for e in parsed}
    assert summaries == {f"On call: {names[a.email]} (Primary)", f"On call: {names[b.email]} (Primary)"}

    mine = await client.get(f"{BASE}/{sid}/calendar.ics", params={"user_id": str(b.id)}, headers=env.headers)
    assert mine.status_code == 200
    only_b = events(mine.content)
    assert len(only_b) in {45, 46}
    assert {str(e["SUMMARY"]) for e in only_b} == {f"On call: {names[b.email]} (Primary)"}
    assert (
        Calendar.from_ical(mine.content)["X-WR-CALNAME"] == f"{names[b.email]}: on call for {created['name']}"
    )
    both = await client.get(
        f"{BASE}/{sid}/calendar.ics",
        params={"user_id": str(b.id), "staff_id": str(a.id)},
        headers=env.headers,
    )
    assert both.status_code == 422

    # Stable bytes within a day: the ETag answers a conditional request with 304.
    again = await client.get(
        f"{BASE}/{sid}/calendar.ics", headers={**env.headers, "If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304


async def test_feed_tokens_subscribe_without_oauth_and_can_be_revoked(
    factory: Factory, client: AsyncClient, owner_db: Any
) -> None:
    env = await make_env(factory)
    created, (a, _b) = await daily_schedule(factory, client, env)
    sid = created["id"]

    whole = await issue(client, env, sid)
    assert whole["url"].startswith(f"{BASE_URL}{FEEDS}/mspcal_")
    assert whole["url"].endswith("/calendar.ics")
    assert whole["webcal_url"] == "webcal://" + whole["url"].split("://", 1)[1]
    assert whole["person"] is None
    assert datetime.fromisoformat(whole["expires_at"]) - datetime.fromisoformat(
        whole["issued_at"]
    ) > timedelta(days=364)
    response = await client.get(path_of(whole["url"]))  # no Authorization header
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    assert len(events(response.content)) == 91
    assert (
        await fetch(client, whole["token"], **{"If-None-Match": response.headers["etag"]})
    ).status_code == 304

    personal = await issue(client, env, sid, {"person": ref(a), "expires_in_days": 30})
    assert personal["person"]["staff_id"] == str(a.id)
    personal_feed = events((await fetch(client, personal["token"])).content)
    assert personal_feed
    assert all(a.email in str(e["SUMMARY"]) for e in personal_feed)

    # Wrong tokens are a plain 404.
    token = whole["token"]
    mac_flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in (
        "nope",
        "mspcal_x.y",
        mac_flipped,
        token + "x",
        personal["token"].split(".")[0] + "." + token.split(".")[1],
    ):
        answer = await fetch(client, wrong)
        assert answer.status_code == 404, (wrong, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"

    # Revoking one token leaves the others working.
    revoke = await client.post(f"{BASE}/{sid}/feed-tokens/revoke", json={"token": token}, headers=env.headers)
    assert revoke.status_code == 204, revoke.text
    assert (await fetch(client, token)).status_code == 404
    assert (await fetch(client, personal["token"])).status_code == 200
    not_a_token = await client.post(
        f"{BASE}/{sid}/feed-tokens/revoke", json={"token": "nope"}, headers=env.headers
    )
    assert not_a_token.status_code == 422

    # Revoking every token of the schedule; tokens issued afterwards work.
    assert (await client.delete(f"{BASE}/{sid}/feed-tokens", headers=env.headers)).status_code == 204
    assert (await fetch(client, personal["token"])).status_code == 404
    fresh = await issue(client, env, sid)
    assert (await fetch(client, fresh["token"])).status_code == 200

    bad = await client.post(f"{BASE}/{sid}/feed-tokens", json={"expires_in_days": 0}, headers=env.headers)
    assert bad.status_code == 422
    stranger = await factory.user(await factory.tenant())
    foreign = await client.post(
        f"{BASE}/{sid}/feed-tokens", json={"person": ref(stranger)}, headers=env.headers
    )
    assert foreign.status_code == 422
    assert foreign.json()["errors"][0] == {"field": "person.user_id", "message": "no such person"}

    # The issuer losing access to the tenant ends their feeds.
    issuer = await factory.staff(grants=[env.tenant])
    issuer_env = Env(env.tenant, await factory.headers(issuer, tenant=env.tenant))
    theirs = await issue(client, issuer_env, sid)
    assert (await fetch(client, theirs["token"])).status_code == 200
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(delete(StaffGrant).where(StaffGrant.staff_id == issuer.id))
        await session.commit()
    assert (await fetch(client, theirs["token"])).status_code == 404
    assert (await fetch(client, fresh["token"])).status_code == 200

    # A suspended tenant's feeds stop; a deleted schedule's feeds are gone.
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Tenant).where(Tenant.id == env.tenant.id).values(status=TenantStatus.suspended)
        )
        await session.commit()
    assert (await fetch(client, fresh["token"])).status_code == 404
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            update(Tenant).where(Tenant.id == env.tenant.id).values(status=TenantStatus.active)
        )
        await session.commit()
    assert (await fetch(client, fresh["token"])).status_code == 200
    assert (await client.delete(f"{BASE}/{sid}", headers=env.headers)).status_code == 204
    assert (await fetch(client, fresh["token"])).status_code == 404


def _payload(token: str) -> list[Any]:
    body = token.removeprefix("mspcal_").split(".")[0]
    return list(msgspec.msgpack.decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def _with_payload(token: str, payload: list[Any]) -> str:
    body = base64.urlsafe_b64encode(msgspec.msgpack.encode(payload)).rstrip(b"=").decode()
    return f"mspcal_{body}.{token.split('.')[1]}"


async def test_cross_tenant_matrix(factory: Factory, client: AsyncClient) -> None:
    env_a, env_b = await make_env(factory), await make_env(factory)
    secret_person = await factory.user(
        env_b.tenant, email=f"secret-b-oncall-{uuid.uuid4().hex[:6]}@b.example"
    )
    (a_person,) = await people(factory, env_a, 1)
    b_schedule = await create(
        client,
        env_b,
        [layer("Primary", [secret_person], datetime(2024, 1, 1, tzinfo=UTC))],
        name="Tenant B Oncall Secret",
    )
    a_schedule = await create(client, env_a, [layer("Primary", [a_person], datetime(2024, 1, 1, tzinfo=UTC))])
    sid = b_schedule["id"]
    b_override = await client.post(
        f"{BASE}/{sid}/overrides",
        json={
            "person": ref(secret_person),
            "start_at": "2024-02-01T00:00:00Z",
            "end_at": "2024-02-02T00:00:00Z",
        },
        headers=env_b.headers,
    )
    assert b_override.status_code == 201
    oid = b_override.json()["id"]
    b_token = await issue(client, env_b, sid)
    leaks = ["Tenant B Oncall Secret", "secret-b-oncall", str(secret_person.id)]

    await assert_isolated(
        client,
        env_a.headers,
        foreign_paths=[f"{BASE}/{sid}"],
        patch_body={"name": "hijacked"},
        lists=[BASE],
        foreign_ids=[sid],
        secrets=leaks,
    )
    await assert_isolated(
        client,
        env_a.headers,
        foreign_paths=[f"{BASE}/{sid}/overrides/{oid}"],
        lists=[f"{BASE}/{a_schedule['id']}/overrides"],
        foreign_ids=[oid],
        secrets=leaks,
    )
    good_layers = {"layers": [layer("Hijack", [a_person], datetime(2024, 1, 1, tzinfo=UTC))]}
    override = {"person": ref(a_person), "start_at": "2024-03-01T00:00:00Z", "end_at": "2024-03-02T00:00:00Z"}
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"{BASE}/{sid}/final", None),
        ("GET", f"{BASE}/{sid}/on-call", None),
        ("GET", f"{BASE}/{sid}/gaps", None),
        ("GET", f"{BASE}/{sid}/overrides", None),
        ("GET", f"{BASE}/{sid}/calendar.ics", None),
        ("PUT", f"{BASE}/{sid}/layers", good_layers),
        ("POST", f"{BASE}/{sid}/publish", None),
        ("POST", f"{BASE}/{sid}/overrides", override),
        ("POST", f"{BASE}/{sid}/feed-tokens", {}),
        ("POST", f"{BASE}/{sid}/feed-tokens/revoke", {"token": b_token["token"]}),
        ("DELETE", f"{BASE}/{sid}/feed-tokens", None),
        ("DELETE", f"{BASE}/{sid}/overrides/{oid}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=env_a.headers)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        for secret in leaks:
            assert secret not in response.text

    # A's schedule cannot take B's people, and the refusal does not say who they are.
    as_participant = await client.put(
        f"{BASE}/{a_schedule['id']}/layers",
        json={"layers": [layer("Mixed", [a_person, secret_person], datetime(2024, 1, 1, tzinfo=UTC))]},
        headers=env_a.headers,
    )
    assert as_participant.status_code == 422
    assert as_participant.json()["errors"] == [
        {"field": "layers[0].participants[1].user_id", "message": "no such person"}
    ]
    as_override = await client.post(
        f"{BASE}/{a_schedule['id']}/overrides",
        json={**override, "person": ref(secret_person)},
        headers=env_a.headers,
    )
    assert as_override.status_code == 422
    for response in (as_participant, as_override):
        for secret in leaks:
            assert secret not in response.text

    # Feed tokens: B's token cannot be revoked through A's schedule, nor re-pointed at A's tenant.
    wrong_schedule = await client.post(
        f"{BASE}/{a_schedule['id']}/feed-tokens/revoke",
        json={"token": b_token["token"]},
        headers=env_a.headers,
    )
    assert wrong_schedule.status_code == 422
    assert (await fetch(client, b_token["token"])).status_code == 200
    a_token = await issue(client, env_a, a_schedule["id"])
    forged = _payload(b_token["token"])
    forged[1], forged[2] = env_a.tenant.id.bytes, uuid.UUID(a_schedule["id"]).bytes
    assert (await fetch(client, _with_payload(b_token["token"], forged))).status_code == 404
    a_payload = _payload(a_token["token"])
    a_payload[2] = uuid.UUID(sid).bytes  # A's valid MAC cannot carry B's schedule either
    assert (await fetch(client, _with_payload(a_token["token"], a_payload))).status_code == 404
    a_feed = await fetch(client, a_token["token"])
    assert a_feed.status_code == 200
    for secret in leaks:
        assert secret not in a_feed.text

    # B's data is untouched.
    still = (await client.get(f"{BASE}/{sid}", headers=env_b.headers)).json()
    assert (still["name"], still["version"], len(still["layers"])) == ("Tenant B Oncall Secret", 2, 1)
    assert (await client.get(f"{BASE}/{sid}/overrides/{oid}", headers=env_b.headers)).status_code == 200
    assert k(secret_person) == f"user:{secret_person.id}"
