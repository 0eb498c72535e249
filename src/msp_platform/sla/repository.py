"""All SQL of the SLA engine. Reads take many incidents at once, so a recalculation of a page of incidents is a
handful of queries, not a few per incident."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Incident, IncidentEvent
from msp_platform.models.sla import IncidentSla, SlaCalendar, SlaNotice, SlaPolicy

# The events a clock is computed from: states, the first response, priority changes, public comments.
CLOCK_EVENT_TYPES = ("created", "state_changed", "responded", "priority_changed", "commented")


class SlaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    # --- policies ------------------------------------------------------------------------------------

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

    async def policies_by_version(self, versions: set[int]) -> dict[int, SlaPolicy]:
        if not versions:
            return {}
        rows = await self.session.scalars(select(SlaPolicy).where(SlaPolicy.version.in_(sorted(versions))))
        return {p.version: p for p in rows}

    # --- incidents and their logs -----------------------------------------------------------------------

    async def incident(self, incident_id: uuid.UUID, *, for_update: bool = False) -> Incident | None:
        stmt = select(Incident).where(Incident.id == incident_id)
        if for_update and self._postgres:
            stmt = stmt.with_for_update()
        found: Incident | None = await self.session.scalar(stmt)
        return found

    async def incidents_page(
        self,
        opened_from: datetime,
        opened_to: datetime,
        *,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        for_update: bool,
    ) -> Sequence[Incident]:
        """Incidents opened in [from, to) in (opened_at, id) order, after the cursor; one more than asked
        tells the caller another page follows."""
        stmt = select(Incident).where(Incident.opened_at >= opened_from, Incident.opened_at < opened_to)
        if after is not None:
            stmt = stmt.where(
                or_(
                    Incident.opened_at > after[0],
                    and_(Incident.opened_at == after[0], Incident.id > after[1]),
                )
            )
        stmt = stmt.order_by(Incident.opened_at, Incident.id).limit(limit + 1)
        if for_update and self._postgres:
            stmt = stmt.with_for_update()
        return (await self.session.scalars(stmt)).all()

    async def clock_events(self, incident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Row[Any]]]:
        """The events clocks read, per incident, in log order: rows (not entities) with ``type``,
        ``occurred_at``, ``data``, ``visibility`` and ``actor``."""
        out: dict[uuid.UUID, list[Row[Any]]] = defaultdict(list)
        if not incident_ids:
            return out
        rows = await self.session.execute(
            select(
                IncidentEvent.incident_id,
                IncidentEvent.type,
                IncidentEvent.occurred_at,
                IncidentEvent.data,
                IncidentEvent.visibility,
                IncidentEvent.actor,
            )
            .where(
                IncidentEvent.incident_id.in_(list(incident_ids)), IncidentEvent.type.in_(CLOCK_EVENT_TYPES)
            )
            .order_by(IncidentEvent.incident_id, IncidentEvent.occurred_at, IncidentEvent.seq)
        )
        for event in rows:
            out[event.incident_id].append(event)
        return out

    async def last_event_seqs(self, incident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The last event number of each incident's log (the caller holds the incidents' row locks)."""
        if not incident_ids:
            return {}
        rows = await self.session.execute(
            select(IncidentEvent.incident_id, func.max(IncidentEvent.seq))
            .where(IncidentEvent.incident_id.in_(list(incident_ids)))
            .group_by(IncidentEvent.incident_id)
        )
        found = {r[0]: int(r[1] or 0) for r in rows}
        return {i: found.get(i, 0) for i in incident_ids}

    # --- stored results --------------------------------------------------------------------------------

    async def stored(self, incident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, IncidentSla]]:
        out: dict[uuid.UUID, dict[str, IncidentSla]] = defaultdict(dict)
        if not incident_ids:
            return out
        rows = await self.session.scalars(
            select(IncidentSla).where(IncidentSla.incident_id.in_(list(incident_ids)))
        )
        for row in rows:
            out[row.incident_id][row.target] = row
        return out

    async def notices(self, incident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, set[tuple[str, int, int]]]:
        """(target, threshold, cycle) of every warning and breach already passed, per incident."""
        out: dict[uuid.UUID, set[tuple[str, int, int]]] = defaultdict(set)
        if not incident_ids:
            return out
        rows = await self.session.execute(
            select(SlaNotice.incident_id, SlaNotice.target, SlaNotice.threshold, SlaNotice.cycle).where(
                SlaNotice.incident_id.in_(list(incident_ids))
            )
        )
        for incident_id, target, threshold, cycle in rows:
            out[incident_id].add((target, int(threshold), int(cycle)))
        return out

    # --- calendars -------------------------------------------------------------------------------------

    async def calendars(self, ids: set[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        if not ids:
            return {}
        rows = await self.session.execute(
            select(SlaCalendar.id, SlaCalendar.definition).where(SlaCalendar.id.in_(sorted(ids)))
        )
        return {r[0]: dict(r[1]) for r in rows}

    async def pin_calendar(self, tenant_id: uuid.UUID, digest: str, definition: dict[str, Any]) -> uuid.UUID:
        """The id of the stored calendar with this content, stored now if new (concurrent writers of the same
        content end up with the one row: insert-or-ignore, then read)."""
        found: uuid.UUID | None = await self.session.scalar(
            select(SlaCalendar.id).where(SlaCalendar.digest == digest)
        )
        if found is not None:
            return found
        now = utcnow()
        values = {
            "tenant_id": tenant_id,
            "id": new_id(),
            "digest": digest,
            "definition": definition,
            "created_at": now,
            "updated_at": now,
        }
        insert = pg_insert if self._postgres else sqlite_insert
        await self.session.execute(
            insert(SlaCalendar)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["tenant_id", "digest"])
        )
        stored: uuid.UUID = await self.session.scalar(
            select(SlaCalendar.id).where(SlaCalendar.digest == digest)
        )  # type: ignore[assignment]
        return stored
