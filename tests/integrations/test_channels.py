"""Notification channels: notify_page records one notification per page and channel and sends it after the
commit, by email through a real SMTP server on 127.0.0.1 and by webhook to endpoints subscribed to page.*;
never twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import select
from tests.integrations.support import (
    MailBox,
    Receiver,
    Scheduled,
    drain,
    free_port,
    http_receiver,
    run_job,
    smtp_server,
    verify,
)
from tests.support.desk import Desk

from msp_platform.authz.service import system_tenant_context
from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.integrations import channels, webhooks
from msp_platform.integrations.channels import ChannelError, PageMessage, notify_page
from msp_platform.kit.errors import NotFound
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.oncall import Escalation, EscalationPolicy, Notification, Page
from msp_platform.state import services_of
from msp_platform.worker.outbox import PENDING_KEY, send_after_commit


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as running_receiver:
        yield running_receiver


@pytest.fixture
def settings(app: Litestar) -> Settings:
    return services_of(app).settings


@pytest.fixture
def mailbox(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[MailBox]:
    with smtp_server() as (box, port):
        use_smtp(monkeypatch, settings, port)
        yield box


def use_smtp(monkeypatch: pytest.MonkeyPatch, settings: Settings, port: int) -> None:
    """Point the app's (and its workers') settings at an SMTP server on 127.0.0.1."""
    monkeypatch.setattr(settings, "smtp_host", "127.0.0.1")
    monkeypatch.setattr(settings, "smtp_port", port)
    monkeypatch.setattr(settings, "smtp_starttls", False)
    monkeypatch.setattr(settings, "smtp_from", "oncall@msp.example")


async def make_page(
    db: Database,
    desk: Desk,
    incident: dict[str, Any],
    *,
    staff_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    state: str = "triggered",
) -> uuid.UUID:
    tenant_id = desk.tenant.id
    async with db.dangerously_unscoped_session() as session:
        policy = EscalationPolicy(
            id=new_id(),
            tenant_id=tenant_id,
            name=f"p-{uuid.uuid4().hex[:8]}",
            active=True,
            repeat_count=0,
            triggers=[],
        )
        session.add(policy)
        await session.flush()
        escalation = Escalation(
            id=new_id(),
            tenant_id=tenant_id,
            incident_id=uuid.UUID(incident["id"]),
            policy_id=policy.id,
            trigger="manual",
            trigger_key=uuid.uuid4().hex,
            state="active",
            level=0,
            repeat=0,
            started_at=utcnow(),
        )
        session.add(escalation)
        await session.flush()
        page = Page(
            id=new_id(),
            tenant_id=tenant_id,
            escalation_id=escalation.id,
            incident_id=escalation.incident_id,
            level=0,
            repeat=0,
            state=state,
            staff_id=staff_id,
            user_id=user_id,
        )
        session.add(page)
        await session.commit()
        return page.id


async def notify(
    app: Litestar, tenant_id: uuid.UUID, page_id: uuid.UUID, *, pass_settings: bool = True
) -> list[Notification]:
    """What the escalation engine does: notify_page in a tenant-scoped unit of work, then commit."""
    services = services_of(app)
    async with services.db.session() as session:
        await set_tenant_context(session, system_tenant_context(tenant_id))
        if pass_settings:
            rows = await notify_page(session, page_id, settings=services.settings)
        else:
            rows = await notify_page(session, page_id)
        pending = list(session.info.pop(PENDING_KEY, []))
        await session.commit()
    await send_after_commit(services.broker, services.db.sessionmaker, pending)
    return rows


async def stored(db: Database, page_id: uuid.UUID) -> dict[str, Notification]:
    async with db.dangerously_unscoped_session() as session:
        rows = (await session.scalars(select(Notification).where(Notification.page_id == page_id))).all()
    return {r.channel: r for r in rows}


class TestEmail:
    async def test_a_staff_page_is_emailed_once(
        self, app: Litestar, desk: Desk, owner_db: Database, mailbox: MailBox, receiver: Receiver
    ) -> None:
        # A tenant webhook on page.*: not for MSP staff pages (those are internal).
        hook_path = receiver.path()
        hook = await desk.client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(hook_path), "event_types": ["page.*"]},
            headers=await desk.as_admin(),
        )
        assert hook.status_code == 201
        incident = await desk.raise_incident(title="PACS unreachable from radiology", impact=1, urgency=1)
        page_id = await make_page(owner_db, desk, incident, staff_id=desk.l3.id)

        first = await notify(app, desk.tenant.id, page_id)
        assert [(n.channel, n.status, n.recipient) for n in first] == [("email", "pending", desk.l3.email)]
        await drain(app)
        again = await notify(app, desk.tenant.id, page_id)  # the engine retried, or ran twice
        await drain(app)

        assert [n.id for n in again] == [n.id for n in first]
        assert len(mailbox.messages) == 1
        mail = mailbox.messages[0]
        assert mail["To"] == desk.l3.email
        assert mail["From"] == "oncall@msp.example"
        assert incident["key"] in mail["Subject"]
        assert "PACS unreachable" in mail["Subject"]
        assert mail["X-MSP-Page-Id"] == str(page_id)
        assert mailbox.envelopes == [("oncall@msp.example", [desk.l3.email])]
        rows = await stored(owner_db, page_id)
        assert set(rows) == {"email"}
        assert (rows["email"].status, rows["email"].attempts, rows["email"].sent_at is not None) == (
            "sent",
            1,
            True,
        )
        assert receiver.at(hook_path) == []

    async def test_smtp_down_then_up_sends_on_retry(
        self,
        app: Litestar,
        desk: Desk,
        owner_db: Database,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        scheduled: list[Scheduled],
    ) -> None:
        port = free_port()
        use_smtp(monkeypatch, settings, port)  # nothing listens there yet
        incident = await desk.raise_incident()
        page_id = await make_page(owner_db, desk, incident, user_id=desk.admin.id)
        await notify(app, desk.tenant.id, page_id)
        await drain(app)
        row = (await stored(owner_db, page_id))["email"]
        assert (row.status, row.attempts, row.sent_at) == ("pending", 1, None)
        assert row.last_error
        [retry] = scheduled
        assert (retry.actor_name, retry.kwargs["attempt"]) == (channels.SEND_ACTOR, 2)
        assert 8_000 < retry.delay_ms <= 10_000
        with smtp_server(port) as (box, _):
            await run_job(
                app, channels.SEND_ACTOR, tenant_id=desk.tenant.id, notification_id=str(row.id), attempt=2
            )
            assert [m["To"] for m in box.messages] == [desk.admin.email]
        row = (await stored(owner_db, page_id))["email"]
        assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)

    async def test_nothing_is_sent_for_a_page_no_longer_triggered_or_without_channels(
        self,
        app: Litestar,
        desk: Desk,
        owner_db: Database,
        mailbox: MailBox,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        incident = await desk.raise_incident()
        acknowledged = await make_page(owner_db, desk, incident, staff_id=desk.agent.id, state="acknowledged")
        assert await notify(app, desk.tenant.id, acknowledged) == []
        # Email off (no MSP_SMTP_HOST) and no webhook subscribed: no channel reaches anyone.
        monkeypatch.setattr(settings, "smtp_host", "")
        triggered = await make_page(owner_db, desk, incident, staff_id=desk.l3.id)
        assert await notify(app, desk.tenant.id, triggered) == []
        await drain(app)
        assert mailbox.messages == []
        with pytest.raises(NotFound):
            await notify(app, desk.tenant.id, uuid.uuid4())

    async def test_another_tenants_page_is_not_found(
        self, app: Litestar, desk: Desk, owner_db: Database, factory: Any, mailbox: MailBox
    ) -> None:
        incident = await desk.raise_incident()
        page_id = await make_page(owner_db, desk, incident, staff_id=desk.l3.id)
        other = await factory.tenant()
        with pytest.raises(NotFound):
            await notify(app, other.id, page_id)
        assert await stored(owner_db, page_id) == {}


class TestWebhookChannel:
    async def test_a_tenant_user_page_goes_to_page_webhooks_and_email(
        self, app: Litestar, desk: Desk, owner_db: Database, mailbox: MailBox, receiver: Receiver
    ) -> None:
        pages_path, incidents_path = receiver.path(), receiver.path()
        pages = (
            await desk.client.post(
                "/api/v1/webhooks",
                json={"url": receiver.url(pages_path), "event_types": ["page.*"]},
                headers=await desk.as_admin(),
            )
        ).json()
        await desk.client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(incidents_path), "event_types": ["incident.created"]},
            headers=await desk.as_admin(),
        )
        incident = await desk.raise_incident(title="Nurse call system down on 4 East", impact=1, urgency=1)
        page_id = await make_page(owner_db, desk, incident, user_id=desk.admin.id)

        rows = await notify(app, desk.tenant.id, page_id)
        assert sorted(n.channel for n in rows) == ["email", "webhook"]
        await drain(app)
        await notify(app, desk.tenant.id, page_id)
        await drain(app)

        [received] = receiver.at(pages_path)
        payload = verify(pages["secret"], received.headers, received.body)
        assert payload["type"] == "page.triggered"
        assert received.headers["webhook-id"] == webhooks.message_id_for(page_id)
        data = payload["data"]
        assert (data["page_id"], data["incident_id"], data["incident_key"]) == (
            str(page_id),
            incident["id"],
            incident["key"],
        )
        assert data["person"] == {
            "kind": "user",
            "id": str(desk.admin.id),
            "name": desk.admin.email.split("@")[0],
            "email": desk.admin.email,
        }
        assert all(r.json["type"] == "incident.created" for r in receiver.at(incidents_path))
        assert len(mailbox.messages) == 1
        sent = await stored(owner_db, page_id)
        assert {c: n.status for c, n in sent.items()} == {"email": "sent", "webhook": "sent"}

    async def test_notify_page_reads_settings_itself_when_not_given(
        self,
        app: Litestar,
        desk: Desk,
        owner_db: Database,
        receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.delenv("MSP_SMTP_HOST", raising=False)
        path = receiver.path()
        await desk.client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(path), "event_types": ["page.triggered"]},
            headers=await desk.as_admin(),
        )
        incident = await desk.raise_incident()
        page_id = await make_page(owner_db, desk, incident, user_id=desk.user.id)
        rows = await notify(app, desk.tenant.id, page_id, pass_settings=False)
        assert [n.channel for n in rows] == ["webhook"]  # the environment configures no SMTP
        await drain(app)
        assert len(receiver.at(path)) == 1


class FakeSms:
    name = "sms"

    def __init__(self, fail: bool = False, crash: bool = False) -> None:
        self.sent: list[PageMessage] = []
        self.fail = fail
        self.crash = crash

    async def recipient(self, session: Any, settings: Settings, message: PageMessage) -> str | None:
        return "+15555550100"

    async def send(
        self, session: Any, settings: Settings, message: PageMessage, *, notification_id: uuid.UUID
    ) -> None:
        if self.fail:
            raise ChannelError("number not in service", permanent=True)
        if self.crash:
            raise RuntimeError("sms gateway client bug")
        self.sent.append(message)


class TestPluggable:
    async def test_a_registered_channel_is_used_once(
        self,
        app: Litestar,
        desk: Desk,
        owner_db: Database,
        monkeypatch: pytest.MonkeyPatch,
        settings: Settings,
    ) -> None:
        monkeypatch.setattr(settings, "smtp_host", "")
        sms = FakeSms()
        monkeypatch.setitem(channels.CHANNELS, "sms", sms)
        incident = await desk.raise_incident(impact=1, urgency=1)
        page_id = await make_page(owner_db, desk, incident, staff_id=desk.agent.id)
        for _ in range(2):
            await notify(app, desk.tenant.id, page_id)
            await drain(app)
        assert len(sms.sent) == 1
        assert sms.sent[0].person.email == desk.agent.email
        assert f"P{incident['priority']}" in sms.sent[0].subject
        row = (await stored(owner_db, page_id))["sms"]
        assert (row.status, row.recipient, row.attempts) == ("sent", "+15555550100", 1)

    async def test_a_permanent_failure_is_not_retried(
        self,
        app: Litestar,
        desk: Desk,
        owner_db: Database,
        monkeypatch: pytest.MonkeyPatch,
        settings: Settings,
    ) -> None:
        monkeypatch.setattr(settings, "smtp_host", "")
        monkeypatch.setitem(channels.CHANNELS, "sms", FakeSms(fail=True))
        incident = await desk.raise_incident()
        page_id = await make_page(owner_db, desk, incident, staff_id=desk.agent.id)
        await notify(app, desk.tenant.id, page_id)
        await drain(app)
        row = (await stored(owner_db, page_id))["sms"]
        assert (row.status, row.attempts, row.last_error) == ("failed", 1, "number not in service")

    async def test_a_crashing_channel_is_retried_like_a_failure(
        self,
        app: Litestar,
        desk: Desk,
        owner_db: Database,
        monkeypatch: pytest.MonkeyPatch,
        settings: Settings,
        scheduled: list[Scheduled],
    ) -> None:
        monkeypatch.setattr(settings, "smtp_host", "")
        monkeypatch.setitem(channels.CHANNELS, "sms", FakeSms(crash=True))
        incident = await desk.raise_incident()
        page_id = await make_page(owner_db, desk, incident, staff_id=desk.agent.id)
        await notify(app, desk.tenant.id, page_id)
        await drain(app)
        row = (await stored(owner_db, page_id))["sms"]
        assert (row.status, row.attempts, row.last_error) == (
            "pending",
            1,
            "RuntimeError: sms gateway client bug",
        )
        assert [(s.actor_name, s.kwargs["attempt"]) for s in scheduled] == [(channels.SEND_ACTOR, 2)]
