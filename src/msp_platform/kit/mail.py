"""Outgoing email over SMTP (``MSP_SMTP_*``), shared by page notifications and invitations.

Off while ``MSP_SMTP_HOST`` is empty. The standard library's ``smtplib`` runs in a worker thread; STARTTLS
(or implicit TLS on port 465) unless ``MSP_SMTP_STARTTLS=false``. Callers build an ``EmailMessage`` (whose
default policy refuses CR/LF in header values: pass values through ``one_line`` first).
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage

import anyio.to_thread

from msp_platform.config import Environment, Settings

SMTP_TIMEOUT_SECONDS = 30
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


class MailError(Exception):
    """A send failed. ``permanent``: retrying cannot help (a refused address, a refused configuration)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def smtp_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host.strip())


def one_line(value: str, *, limit: int = 200) -> str:
    """Text safe in a header and a single line of a body: control characters (CR, LF, ...) become spaces."""
    cleaned = " ".join(_CONTROL.sub(" ", value).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "\u2026"


def _send_blocking(settings: Settings, message: EmailMessage) -> None:
    implicit_tls = settings.smtp_port == 465
    tls = ssl.create_default_context()
    client: smtplib.SMTP = (
        smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS, context=tls)
        if implicit_tls
        else smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS)
    )
    with client:
        client.ehlo()
        if settings.smtp_starttls and not implicit_tls:
            client.starttls(context=tls)
            client.ehlo()
        if settings.smtp_username:
            if not (implicit_tls or settings.smtp_starttls) and settings.env is Environment.production:
                raise MailError("refusing to send SMTP credentials without TLS in production", permanent=True)
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            client.login(settings.smtp_username, password)
        client.send_message(message)


async def send_mail(settings: Settings, message: EmailMessage) -> None:
    """Send one message or raise ``MailError`` (never blocks the event loop)."""
    if not smtp_configured(settings):
        raise MailError("email is not configured (MSP_SMTP_HOST)", permanent=True)
    try:
        await anyio.to_thread.run_sync(_send_blocking, settings, message)
    except MailError:
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"recipient refused: {exc.recipients}"[:500], permanent=True) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"{type(exc).__name__}: {exc}"[:500]) from exc
