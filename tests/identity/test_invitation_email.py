"""Invitation emails: queued with the invitation, sent by a job after the commit through a real SMTP server on
127.0.0.1, skipped when the invitation is no longer usable, retried while SMTP is down; the token never sits
in the outbox in clear text."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from httpx import AsyncClient
from litestar import Litestar
from sqlalchemy import select, update
from tests.conftest import Factory
from tests.identity.common import ACCEPT, USERS, tenant_admin
from tests.integrations.support import MailBox, drain, free_port, hold_delayed_jobs, run_job, smtp_server

from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.identity.invitation_email import SEND_ACTOR, unseal_token
from msp_platform.kit.time import utcnow
from msp_platform.models.invitation import Invitation
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.user import User
from msp_platform.state import services_of

NEW_PASSWORD = "a brand new passphrase for me"


@pytest.fixture
def settings(app: Litestar) -> Settings:
    return services_of(app).settings


def use_smtp(monkeypatch: pytest.MonkeyPatch, settings: Settings, port: int) -> None:
    monkeypatch.setattr(settings, "smtp_host", "127.0.0.1")
    monkeypatch.setattr(settings, "smtp_port", port)
    monkeypatch.setattr(settings, "smtp_starttls", False)
    monkeypatch.setattr(settings, "smtp_from", "desk@msp.example")


@pytest.fixture
def mailbox(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[MailBox]:
    with smtp_server() as (box, port):
        use_smtp(monkeypatch, settings, port)
        yield box


@pytest.fixture
def held(app: Litestar, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Dramatiq's delayed retries of identity jobs, recorded instead of left in the in-process broker."""
    return hold_delayed_jobs(services_of(app).broker, monkeypatch, prefix="identity.")


