"""Webhook delivery end to end: bus events to a real HTTP receiver on 127.0.0.1, signed per Standard Webhooks
(checked by an independent verifier), retried on the schedule, 410 disabling, replay, internal events
never leaving, idempotent fan-out, the safety sweep."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import func, select, update
from tests.conftest import Factory
from tests.integrations.support import Receiver, Scheduled, drain, http_receiver, run_job, verify
from tests.support.desk import Desk

from msp_platform.db.engine import Database
from msp_platform.integrations import webhooks
from msp_platform.kit.time import utcnow
from msp_platform.models.oncall import WebhookDelivery


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as running_receiver:
        yield running_receiver


async def register(
    desk: Desk, receiver: Receiver, path: str, event_types: list[str], **extra: Any
) -> dict[str, Any]:
    response = await desk.client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url(path), "event_types": event_types, **extra},
        headers=await desk.as_admin(),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(desk: Desk, endpoint: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    response = await desk.client.get(
        f"/api/v1/webhooks/{endpoint['id']}/deliveries", params=params, headers=await desk.as_admin()
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def delivery(desk: Desk, endpoint: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    response = await desk.client.get(
        f"/api/v1/webhooks/{endpoint['id']}/deliveries/{delivery_id}", headers=await desk.as_admin()
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def send_test(desk: Desk, endpoint: dict[str, Any]) -> dict[str, Any]:
    response = await desk.client.post(
        f"/api/v1/webhooks/{endpoint['id']}/test", headers=await desk.as_admin()
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def force_next_attempt(app: Litestar, owner_db: Database, desk: Desk, delivery_id: str) -> None:
    """Time travel: the scheduled retry is due now; run it (the broker's delayed copy, when it comes, finds
    the attempt made and does nothing)."""
    async with owner_db.dangerously_unscoped_session() as session:
        row = await session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.id == uuid.UUID(delivery_id))
        )
        assert row is not None
        attempts = row.attempts
    await run_job(
        app,
        "integrations.deliver_webhook",
        tenant_id=desk.tenant.id,
        delivery_id=delivery_id,
        attempt=attempts + 1,
    )


class TestDelivery:
    async def test_events_reach_matching_endpoints_signed_over_http(
        self, app: Litestar, desk: Desk, factory: Factory, receiver: Receiver
    ) -> None:
        incidents_path, pages_path, off_path = receiver.path(), receiver.path(), receiver.path()
        hook = await register(desk, receiver, incidents_path, ["incident.created"])
        await register(desk, receiver, pages_path, ["page.*"])
        await register(desk, receiver, off_path, ["*"], active=False)
        # Another tenant's endpoint subscribed to everything hears nothing of this tenant.
        other = await factory.tenant()
        other_admin = await factory.user(other, role="tenant_admin")
        other_path = receiver.path()
        response = await desk.client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(other_path), "event_types": ["*"]},
            headers=await factory.headers(other_admin),
        )
        assert response.status_code == 201

        incident = await desk.raise_incident(title="Infusion pump gateway offline", impact=1, urgency=1)
        await drain(app)

        [received] = receiver.at(incidents_path)
        payload = verify(hook["secret"], received.headers, received.body)
        assert payload["type"] == "incident.created"
        assert payload["data"]["incident_id"] == incident["id"]
        assert payload["data"]["key"] == incident["key"]
        assert received.headers["content-type"] == "application/json"
        assert received.headers["webhook-id"].startswith("msg_")
        assert receiver.at(pages_path) == receiver.at(off_path) == receiver.at(other_path) == []

        [row] = await deliveries(desk, hook)
        assert (row["status"], row["attempts"], row["last_status_code"], row["event_type"]) == (
            "delivered",
            1,
            200,
            "incident.created",
        )
        assert row["message_id"] == received.headers["webhook-id"]
        assert row["delivered_at"]
        assert row["next_attempt_at"] is None

    async def test_internal_events_are_never_sent(
        self, app: Litestar, desk: Desk, receiver: Receiver
    ) -> None:
        path = receiver.path()
        hook = await register(desk, receiver, path, ["*"])
        incident = await desk.raise_incident()
        note = "Root cause: the MSP's own firewall change; do not tell the customer yet"
        internal = await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/comments",
            json={"body": note, "visibility": "internal"},
            headers=await desk.as_agent(),
        )
        assert internal.status_code == 201, internal.text
        public = await desk.client.post(
            f"/api/v1/incidents/{incident['id']}/comments",
            json={"body": "We are on it.", "visibility": "public"},
            headers=await desk.as_agent(),
        )
        assert public.status_code == 201, public.text
        await drain(app)

        received = receiver.at(path)
        bodies = [r.body.decode() for r in received]
        payloads = [verify(hook["secret"], r.headers, r.body) for r in received]
        comments = [p["data"]["data"]["comment_id"] for p in payloads if p["type"] == "incident.commented"]
        assert comments == [public.json()["id"]], "the public comment is delivered, the work note is not"
        assert all(p["data"]["visibility"] == "public" for p in payloads)
        for secret in (internal.json()["id"], note, '"internal"'):
            assert not any(secret in b for b in bodies)
        stored = await deliveries(desk, hook, limit=200)
        assert len(stored) == len(received)
        assert internal.json()["id"] not in str([d["payload"] for d in stored])

    async def test_a_repeated_bus_job_adds_no_delivery(
        self, app: Litestar, desk: Desk, receiver: Receiver, owner_db: Database
    ) -> None:
        path = receiver.path()
        hook = await register(desk, receiver, path, ["incident.*"])
        event_id = str(uuid.uuid4())
        payload: dict[str, Any] = {"incident_id": str(uuid.uuid4()), "visibility": "public", "data": {}}
        event: dict[str, Any] = {
            "event_id": event_id,
            "type": "incident.assigned",
            "occurred_at": utcnow().isoformat(),
            "payload": payload,
        }
        for _ in range(2):
            await run_job(app, "integrations.webhooks_on_event", tenant_id=desk.tenant.id, **event)
        internal = {
            **event,
            "event_id": str(uuid.uuid4()),
            "payload": {**payload, "visibility": "internal"},
        }
        await run_job(app, "integrations.webhooks_on_event", tenant_id=desk.tenant.id, **internal)
        rows = await deliveries(desk, hook)
        assert len(rows) == 1
        assert rows[0]["message_id"] == webhooks.message_id_for(uuid.UUID(event_id))
        assert len(receiver.at(path)) == 1
        # The same attempt job delivered twice: sent once.
        await run_job(
            app,
            "integrations.deliver_webhook",
            tenant_id=desk.tenant.id,
            delivery_id=rows[0]["id"],
            attempt=1,
        )
        assert len(receiver.at(path)) == 1
        async with owner_db.dangerously_unscoped_session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == uuid.UUID(hook["id"]))
            )
        assert count == 1


class TestRetries:
    async def test_backoff_schedule_then_success(
        self, app: Litestar, desk: Desk, receiver: Receiver, owner_db: Database, scheduled: list[Scheduled]
    ) -> None:
        path = receiver.path(500, 503, 200)
        hook = await register(desk, receiver, path, ["incident.*"])
        queued = await send_test(desk, hook)
        assert (queued["status"], queued["event_type"]) == ("pending", "webhook.test")
        await drain(app)

        first = await delivery(desk, hook, queued["id"])
        assert (first["status"], first["attempts"], first["last_status_code"]) == ("failed", 1, 500)
        assert "HTTP 500" in first["last_error"]
        wait = _due_in(first)
        assert timedelta(seconds=3) < wait <= timedelta(seconds=5)
        # The retry went to the broker as a delayed message for that time.
        [retry] = scheduled
        assert (retry.actor_name, retry.kwargs["delivery_id"], retry.kwargs["attempt"]) == (
            "integrations.deliver_webhook",
            queued["id"],
            2,
        )
        assert 3_000 < retry.delay_ms <= 5_000

        await force_next_attempt(app, owner_db, desk, queued["id"])
        second = await delivery(desk, hook, queued["id"])
        assert (second["status"], second["attempts"], second["last_status_code"]) == ("failed", 2, 503)
        assert timedelta(minutes=4) < _due_in(second) <= timedelta(minutes=5)
        assert scheduled[-1].kwargs["attempt"] == 3
        assert 290_000 < scheduled[-1].delay_ms <= 300_000

        await force_next_attempt(app, owner_db, desk, queued["id"])
        third = await delivery(desk, hook, queued["id"])
        assert (third["status"], third["attempts"], third["last_status_code"]) == ("delivered", 3, 200)
        assert third["last_error"] is None
        assert third["next_attempt_at"] is None

        # Every attempt: the same message id and body, each freshly and validly signed.
        attempts = receiver.at(path)
        assert [r.headers["webhook-id"] for r in attempts] == [queued["message_id"]] * 3
        assert len({r.body for r in attempts}) == 1
        for r in attempts:
            assert verify(hook["secret"], r.headers, r.body)["type"] == "webhook.test"

        # A late duplicate of an attempt already made sends nothing.
        await run_job(
            app, "integrations.deliver_webhook", tenant_id=desk.tenant.id, delivery_id=queued["id"], attempt=2
        )
        assert len(receiver.at(path)) == 3

    async def test_after_the_last_attempt_it_is_dead(
        self, app: Litestar, desk: Desk, receiver: Receiver, owner_db: Database
    ) -> None:
        path = receiver.path(*([500] * 10))
        hook = await register(desk, receiver, path, ["incident.*"])
        queued = await send_test(desk, hook)
        await drain(app)
        # As if six more attempts had failed meanwhile.
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == uuid.UUID(queued["id"]))
                .values(attempts=7)
            )
            await session.commit()
        await force_next_attempt(app, owner_db, desk, queued["id"])
        dead = await delivery(desk, hook, queued["id"])
        assert (dead["status"], dead["attempts"], dead["next_attempt_at"]) == ("dead", 8, None)
        assert [d["id"] for d in await deliveries(desk, hook, status="dead")] == [queued["id"]]
        assert await deliveries(desk, hook, status="delivered") == []

    async def test_gone_disables_the_endpoint(self, app: Litestar, desk: Desk, receiver: Receiver) -> None:
        path = receiver.path(410)
        hook = await register(desk, receiver, path, ["incident.*"])
        queued = await send_test(desk, hook)
        await drain(app)
        gone = await delivery(desk, hook, queued["id"])
        assert (gone["status"], gone["last_status_code"], gone["attempts"]) == ("dead", 410, 1)
        endpoint = await desk.client.get(f"/api/v1/webhooks/{hook['id']}", headers=await desk.as_admin())
        assert endpoint.json()["active"] is False
        audit = await desk.client.get(
            "/api/v1/audit-events", params={"object_id": hook["id"]}, headers=await desk.as_admin()
        )
        assert "webhook_endpoint.disabled" in {e["action"] for e in audit.json()["items"]}
        # Nothing more goes there.
        await desk.raise_incident()
        await drain(app)
        assert len(receiver.at(path)) == 1
        refused = await desk.client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=await desk.as_admin())
        assert refused.status_code == 409

    async def test_the_sweep_requeues_a_lost_attempt(
        self, app: Litestar, desk: Desk, receiver: Receiver, owner_db: Database
    ) -> None:
        path = receiver.path(500, 200)
        hook = await register(desk, receiver, path, ["incident.*"])
        queued = await send_test(desk, hook)
        await drain(app)
        assert (await delivery(desk, hook, queued["id"]))["status"] == "failed"
        # The broker lost the delayed retry (in-process broker restarted): the row is the truth.
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == uuid.UUID(queued["id"]))
                .values(next_attempt_at=utcnow() - timedelta(minutes=10))
            )
            await session.commit()
        await run_job(app, "integrations.sweep")
        done = await delivery(desk, hook, queued["id"])
        assert (done["status"], done["attempts"]) == ("delivered", 2)


class TestReplay:
    async def test_replay_keeps_the_webhook_id(self, app: Litestar, desk: Desk, receiver: Receiver) -> None:
        path = receiver.path()
        hook = await register(desk, receiver, path, ["incident.created"])
        await desk.raise_incident()
        await drain(app)
        [original] = await deliveries(desk, hook)
        assert original["status"] == "delivered"

        replay_path = f"/api/v1/webhooks/{hook['id']}/deliveries/{original['id']}/replay"
        replayed = await desk.client.post(replay_path, headers=await desk.as_admin())
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["status"] == "pending"
        # Already queued: a second replay is refused until it ran.
        assert (await desk.client.post(replay_path, headers=await desk.as_admin())).status_code == 409
        await drain(app)

        first, second = receiver.at(path)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == original["message_id"]
        assert first.body == second.body
        verify(hook["secret"], second.headers, second.body)
        after = await delivery(desk, hook, original["id"])
        assert (after["status"], after["attempts"]) == ("delivered", 2)
        assert len(await deliveries(desk, hook)) == 1

    async def test_rotated_secret_signs_alongside_the_old_one(
        self, app: Litestar, desk: Desk, receiver: Receiver
    ) -> None:
        path = receiver.path()
        hook = await register(desk, receiver, path, ["incident.*"])
        rotated = await desk.client.post(
            f"/api/v1/webhooks/{hook['id']}/rotate-secret", headers=await desk.as_admin()
        )
        new_secret = rotated.json()["secret"]
        await send_test(desk, hook)
        await drain(app)
        [received] = receiver.at(path)
        assert len(received.headers["webhook-signature"].split(" ")) == 2
        verify(new_secret, received.headers, received.body)
        verify(hook["secret"], received.headers, received.body)

    async def test_replay_and_test_need_an_enabled_endpoint(
        self, app: Litestar, desk: Desk, receiver: Receiver
    ) -> None:
        path = receiver.path()
        hook = await register(desk, receiver, path, ["incident.*"])
        queued = await send_test(desk, hook)
        await drain(app)
        await desk.client.patch(
            f"/api/v1/webhooks/{hook['id']}", json={"active": False}, headers=await desk.as_admin()
        )
        response = await desk.client.post(
            f"/api/v1/webhooks/{hook['id']}/deliveries/{queued['id']}/replay", headers=await desk.as_admin()
        )
        assert response.status_code == 409
        assert (
            await desk.client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=await desk.as_admin())
        ).status_code == 409
        # Deleting the endpoint takes its deliveries along.
        assert (
            await desk.client.delete(f"/api/v1/webhooks/{hook['id']}", headers=await desk.as_admin())
        ).status_code == 204
        assert (
            await desk.client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=await desk.as_admin())
        ).status_code == 404


def _due_in(row: dict[str, Any]) -> timedelta:
    from datetime import datetime

    return datetime.fromisoformat(row["next_attempt_at"]) - datetime.fromisoformat(row["updated_at"])
