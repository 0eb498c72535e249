"""The internal event bus: one mechanism for everything that reacts to domain events (SLA clocks,
escalations, webhooks).

Publishing writes one outbox job per subscriber in the publisher's own transaction, so subscribers see an
event exactly when its change committed, each subscriber retries on its own, and nothing is lost while the
broker is down. Subscribers are Dramatiq actors (``worker.registry.actor``) taking ``event_id``, ``type``,
``payload`` and ``occurred_at``; a delivery can repeat, so handlers are idempotent.
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.worker.outbox import enqueue


@dataclass(frozen=True)
class Subscription:
    pattern: str  # fnmatch over event types, e.g. "incident.*"
    actor_name: str
    # Tenant-facing subscribers (webhooks) never receive internal events (work notes, pages).
    public_only: bool = False


SUBSCRIPTIONS: list[Subscription] = []


def subscribe(pattern: str, actor_name: str, *, public_only: bool = False) -> None:
    if any(s.pattern == pattern and s.actor_name == actor_name for s in SUBSCRIPTIONS):
        return
    SUBSCRIPTIONS.append(Subscription(pattern, actor_name, public_only))


def unsubscribe(actor_name: str) -> None:
    SUBSCRIPTIONS[:] = [s for s in SUBSCRIPTIONS if s.actor_name != actor_name]


def publish(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    type: str,
    event_id: uuid.UUID,
    occurred_at: datetime,
    payload: dict[str, Any],
) -> int:
    """Queue the event for every matching subscriber; returns how many."""
    count = 0
    internal = payload.get("visibility") == "internal"
    for sub in SUBSCRIPTIONS:
        if sub.public_only and internal:
            continue
        if fnmatch.fnmatchcase(type, sub.pattern):
            enqueue(
                session,
                sub.actor_name,
                tenant_id=tenant_id,
                event_id=str(event_id),
                type=type,
                occurred_at=occurred_at.isoformat(),
                payload=payload,
            )
            count += 1
    return count
