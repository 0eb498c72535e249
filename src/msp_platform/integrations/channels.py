"""Notification channels: how a paged person is told. Pluggable: a ``Channel`` in ``CHANNELS`` by name.

``notify_page(session, page_id, settings=...)`` is what the escalation engine calls, in its own unit of
work, once it created a page. For every channel that can reach the paged person it records one
``Notification`` (unique per page and channel, so a second call sends nothing twice) and queues the
``integrations.send_notification`` job, which sends after the commit, outside any database transaction,
retrying a failed send after 10 s, 30 s, 1 min and 2 min before giving up (``failed``).

Built in:
- ``email``: SMTP (``MSP_SMTP_*``; off while ``MSP_SMTP_HOST`` is empty), with the standard library's
  ``smtplib`` in a worker thread; STARTTLS (or implicit TLS on port 465) unless ``MSP_SMTP_STARTTLS=false``.
- ``webhook``: a ``page.triggered`` message to the tenant's active endpoints subscribed to it (``page.*``),
  signed and retried like every webhook; its ``webhook-id`` derives from the page, so it is sent once.
  Only for pages of the tenant's own users: who of the MSP's staff is paged is internal (the incident's
  ``paged`` event is internal too), and tenant webhooks carry only what the tenant may see.
- ``staff_webhook``: pages of MSP staff to the MSP's own endpoint (``MSP_STAFF_PAGE_WEBHOOK_URL``, signed
  with ``MSP_STAFF_PAGE_WEBHOOK_SECRET``): the same Standard Webhooks ``page.triggered`` message plus the
  tenant it is for, retried like every notification; ``webhook-id`` derives from the page, so a receiver
  deduplicates retries. It is the MSP's endpoint, so naming the paged staff member leaks nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.config import Settings, get_settings
from msp_platform.integrations import webhooks
from msp_platform.integrations.repository import NotificationRepository, WebhookRepository
from msp_platform.integrations.service import fan_out, matches
from msp_platform.kit.errors import NotFound
from msp_platform.kit.logging import get_logger
from msp_platform.kit.mail import MailError, send_mail
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Incident
from msp_platform.models.oncall import Notification, Page
from msp_platform.worker.outbox import PENDING_KEY, enqueue

log = get_logger(__name__)

SEND_ACTOR = "integrations.send_notification"
PAGE_EVENT = "page.triggered"
# Delays before the 2nd, 3rd, ... send of a notification; after the last failure it is ``failed``.
NOTIFY_RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=10),
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=2),
)


@dataclass(frozen=True)
class Paged:
    """The person a page is for: MSP staff or a user of the tenant."""

    kind: Literal["staff", "user"]
    id: uuid.UUID
    name: str
    email: str


@dataclass(frozen=True)
class PageMessage:
    """Everything a channel needs to tell someone they are paged."""

    tenant_id: uuid.UUID
    page_id: uuid.UUID
    incident_id: uuid.UUID
    incident_key: str
    incident_title: str
    priority: int
    level: int
    repeat: int
    person: Paged
    paged_at: datetime

    # The API base (MSP_ISSUER) for the acknowledge instructions.
    api_base: str = ""

    @property
    def subject(self) -> str:
        return f"[P{self.priority}] {self.incident_key}: {self.incident_title} (you are paged)"

    @property
    def acknowledge_url(self) -> str:
        return f"{self.api_base.rstrip('/')}/api/v1/pages/{self.page_id}/acknowledge"

    def text(self) -> str:
        return (
            f"Hello {self.person.name},\n\n"
            f"You are paged for incident {self.incident_key} (priority P{self.priority}):\n"
            f"  {self.incident_title}\n\n"
            f"Escalation level {self.level + 1}"
            + (f", repeat {self.repeat}" if self.repeat else "")
            + f", paged at {self.paged_at.isoformat()}.\n\n"
            "To acknowledge (nobody else is paged for the incident once you do), sign in and POST to\n"
            f"  {self.acknowledge_url}\n"
            f"(page id {self.page_id}); or hand the incident over.\n"
        )

    def as_payload(self) -> dict[str, Any]:
        return {
            "page_id": str(self.page_id),
            "incident_id": str(self.incident_id),
            "incident_key": self.incident_key,
            "title": self.incident_title,
            "priority": self.priority,
            "level": self.level,
            "repeat": self.repeat,
            "person": {
                "kind": self.person.kind,
                "id": str(self.person.id),
                "name": self.person.name,
                "email": self.person.email,
            },
            "paged_at": self.paged_at.isoformat(),
            "acknowledge_url": self.acknowledge_url,
        }


class ChannelError(Exception):
    """A send failed. ``permanent``: retrying cannot help (a refused address, nothing to send to)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol):
    name: str

    async def recipient(self, session: AsyncSession, settings: Settings, message: PageMessage) -> str | None:
        """Whom this channel would notify (recorded on the Notification), or None when it is not set up
        for this tenant or person: then no notification is recorded for it."""
        ...

    async def send(
        self, session: AsyncSession, settings: Settings, message: PageMessage, *, notification_id: uuid.UUID
    ) -> None:
        """Deliver the message or raise ``ChannelError``. Called from a job with no transaction open; a
        channel may use ``session`` for database work (committed with the job)."""
        ...


