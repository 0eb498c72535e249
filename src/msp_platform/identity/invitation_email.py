"""Invitation emails: when SMTP is configured (``MSP_SMTP_HOST``), creating an invitation queues the
``identity.send_invitation_email`` job in the same unit of work, so the email goes out only after the commit.

The job's message never holds the token in clear text: the outbox row (and the broker message) carry it
encrypted with a key derived from ``MSP_SECRET_KEY`` for this purpose only. The job reloads the invitation
and sends nothing (logging why) when it was used, revoked (a newer invitation revokes older ones) or has
expired, when the user was deactivated or the tenant's access is closed, or when the token no longer
matches the stored hash. A failed send (SMTP down) raises, so Dramatiq retries it with backoff; a
permanent failure (recipient refused) is logged and not retried. Delivery is at least once: a message
delivered twice (rare: the outbox relay resending one whose acknowledgement was lost) sends twice.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from functools import lru_cache
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.authz.service import system_tenant_context
from msp_platform.config import Settings
from msp_platform.identity.repository import ClientRepository, StaffRepository, UserRepository
from msp_platform.kit.crypto import (
    InvalidToken,
    MultiFernet,
    constant_time_equals,
    purpose_fernet_ring,
    sha256_hex,
)
from msp_platform.kit.logging import get_logger
from msp_platform.kit.mail import MailError, one_line, send_mail, smtp_configured
from msp_platform.kit.time import utcnow
from msp_platform.models.invitation import Invitation
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User
from msp_platform.worker.outbox import enqueue

log = get_logger(__name__)

SEND_ACTOR = "identity.send_invitation_email"
ACCEPT_API_PATH = "/api/v1/auth/accept-invitation"
_PURPOSE = "msp-platform invitation email tokens"


class InvitationEmail(StrEnum):
    """What happened to the email of a new invitation (the ``email`` field of the API response)."""

    queued = "queued"  # a job sends it after the commit
    not_configured = "not_configured"  # no SMTP server (MSP_SMTP_HOST): hand the token over yourself


class SendFailed(Exception):
    """A transient send failure: raised out of the job so Dramatiq retries it with backoff."""


@lru_cache(maxsize=8)
def _cipher(secrets: tuple[bytes, ...]) -> MultiFernet:
    """Seals with MSP_SECRET_KEY, opens with it or any of MSP_SECRET_KEY_PREVIOUS (a rotation between the
    request and the job loses nothing)."""
    return purpose_fernet_ring(secrets, _PURPOSE)


def seal_token(settings: Settings, token: str) -> str:
    return _cipher(settings.secret_keys()).encrypt(token.encode()).decode()


def unseal_token(settings: Settings, sealed: str) -> str | None:
    """The token, or None when it cannot be read (sealed with a key that is no longer configured)."""
    try:
        return _cipher(settings.secret_keys()).decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def accept_url(settings: Settings, token: str) -> str:
    """The link an invited person opens: MSP_INVITATION_ACCEPT_URL (or ``{MSP_ISSUER}/accept-invitation``)
    with the token as the ``token`` query parameter."""
    base = settings.invitation_accept_url.strip() or f"{settings.issuer.rstrip('/')}/accept-invitation"
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{urlencode({'token': token})}"


def queue_invitation_email(
    session: AsyncSession, settings: Settings, invitation: Invitation, token: str, *, tenant_id: uuid.UUID
) -> InvitationEmail:
    """Queue the invitation's email in the caller's unit of work (sent only if it commits)."""
    if not smtp_configured(settings):
        return InvitationEmail.not_configured
    enqueue(
        session,
        SEND_ACTOR,
        tenant_id=tenant_id,
        invitation_id=invitation.id,
        sealed_token=seal_token(settings, token),
    )
    return InvitationEmail.queued


# --- the message --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvitationMessage:
    invitation_id: uuid.UUID
    to_name: str
    to_email: str
    tenant_name: str
    tenant_slug: str
    tenant_timezone: str
    inviter: str
    link: str
    api_url: str
    expires_at: datetime

    @property
    def subject(self) -> str:
        return one_line(f"You are invited to {self.tenant_name}: set your password")

    def _expiry(self) -> str:
        text = self.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        try:
            zone = ZoneInfo(self.tenant_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return text
        if self.tenant_timezone == "UTC":
            return text
        local = self.expires_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        return f"{text} ({local} {self.tenant_timezone})"

    def text(self) -> str:
        return (
            f"Hello {one_line(self.to_name)},\n\n"
            f"{one_line(self.inviter)} invited you to the {one_line(self.tenant_name)} service desk.\n\n"
            "Open this link to set your password:\n"
            f"  {self.link}\n\n"
            f"The link works once and expires at {self._expiry()}. A newer invitation replaces it.\n\n"
            f"Then sign in with your email address ({self.to_email}) and the organization "
            f"{self.tenant_slug!r}.\n\n"
            "Using the API instead of a browser: POST the link's token and your new password to\n"
            f"  {self.api_url}\n"
            '  {"token": "<the token from the link>", "password": "<your new password>"}\n\n'
            "If you did not expect this invitation, ignore this email: nothing happens until the link is "
            "used.\n"
        )

    def html(self) -> str:
        e = html.escape
        return (
            "<!doctype html><html><body>"
            f"<p>Hello {e(one_line(self.to_name))},</p>"
            f"<p>{e(one_line(self.inviter))} invited you to the <strong>{e(one_line(self.tenant_name))}"
            "</strong> service desk.</p>"
            f'<p><a href="{e(self.link, quote=True)}">Set your password</a></p>'
            f"<p>The link works once and expires at {e(self._expiry())}. A newer invitation replaces it.</p>"
            f"<p>Then sign in with your email address ({e(self.to_email)}) and the organization "
            f"<code>{e(self.tenant_slug)}</code>.</p>"
            "<p>If you did not expect this invitation, ignore this email: nothing happens until the link is "
            "used.</p></body></html>"
        )

    def email(self, settings: Settings) -> EmailMessage:
        """The MIME message. Every header value is one line (names and tenant names may hold CR/LF, which
        ``EmailMessage`` refuses rather than letting them start a header); raises ValueError for an address
        that cannot be written."""
        mail = EmailMessage()
        mail["From"] = settings.smtp_from
        mail["To"] = Address(display_name=one_line(self.to_name), addr_spec=self.to_email)
        mail["Subject"] = self.subject
        mail["Date"] = format_datetime(utcnow())
        mail["Message-ID"] = make_msgid(idstring=self.invitation_id.hex, domain="msp-platform")
        mail["Auto-Submitted"] = "auto-generated"
        mail["X-MSP-Invitation-Id"] = str(self.invitation_id)
        mail.set_content(self.text())
        mail.add_alternative(self.html(), subtype="html")
        return mail


_UNSENDABLE = {
    "used": "the invitation was already used",
    "revoked": "the invitation was revoked (or superseded by a newer one)",
    "expired": "the invitation has expired",
}


def _unsendable(invitation: Invitation, now: datetime) -> str | None:
    if invitation.emailed_at is not None:
        return "the invitation was already emailed"
    return _UNSENDABLE.get(invitation.status(now))


async def _inviter(session: AsyncSession, tenant_id: uuid.UUID, created_by: str | None) -> str:
    """Who invited, as the invitee may read it: a user or staff member by name, an integration client by
    its name."""
    kind, _, subject = (created_by or "").partition(":")
    try:
        if kind == "user":
            user = await UserRepository(session).get(uuid.UUID(subject))
            if user is not None:
                return user.name
        elif kind == "staff":
            member = await StaffRepository(session).get(uuid.UUID(subject))
            if member is not None:
                return f"{member.name} (your IT service provider)"
        elif kind == "client":
            tenant = system_tenant_context(tenant_id).require_write_tenant()
            client = await ClientRepository(session).get(tenant, subject)
            if client is not None:
                return f"The integration {client.name!r}"
    except ValueError:
        pass
    return "An administrator"


async def _message(
    session: AsyncSession, settings: Settings, invitation: Invitation, user: User, tenant: Tenant, token: str
) -> InvitationMessage:
    return InvitationMessage(
        invitation_id=invitation.id,
        to_name=user.name,
        to_email=user.email,
        tenant_name=tenant.name,
        tenant_slug=tenant.slug,
        tenant_timezone=tenant.timezone,
        inviter=await _inviter(session, tenant.id, invitation.created_by),
        link=accept_url(settings, token),
        api_url=f"{settings.issuer.rstrip('/')}{ACCEPT_API_PATH}",
        expires_at=invitation.expires_at,
    )


def _skip(invitation_id: uuid.UUID, reason: str) -> str:
    log.info("invitation email not sent", invitation_id=str(invitation_id), reason=reason)
    return "skipped"


async def send_invitation_email(
    session: AsyncSession,
    settings: Settings,
    invitation_id: uuid.UUID,
    sealed_token: str,
    *,
    retries: int = 0,
) -> str:
    """The job's body (tenant-scoped session): returns ``sent``, ``skipped`` or ``failed`` (permanent);
    raises ``SendFailed`` for a transient failure, for Dramatiq to retry."""
    repo = UserRepository(session)
    invitation = await repo.invitation(invitation_id)
    if invitation is None:
        return _skip(invitation_id, "no such invitation")
    why = _unsendable(invitation, utcnow())
    if why:
        return _skip(invitation_id, why)
    tenant = await repo.tenant(invitation.tenant_id)
    if tenant is None or tenant.status != TenantStatus.active:
        return _skip(invitation_id, "the tenant's access is closed")
    user = await repo.get(invitation.user_id)
    if user is None or not user.active:
        return _skip(invitation_id, "the user is deactivated")
    if not smtp_configured(settings):
        return _skip(invitation_id, "email is not configured (MSP_SMTP_HOST)")
    token = unseal_token(settings, sealed_token)
    if token is None:
        return _skip(invitation_id, "the token was sealed with a secret key no longer configured")
    if not constant_time_equals(sha256_hex(token), invitation.token_hash):
        return _skip(invitation_id, "the token does not match the invitation")
    message = await _message(session, settings, invitation, user, tenant, token)
    try:
        mail = message.email(settings)
    except (ValueError, TypeError, HeaderParseError) as exc:
        log.warning("invitation email not sent", invitation_id=str(invitation_id), error=str(exc)[:300])
        return "failed"
    # Nothing stays open (or locked) while talking to the SMTP server.
    await session.commit()
    try:
        await send_mail(settings, mail)
    except MailError as exc:
        log.warning(
            "invitation email failed",
            invitation_id=str(invitation_id),
            error=str(exc),
            permanent=exc.permanent,
            retries=retries,
        )
        if exc.permanent:
            return "failed"
        raise SendFailed(str(exc)) from exc
    # Recorded by the job's own commit: a redelivered message (the broker lost an acknowledgement) finds it
    # and sends nothing. A send that succeeded just before a crash can still be repeated: at least once.
    invitation.emailed_at = utcnow()
    await session.flush()
    log.info("invitation email sent", invitation_id=str(invitation_id))
    return "sent"
