"""SLA jobs: every incident event recomputes the incident's clocks and threshold timers."""

from __future__ import annotations

import uuid
from typing import Any

from msp_platform.kit import events as bus
from msp_platform.sla import service
from msp_platform.sla.repository import SlaRepository
from msp_platform.worker.context import JobContext
from msp_platform.worker.registry import Queue, actor


@actor("sla.on_incident_event", queue=Queue.high)
async def on_incident_event(
    job: JobContext, *, event_id: str, type: str, occurred_at: str, payload: dict[str, Any]
) -> None:
    if type.startswith("incident.sla_"):
        return  # our own announcements change no clock
    incident = await SlaRepository(job.session).incident(uuid.UUID(payload["incident_id"]), for_update=True)
    if incident is not None:
        await service.sync(job.session, incident)


# The events that can move a clock: state, first response, priority (targets), public updates (cadence).
CLOCK_EVENTS = (
    "incident.created",
    "incident.state_changed",
    "incident.responded",
    "incident.priority_changed",
    "incident.commented",
    "incident.reopened",
    "incident.merged",
    "incident.unmerged",
)
for _event in CLOCK_EVENTS:
    bus.subscribe(_event, "sla.on_incident_event")