# --- email --------------------------------------------------------------------------------------------


class EmailChannel:
    name = "email"

    async def recipient(self, session: AsyncSession, settings: Settings, message: PageMessage) -> str | None:
        if not settings.smtp_host:
            return None
        return message.person.email

    async def send(
        self, session: AsyncSession, settings: Settings, message: PageMessage, *, notification_id: uuid.UUID
    ) -> None:
        if not settings.smtp_host:
            raise ChannelError("email is not configured (MSP_SMTP_HOST)")
        mail = EmailMessage()
        mail["From"] = settings.smtp_from
        mail["To"] = message.person.email
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(utcnow())
        mail["Message-ID"] = make_msgid(idstring=notification_id.hex, domain="msp-platform")
        mail["X-MSP-Page-Id"] = str(message.page_id)
        mail["X-MSP-Incident"] = message.incident_key
        mail.set_content(message.text())
        try:
            await send_mail(settings, mail)
        except MailError as exc:
            raise ChannelError(str(exc), permanent=exc.permanent) from exc


# --- webhook ------------------------------------------------------------------------------------------


class WebhookChannel:
    name = "webhook"

    async def _endpoints(self, session: AsyncSession) -> list[Any]:
        return [
            e
            for e in await WebhookRepository(session).active_endpoints()
            if matches(e.event_types, PAGE_EVENT)
        ]

    async def recipient(self, session: AsyncSession, settings: Settings, message: PageMessage) -> str | None:
        if message.person.kind != "user":
            return None  # MSP staff pages are internal: never on a tenant's webhook
        return message.person.email if await self._endpoints(session) else None

    async def send(
        self, session: AsyncSession, settings: Settings, message: PageMessage, *, notification_id: uuid.UUID
    ) -> None:
        if message.person.kind != "user":
            raise ChannelError("pages of MSP staff are not sent to tenant webhooks", permanent=True)
        endpoints = await self._endpoints(session)
        if not endpoints:
            raise ChannelError("no active webhook endpoint is subscribed to page.triggered", permanent=True)
        await fan_out(
            session,
            tenant_id=message.tenant_id,
            event_type=PAGE_EVENT,
            message_id=webhooks.message_id_for(message.page_id),
            timestamp=message.paged_at.isoformat(),
            data=message.as_payload(),
            endpoints=endpoints,
        )


