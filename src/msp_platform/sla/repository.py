"""All SQL of the SLA engine."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.models.incident import Incident, IncidentComment, IncidentEvent
from msp_platform.models.sla import IncidentSla, SlaNotice, SlaPolicy


class SlaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current_policy(self) -> SlaPolicy | None:
        found: SlaPolicy | None = await self.session.scalar(
            select(SlaPolicy).order_by(SlaPolicy.version.desc()).limit(1)
        )
        return found

    async def policy(self, version: int) -> SlaPolicy | None:
        found: SlaPolicy | None = await self.session.scalar(
            select(SlaPolicy).where(SlaPolicy.version == version)
        )
        return found

    async def policies(self) -> list[SlaPolicy]:
        return list((await self.session.scalars(select(SlaPolicy).order_by(SlaPolicy.version.desc()))).all())

    async def incident(self, incident_id: uuid.UUID, *, for_update: bool = False) -> Incident | None:
        stmt = select(Incident).where(Incident.id == incident_id)
        bind = self.session.bind
        if for_update and bind is not None and bind.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        found: Incident | None = await self.session.scalar(stmt)
        return found

    async def clock_events(self, incident_id: uuid.UUID) -> list[IncidentEvent]:
        rows = await self.session.scalars(
            select(IncidentEvent)
            .where(
                IncidentEvent.incident_id == incident_id,
                IncidentEvent.type.in_(("created", "state_changed", "responded")),
            )
            .order_by(IncidentEvent.occurred_at, IncidentEvent.seq)
        )
        return list(rows.all())

    async def public_staff_updates(self, incident_id: uuid.UUID) -> list[datetime]:
        rows = await self.session.scalars(
            select(IncidentComment.created_at)
            .where(
                IncidentComment.incident_id == incident_id,
                IncidentComment.visibility == "public",
                IncidentComment.author.like("staff:%"),
            )
            .order_by(IncidentComment.created_at)
        )
        return list(rows.all())

    async def stored(self, incident_id: uuid.UUID) -> dict[str, IncidentSla]:
        rows = await self.session.scalars(select(IncidentSla).where(IncidentSla.incident_id == incident_id))
        return {r.target: r for r in rows}

    async def notice_exists(self, incident_id: uuid.UUID, target: str, threshold: int, version: int) -> bool:
        found = await self.session.scalar(
            select(SlaNotice.id).where(
                SlaNotice.incident_id == incident_id,
                SlaNotice.target == target,
                SlaNotice.threshold == threshold,
                SlaNotice.policy_version == version,
            )
        )
        return found is not None

    async def incidents_opened(self, opened_from: datetime, opened_to: datetime) -> Sequence[Incident]:
        rows = await self.session.scalars(
            select(Incident)
            .where(Incident.opened_at >= opened_from, Incident.opened_at < opened_to)
            .order_by(Incident.opened_at, Incident.id)
        )
        return rows.all()
