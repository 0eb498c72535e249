"""Escalation jobs: bus events start escalations; pages are notified after the commit that created them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msp_platform.escalations import service
from msp_platform.kit import events as bus
from msp_platform.worker.context import JobContext
from msp_platform.worker.registry import Queue, actor

TRIGGERING = (
    "incident.created",
    "incident.priority_changed",
    "incident.reopened",
    "incident.sla_warning",
    "incident.sla_breached",
    "incident.state_changed",
)


@actor("escalations.on_incident_event", queue=Queue.high)
async def on_incident_event(
    job: JobContext, *, event_id: str, type: str, occurred_at: str, payload: dict[str, Any]
) -> None:
    if type not in TRIGGERING:
        return
    await service.on_incident_event(job.session, type, datetime.fromisoformat(occurred_at), payload)


for _event in TRIGGERING:
    bus.subscribe(_event, "escalations.on_incident_event")