async def invite(client: AsyncClient, headers: dict[str, str], user_id: Any) -> dict[str, Any]:
    response = await client.post(f"{USERS}/{user_id}/invitations", headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def text_of(message: Message, subtype: str = "plain") -> str:
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError(f"no text/{subtype} part")


def header(message: Message, name: str) -> str:
    return str(make_header(decode_header(message[name])))


def token_in(message: Message) -> str:
    match = re.search(r"https?://\S+token=\S+", text_of(message))
    assert match, text_of(message)
    [token] = parse_qs(urlsplit(match.group(0)).query)["token"]
    return token


async def jobs_for(owner_db: Database, invitation_id: str) -> list[OutboxMessage]:
    async with owner_db.dangerously_unscoped_session() as session:
        rows = (
            await session.scalars(select(OutboxMessage).where(OutboxMessage.actor_name == SEND_ACTOR))
        ).all()
    return [r for r in rows if r.kwargs.get("invitation_id") == invitation_id]


class TestSending:
    async def test_the_invitee_gets_one_email_whose_link_accepts_the_invitation(
        self, factory: Factory, client: AsyncClient, app: Litestar, mailbox: MailBox, owner_db: Database
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        person = await factory.user(tenant)
        invitation = await invite(client, await factory.headers(admin), person.id)
        assert invitation["email"] == "queued"
        assert invitation["token"] in invitation["accept_url"]
        assert mailbox.messages == []  # sent by a job, never inside the request

        await drain(app)
        [message] = mailbox.messages
        assert mailbox.envelopes == [("desk@msp.example", [person.email])]
        assert person.email in message["To"]
        assert tenant.name in header(message, "Subject")
        body = text_of(message)
        assert tenant.name in body
        assert f"{admin.email.split('@')[0]} invited you to the {tenant.name} service desk" in body
        assert invitation["expires_at"][:10] in body
        assert invitation["token"] in text_of(message, "html")
        token = token_in(message)
        assert token == invitation["token"]

        accepted = await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["tenant"] == tenant.slug

        # The job's message holds the token sealed, never in clear text.
        [job] = await jobs_for(owner_db, invitation["id"])
        stored = json.dumps(job.kwargs)
        # msp_inv_<tenant hex>_<secret>: the secret is URL-safe base64 and may itself contain "_".
        secret_part = token.split("_", 3)[3]
        assert len(secret_part) == 43
        assert token not in stored
        assert secret_part not in stored
        assert job.tenant_id == tenant.id
        assert unseal_token(services_of(app).settings, str(job.kwargs["sealed_token"])) == token

    async def test_a_redelivered_job_does_not_email_the_link_twice(
        self, factory: Factory, client: AsyncClient, app: Litestar, mailbox: MailBox, owner_db: Database
    ) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        invitation = await invite(client, headers, person.id)
        listed = (await client.get(f"{USERS}/{person.id}/invitations", headers=headers)).json()["items"]
        assert listed[0]["emailed_at"] is None  # queued, not sent yet
        await drain(app)
        assert len(mailbox.messages) == 1
        listed = (await client.get(f"{USERS}/{person.id}/invitations", headers=headers)).json()["items"]
        assert listed[0]["emailed_at"] is not None

        # The broker delivers the same message again (an acknowledgement was lost): nothing more is sent.
        [job] = await jobs_for(owner_db, invitation["id"])
        await run_job(
            app,
            SEND_ACTOR,
            tenant_id=tenant.id,
            invitation_id=job.kwargs["invitation_id"],
            sealed_token=job.kwargs["sealed_token"],
        )
        assert len(mailbox.messages) == 1
        again = (await client.get(f"{USERS}/{person.id}/invitations", headers=headers)).json()["items"]
        assert again[0]["emailed_at"] == listed[0]["emailed_at"]

    async def test_a_staff_invitation_names_the_staff_member(
        self, factory: Factory, client: AsyncClient, app: Litestar, mailbox: MailBox
    ) -> None:
        tenant = await factory.tenant()
        person = await factory.user(tenant)
        admin = await factory.staff(role="msp_admin", tier=None, grants=[tenant])
        headers = await factory.headers(admin, tenant=tenant)
        invitation = await invite(client, headers, person.id)
        assert invitation["email"] == "queued"
        await drain(app)
        [message] = mailbox.messages
        assert f"{admin.email} (your IT service provider) invited you" in text_of(message)

    async def test_line_breaks_in_names_cannot_add_headers_or_recipients(
        self, factory: Factory, client: AsyncClient, app: Litestar, mailbox: MailBox, owner_db: Database
    ) -> None:
        tenant = await factory.tenant(name="Evil Corp\r\nBcc: victim@evil.example")
        admin = await factory.user(tenant, role="tenant_admin")
        person = await factory.user(tenant)
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                update(User).where(User.id == person.id).values(name="Mallory\r\nCc: other@evil.example\n")
            )
            await session.commit()
        invitation = await invite(client, await factory.headers(admin), person.id)
        await drain(app)
        [message] = mailbox.messages
        assert mailbox.envelopes == [("desk@msp.example", [person.email])]
        assert message["Bcc"] is None
        assert message["Cc"] is None
        # One Subject header (folded by the mail library when long): the line break became a space.
        assert message.get_all("Subject") == [message["Subject"]]
        subject = re.sub(r"\r?\n(?=[ \t])", "", header(message, "Subject")).strip()
        assert subject == "You are invited to Evil Corp Bcc: victim@evil.example: set your password"
        assert token_in(message) == invitation["token"]


class TestSkipping:
    async def test_nothing_is_sent_for_an_invitation_revoked_superseded_used_or_expired_before_the_job(
        self, factory: Factory, client: AsyncClient, app: Litestar, mailbox: MailBox, owner_db: Database
    ) -> None:
        tenant, headers = await tenant_admin(factory)
        revoked, superseded, used, expired = [await factory.user(tenant) for _ in range(4)]

        await invite(client, headers, revoked.id)
        assert (await client.post(f"{USERS}/{revoked.id}/deactivate", headers=headers)).status_code == 200

        await invite(client, headers, superseded.id)
        latest = await invite(client, headers, superseded.id)

        used_invitation = await invite(client, headers, used.id)
        accepted = await client.post(
            ACCEPT, json={"token": used_invitation["token"], "password": NEW_PASSWORD}
        )
        assert accepted.status_code == 200, accepted.text

        expired_invitation = await invite(client, headers, expired.id)
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                update(Invitation)
                .where(Invitation.id == uuid.UUID(expired_invitation["id"]))
                .values(expires_at=utcnow())
            )
            await session.commit()

        await drain(app)
        # Only the newest invitation of the superseded user goes out.
        [message] = mailbox.messages
        assert mailbox.envelopes == [("desk@msp.example", [superseded.email])]
        assert token_in(message) == latest["token"]

    async def test_without_smtp_the_response_says_not_configured_and_nothing_is_queued(
        self, factory: Factory, client: AsyncClient, settings: Settings, owner_db: Database
    ) -> None:
        assert not settings.smtp_host
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        invitation = await invite(client, headers, person.id)
        assert invitation["email"] == "not_configured"
        assert invitation["token"]
        assert invitation["token"] in invitation["accept_url"]
        assert invitation["accept_url"].startswith(f"{settings.issuer}/accept-invitation?token=")
        assert await jobs_for(owner_db, invitation["id"]) == []


class TestFailures:
    async def test_smtp_down_is_retried_with_backoff_and_the_request_still_succeeds(
        self,
        factory: Factory,
        client: AsyncClient,
        app: Litestar,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        held: list[Any],
    ) -> None:
        port = free_port()
        use_smtp(monkeypatch, settings, port)  # nothing listens there yet
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        invitation = await invite(client, headers, person.id)
        assert invitation["email"] == "queued"
        await drain(app)
        [retry] = held
        assert retry.actor_name == SEND_ACTOR
        assert 1_000 <= retry.delay_ms <= 2_000  # Dramatiq's first backoff
        kwargs = dict(retry.kwargs)
        assert kwargs.pop("tenant_id") == str(tenant.id)
        with smtp_server(port) as (box, _):
            await run_job(app, SEND_ACTOR, tenant_id=tenant.id, **kwargs)
            [message] = box.messages
        assert token_in(message) == invitation["token"]