class StaffWebhookChannel:
    """Pages of MSP staff to the MSP's own endpoint (settings), Standard Webhooks signed."""

    name = "staff_webhook"

    @staticmethod
    def _configured(settings: Settings) -> tuple[str, str] | None:
        url, secret = settings.staff_page_webhook_url.strip(), settings.staff_page_webhook_secret
        if not url or secret is None:
            return None
        return url, secret.get_secret_value()

    async def recipient(self, session: AsyncSession, settings: Settings, message: PageMessage) -> str | None:
        if message.person.kind != "staff" or self._configured(settings) is None:
            return None
        return settings.staff_page_webhook_url.strip()

    async def send(
        self, session: AsyncSession, settings: Settings, message: PageMessage, *, notification_id: uuid.UUID
    ) -> None:
        configured = self._configured(settings)
        if configured is None:
            raise ChannelError("the staff page webhook is not configured", permanent=True)
        url, secret = configured
        problem = webhooks.url_problem(url, settings)
        if problem:
            raise ChannelError(f"MSP_STAFF_PAGE_WEBHOOK_URL: {problem}", permanent=True)
        try:
            webhooks.secret_key_bytes(secret)
        except ValueError as exc:
            raise ChannelError(f"MSP_STAFF_PAGE_WEBHOOK_SECRET: {exc}", permanent=True) from exc
        body = webhooks.encode_body(
            PAGE_EVENT,
            message.paged_at.isoformat(),
            {**message.as_payload(), "tenant_id": str(message.tenant_id)},
        )
        headers = webhooks.signed_headers([secret], webhooks.message_id_for(message.page_id), body)
        result = await webhooks.post(url, headers, body)
        if not result.delivered:
            raise ChannelError(
                f"HTTP {result.status_code}: {result.error}" if result.status_code else str(result.error),
                permanent=result.gone,
            )


CHANNELS: dict[str, Channel] = {}


def register_channel(channel: Channel) -> None:
    CHANNELS[channel.name] = channel


register_channel(EmailChannel())
register_channel(WebhookChannel())
register_channel(StaffWebhookChannel())


# --- pages --------------------------------------------------------------------------------------------


async def page_message(
    session: AsyncSession,
    page_id: uuid.UUID,
    *,
    api_base: str = "",
    page: Page | None = None,
    incident: Incident | None = None,
) -> tuple[PageMessage | None, str]:
    """The message for a page, or None and why there is nothing to send. ``page`` / ``incident``: rows the
    caller holds already (the escalation engine), so they are not read again."""
    repo = NotificationRepository(session)
    page = page if page is not None and page.id == page_id else await repo.page(page_id)
    if page is None:
        raise NotFound(f"Page {page_id} not found.")
    if page.state != "triggered":
        return None, f"the page is {page.state}"
    if incident is None or incident.id != page.incident_id:
        incident = await repo.incident(page.incident_id)
    if incident is None:  # pragma: no cover - a composite foreign key holds it
        return None, "the incident is gone"
    person: Paged | None = None
    if page.staff_id is not None:
        from msp_platform.escalations.repository import EscalationRepository

        # Access is checked again at sending: staff whose grant ended since the page never get the incident.
        allowed = await EscalationRepository(session).staff_who_may_be_paged(page.tenant_id, [page.staff_id])
        staff = allowed.get(page.staff_id)
        if staff is not None:
            person = Paged("staff", staff.id, staff.name, staff.email)
    elif page.user_id is not None:
        user = await repo.user(page.user_id)
        if user is not None and user.active:
            person = Paged("user", user.id, user.name, user.email)
    if person is None:
        return None, "the paged person is inactive or no longer has access to the tenant"
    return (
        PageMessage(
            tenant_id=page.tenant_id,
            page_id=page.id,
            incident_id=incident.id,
            incident_key=incident.key,
            incident_title=incident.title,
            priority=incident.priority,
            level=page.level,
            repeat=page.repeat,
            person=person,
            paged_at=page.created_at,
            api_base=api_base,
        ),
        "",
    )


async def notify_page(
    session: AsyncSession,
    page_id: uuid.UUID,
    *,
    settings: Settings | None = None,
    page: Page | None = None,
    incident: Incident | None = None,
) -> list[Notification]:
    """Notify the paged person through every channel that can reach them.

    Runs in the caller's unit of work (tenant-scoped session): records one pending ``Notification`` per
    channel and queues its send job, both committed with the caller's transaction. Idempotent: a channel
    that already has a notification for this page is left alone. Nothing is sent for a page that is no
    longer ``triggered`` or whose person is inactive. Returns the page's notifications (new and earlier).
    Raises ``NotFound`` for a page the session cannot see. ``settings``: the job's (``job.settings``);
    without it they are read from the environment."""
    await queue_page_notifications(session, page_id, settings=settings, page=page, incident=incident)
    return await NotificationRepository(session).for_page(page_id)


