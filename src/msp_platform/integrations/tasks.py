"""Integration jobs: bus events to webhooks, webhook attempts, notification sends, and the safety sweep."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from msp_platform.integrations import channels, service
from msp_platform.integrations.repository import SweepRepository
from msp_platform.kit import events as bus
from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.worker.context import JobContext
from msp_platform.worker.outbox import enqueue
from msp_platform.worker.registry import Queue, actor, periodic

log = get_logger(__name__)

ON_EVENT_ACTOR = "integrations.webhooks_on_event"
SWEEP_EVERY = timedelta(seconds=60)
# A delivery overdue by this much lost its message (in-process broker restarted, worker died mid-attempt).
DELIVERY_SWEEP_GRACE = timedelta(seconds=60)
# A pending notification untouched this long lost its job (its retries are all shorter than this).
NOTIFICATION_SWEEP_GRACE = timedelta(minutes=5)
SWEEP_BATCH = 1000


@actor(ON_EVENT_ACTOR, queue=Queue.default)
async def webhooks_on_event(
    job: JobContext, *, event_id: str, type: str, occurred_at: str, payload: dict[str, Any]
) -> None:
    assert job.tenant_id is not None
    created = await service.publish_event(
        job.session,
        tenant_id=job.tenant_id,
        event_id=event_id,
        event_type=type,
        occurred_at=occurred_at,
        payload=payload,
    )
    job.info["deliveries"] = len(created)


@actor(service.DELIVER_ACTOR, queue=Queue.default, max_retries=3)
async def deliver_webhook(job: JobContext, *, delivery_id: str, attempt: int) -> None:
    job.info["outcome"] = await service.attempt_delivery(
        job.session, job.settings, uuid.UUID(delivery_id), attempt
    )


@actor(channels.SEND_ACTOR, queue=Queue.high, max_retries=3)
async def send_notification(job: JobContext, *, notification_id: str, attempt: int) -> None:
    job.info["outcome"] = await channels.send_notification(
        job.session, job.settings, uuid.UUID(notification_id), attempt
    )


@actor("integrations.sweep", queue=Queue.default, tenant_scoped=False, max_retries=0)
async def sweep(job: JobContext) -> None:
    """Re-queue deliveries and notifications whose job was lost. Lists ids as the owner and hands each one
    to its tenant-scoped job; the attempt numbers make a duplicate harmless."""
    now = utcnow()
    async with job.database.dangerously_unscoped_session() as owner:
        repo = SweepRepository(owner)
        deliveries = await repo.overdue_deliveries(now - DELIVERY_SWEEP_GRACE, SWEEP_BATCH)
        notifications = await repo.stalled_notifications(now - NOTIFICATION_SWEEP_GRACE, SWEEP_BATCH)
    for tenant_id, delivery_id, attempts in deliveries:
        enqueue(
            job.session,
            service.DELIVER_ACTOR,
            tenant_id=tenant_id,
            delivery_id=delivery_id,
            attempt=attempts + 1,
        )
    for tenant_id, notification_id, attempts in notifications:
        enqueue(
            job.session,
            channels.SEND_ACTOR,
            tenant_id=tenant_id,
            notification_id=notification_id,
            attempt=attempts + 1,
        )
    if deliveries or notifications:
        log.info(
            "integrations sweep re-queued work", deliveries=len(deliveries), notifications=len(notifications)
        )


bus.subscribe("*", ON_EVENT_ACTOR, public_only=True)
periodic("integrations.sweep", every=SWEEP_EVERY, actor_name="integrations.sweep")
