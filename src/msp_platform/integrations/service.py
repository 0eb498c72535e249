"""Webhook endpoints and deliveries: the rules.

- An endpoint has an https URL (http only to localhost outside production), a ``whsec_`` signing secret
  (shown once, stored encrypted) and event type patterns (``incident.*``, ``incident.sla_*``, ``page.*``,
  ``*``); ``webhook.test`` is sent only when asked for.
- Every event on the bus becomes one delivery per matching active endpoint of its tenant, identified by
  its ``webhook-id`` (``msg_<event id>``), unique per endpoint: a repeated bus job adds nothing.
  Events marked ``visibility: internal`` (MSP work notes) never leave the platform.
- A delivery is attempted at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h; a 2xx
  delivers it, 410 Gone disables the endpoint, and after the last failure it is ``dead``. A replay is a new
  attempt of the same message (same ``webhook-id``, same body, fresh timestamp and signature).
- Each attempt number is claimed with a compare-and-set before the POST, so duplicate or raced jobs send it
  once; the HTTP call runs outside any database transaction.
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import label
from msp_platform.config import Settings
from msp_platform.integrations import webhooks
from msp_platform.integrations.repository import WebhookRepository
from msp_platform.integrations.schemas import DeliveryStatus, EndpointCreate
from msp_platform.kit.errors import Conflict, FieldError, NotFound
from msp_platform.kit.logging import get_logger
from msp_platform.kit.patch import assign
from msp_platform.kit.time import utcnow
from msp_platform.kit.validation import raise_if, text_errors
from msp_platform.models.oncall import WebhookDelivery, WebhookEndpoint
from msp_platform.worker.outbox import enqueue

log = get_logger(__name__)

DELIVER_ACTOR = "integrations.deliver_webhook"
TEST_EVENT = "webhook.test"
MAX_PATTERNS = 50
_SEGMENT = re.compile(r"^(\*|[a-z][a-z0-9_]*\*?)$")
# While an attempt is in flight its delivery's next_attempt_at is pushed this far: should the worker die
# mid-attempt, the sweep re-queues it after that.
ATTEMPT_LEASE = timedelta(minutes=2)


# --- rules --------------------------------------------------------------------------------------------


def pattern_errors(field: str, patterns: list[str]) -> list[FieldError]:
    if not patterns:
        return [FieldError(field, "name at least one event type pattern (e.g. incident.*)")]
    if len(patterns) > MAX_PATTERNS:
        return [FieldError(field, f"at most {MAX_PATTERNS} patterns")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, pattern in enumerate(patterns):
        if len(pattern) > 80 or not all(_SEGMENT.match(s) for s in pattern.split(".")):
            errors.append(
                FieldError(
                    f"{field}[{i}]",
                    f"{pattern!r} is not an event type pattern: dot-separated lowercase names, '*' ending a "
                    "segment or standing for one (incident.created, incident.*, incident.sla_*, page.*, *)",
                )
            )
        elif pattern in seen:
            errors.append(FieldError(f"{field}[{i}]", f"{pattern!r} is listed twice"))
        seen.add(pattern)
    return errors


def matches(patterns: list[str], event_type: str) -> bool:
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def deliverable(payload: dict[str, Any]) -> bool:
    """Only what the tenant may see leaves the platform: an event that carries a visibility must be public."""
    visibility = payload.get("visibility")
    return visibility is None or visibility == "public"


def _check(settings: Settings, values: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if "url" in values:
        problem = webhooks.url_problem(values["url"], settings)
        if problem:
            errors.append(FieldError("url", problem))
    if "event_types" in values:
        errors += pattern_errors("event_types", values["event_types"])
    if "description" in values:
        errors += text_errors("description", values["description"], max_length=200)
    return errors


# --- endpoints ----------------------------------------------------------------------------------------


async def create_endpoint(
    session: AsyncSession, settings: Settings, data: EndpointCreate
) -> tuple[WebhookEndpoint, str]:
    values: dict[str, Any] = {
        "url": data.url.strip(),
        "event_types": data.event_types,
        "description": data.description,
        "active": data.active,
    }
    raise_if(_check(settings, values), "The webhook endpoint is invalid.")
    secret = webhooks.new_secret()
    endpoint = WebhookEndpoint(
        **values, secret_encrypted=webhooks.seal(settings, webhooks.SigningSecrets(secret))
    )
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


async def update_endpoint(
    session: AsyncSession, settings: Settings, endpoint: WebhookEndpoint, values: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    if isinstance(values.get("url"), str):
        values["url"] = values["url"].strip()
    raise_if(_check(settings, values), "The change is invalid.")
    changed = assign(endpoint, values)
    await session.flush()
    return changed


async def rotate_secret(
    session: AsyncSession, settings: Settings, endpoint: WebhookEndpoint
) -> tuple[str, datetime]:
    """A new secret signs from now on; the previous one keeps signing (second signature) for a day."""
    secret = webhooks.new_secret()
    rotated = webhooks.unseal(settings, endpoint.secret_encrypted).rotated(secret)
    endpoint.secret_encrypted = webhooks.seal(settings, rotated)
    endpoint.updated_at = utcnow()
    await session.flush()
    assert rotated.previous_expires_at is not None
    return secret, rotated.previous_expires_at


async def delete_endpoint(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    await WebhookRepository(session).delete_endpoint(endpoint)


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = await WebhookRepository(session).endpoint(endpoint_id)
    if endpoint is None:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found.")
    return endpoint


async def get_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    delivery = await WebhookRepository(session).delivery(delivery_id, endpoint_id)
    if delivery is None:
        raise NotFound(f"Delivery {delivery_id} not found.")
    return delivery


# --- deliveries ---------------------------------------------------------------------------------------


def _queue_attempt(
    session: AsyncSession,
    delivery: WebhookDelivery | uuid.UUID,
    tenant_id: uuid.UUID,
    attempt: int,
    eta: datetime | None = None,
) -> None:
    delivery_id = delivery.id if isinstance(delivery, WebhookDelivery) else delivery
    enqueue(session, DELIVER_ACTOR, tenant_id=tenant_id, eta=eta, delivery_id=delivery_id, attempt=attempt)


async def fan_out(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    event_type: str,
    message_id: str,
    timestamp: str,
    data: dict[str, Any],
    endpoints: list[WebhookEndpoint] | None = None,
) -> list[uuid.UUID]:
    """One delivery per matching active endpoint (``endpoints``: those instead of matching), each queued for
    its first attempt; endpoints that already have this message get nothing new. Returns the new ids."""
    repo = WebhookRepository(session)
    if endpoints is None:
        endpoints = [e for e in await repo.active_endpoints() if matches(e.event_types, event_type)]
    body = {"type": event_type, "timestamp": timestamp, "data": data}
    now = utcnow()
    created: list[uuid.UUID] = []
    for endpoint in endpoints:
        delivery_id = await repo.add_delivery(
            tenant_id=endpoint.tenant_id,
            endpoint_id=endpoint.id,
            message_id=message_id,
            event_type=event_type,
            payload=body,
            now=now,
        )
        if delivery_id is not None:
            _queue_attempt(session, delivery_id, endpoint.tenant_id, 1)
            created.append(delivery_id)
    return created


async def publish_event(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    event_id: str,
    event_type: str,
    occurred_at: str,
    payload: dict[str, Any],
) -> list[uuid.UUID]:
    """A bus event to the tenant's webhooks (the bus subscriber's body)."""
    if not deliverable(payload):
        return []
    return await fan_out(
        session,
        tenant_id=tenant_id,
        event_type=event_type,
        message_id=webhooks.message_id_for(uuid.UUID(event_id)),
        timestamp=occurred_at,
        data=payload,
    )


async def send_test(session: AsyncSession, endpoint: WebhookEndpoint) -> WebhookDelivery:
    if not endpoint.active:
        raise Conflict("The endpoint is disabled; enable it (PATCH active=true) before sending a test event.")
    message_id = webhooks.new_message_id()
    [delivery_id] = await fan_out(
        session,
        tenant_id=endpoint.tenant_id,
        event_type=TEST_EVENT,
        message_id=message_id,
        timestamp=utcnow().isoformat(),
        data={"endpoint_id": str(endpoint.id), "message": "A test event from msp-platform."},
        endpoints=[endpoint],
    )
    delivery = await WebhookRepository(session).delivery(delivery_id)
    assert delivery is not None
    return delivery


async def replay(
    session: AsyncSession, endpoint: WebhookEndpoint, delivery: WebhookDelivery
) -> WebhookDelivery:
    """A new attempt of the same message now (same webhook-id and body). Retries follow the schedule from
    the number of attempts made so far if it fails."""
    if not endpoint.active:
        raise Conflict("The endpoint is disabled; enable it (PATCH active=true) before replaying.")
    if delivery.status == DeliveryStatus.pending:
        raise Conflict("This delivery is already queued for an attempt.")
    now = utcnow()
    delivery.status = DeliveryStatus.pending
    delivery.next_attempt_at = now
    delivery.updated_at = now
    await session.flush()
    _queue_attempt(session, delivery, delivery.tenant_id, delivery.attempts + 1)
    return delivery


async def attempt_delivery(
    session: AsyncSession, settings: Settings, delivery_id: uuid.UUID, attempt: int
) -> str:
    """Make attempt number ``attempt`` of a delivery (the delivery job's body); returns what happened.

    Three short transactions on the job's session: claim the attempt (and read what to send), POST outside
    any transaction, record the outcome (and queue the next attempt) — the job commits the last one."""
    repo = WebhookRepository(session)
    now = utcnow()
    if not await repo.claim_attempt(delivery_id, attempt, lease_until=now + ATTEMPT_LEASE, now=now):
        return "skipped"  # made already (a duplicate message), delivered, dead, or deleted
    delivery = await repo.delivery(delivery_id)
    assert delivery is not None
    endpoint = await repo.endpoint(delivery.endpoint_id)
    assert endpoint is not None
    if not endpoint.active:
        await repo.record_attempt(
            delivery_id,
            attempt,
            attempts=attempt - 1,
            status=DeliveryStatus.dead,
            next_attempt_at=None,
            last_error="not sent: the endpoint is disabled",
            updated_at=now,
        )
        return "endpoint disabled"
    url = endpoint.url
    keys = webhooks.unseal(settings, endpoint.secret_encrypted).active(now)
    message_id = delivery.message_id
    body = webhooks.encode_body(
        str(delivery.payload.get("type", delivery.event_type)),
        str(delivery.payload.get("timestamp", "")),
        dict(delivery.payload.get("data", {})),
    )
    tenant_id = delivery.tenant_id
    await session.commit()  # the claim holds; no transaction stays open during the POST

    result = await webhooks.post(url, webhooks.signed_headers(keys, message_id, body), body)

    done = utcnow()
    values: dict[str, Any] = {
        "last_status_code": result.status_code,
        "last_error": result.error,
        "updated_at": done,
    }
    if result.delivered:
        values.update(status=DeliveryStatus.delivered, delivered_at=done, next_attempt_at=None)
        outcome = "delivered"
    elif result.gone:
        values.update(status=DeliveryStatus.dead, next_attempt_at=None)
        outcome = "gone"
    else:
        delay = webhooks.next_delay(attempt)
        if delay is None:
            values.update(status=DeliveryStatus.dead, next_attempt_at=None)
            outcome = "dead"
        else:
            values.update(status=DeliveryStatus.failed, next_attempt_at=done + delay)
            outcome = "retry"
    if not await repo.record_attempt(delivery_id, attempt, **values):
        return "superseded"
    if outcome == "retry":
        _queue_attempt(session, delivery_id, tenant_id, attempt + 1, eta=values["next_attempt_at"])
    if outcome == "gone":
        gone = await repo.endpoint(endpoint.id)
        if gone is not None and gone.active:
            label(session, gone, "disabled")
            gone.active = False
            await session.flush()
        log.info("webhook endpoint answered 410 Gone: disabled", endpoint_id=str(endpoint.id))
    return outcome