async def queue_page_notifications(
    session: AsyncSession,
    page_id: uuid.UUID,
    *,
    settings: Settings | None = None,
    page: Page | None = None,
    incident: Incident | None = None,
) -> int:
    """``notify_page`` without reading the notifications back (the escalation engine's path): returns how
    many channels can reach the person. ``page`` / ``incident``: rows the caller holds already."""
    settings = settings or get_settings()
    message, why = await page_message(
        session, page_id, api_base=settings.issuer, page=page, incident=incident
    )
    if message is None:
        log.info("page not notified", page_id=str(page_id), reason=why)
        return 0
    repo = NotificationRepository(session)
    now = utcnow()
    reachable = 0
    for name, channel in CHANNELS.items():
        recipient = await channel.recipient(session, settings, message)
        if recipient is None:
            continue
        reachable += 1
        notification_id = await repo.add(
            tenant_id=message.tenant_id, page_id=page_id, channel=name, recipient=recipient, now=now
        )
        if notification_id is not None:
            enqueue(
                session, SEND_ACTOR, tenant_id=message.tenant_id, notification_id=notification_id, attempt=1
            )
    if not reachable:
        log.warning("no channel can reach the paged person", page_id=str(page_id))
    return reachable


async def send_notification(
    session: AsyncSession, settings: Settings, notification_id: uuid.UUID, attempt: int
) -> str:
    """Send attempt number ``attempt`` of a notification (the send job's body); returns what happened.

    The attempt is claimed (compare-and-set) and committed before sending, so duplicate jobs send once; a
    worker dying mid-send leaves the notification pending, and the sweep queues its next attempt."""
    repo = NotificationRepository(session)
    now = utcnow()
    if not await repo.claim_attempt(notification_id, attempt, now=now):
        return "skipped"
    notification = await repo.get(notification_id)
    assert notification is not None
    channel = CHANNELS.get(notification.channel)
    message, why = await page_message(session, notification.page_id, api_base=settings.issuer)
    if channel is None or message is None:
        reason = f"unknown channel {notification.channel!r}" if channel is None else why
        await repo.record_attempt(
            notification_id, attempt, status="failed", last_error=f"not sent: {reason}", updated_at=now
        )
        return "not sent"
    await session.commit()  # the claim holds; nothing stays locked while sending

    error: ChannelError | None = None
    try:
        await channel.send(session, settings, message, notification_id=notification_id)
    except ChannelError as exc:
        error = exc
    except Exception as exc:  # a channel's bug or its database work failing: retried like any failure
        log.exception("notification channel crashed", channel=notification.channel)
        await session.rollback()
        session.info.pop(PENDING_KEY, None)  # nothing the failed send queued may go out
        error = ChannelError(f"{type(exc).__name__}: {exc}"[:500])
    done = utcnow()
    if error is None:
        await repo.record_attempt(
            notification_id, attempt, status="sent", sent_at=done, last_error=None, updated_at=done
        )
        return "sent"
    retry = (
        None
        if error.permanent or attempt > len(NOTIFY_RETRY_SCHEDULE)
        else NOTIFY_RETRY_SCHEDULE[attempt - 1]
    )
    if retry is None:
        await repo.record_attempt(
            notification_id, attempt, status="failed", last_error=str(error)[:2000], updated_at=done
        )
        log.warning(
            "notification failed",
            notification_id=str(notification_id),
            channel=notification.channel,
            error=str(error),
        )
        return "failed"
    if await repo.record_attempt(notification_id, attempt, last_error=str(error)[:2000], updated_at=done):
        enqueue(
            session,
            SEND_ACTOR,
            tenant_id=message.tenant_id,
            eta=done + retry,
            notification_id=notification_id,
            attempt=attempt + 1,
        )
    return "retry"
