from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Index, Integer, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk
from msp_platform.db.types import JSONType


class SlaPolicy(TenantOwned, Base):
    """Per-priority targets, the calendar they run on and what pauses them. Versioned: an incident keeps the
    version in force when it opened unless a recalculation moves it."""

    __tablename__ = "sla_policies"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(120))
    # "business_hours" (the tenant's calendar), "24x7", or "custom" (``custom_calendar``)
    calendar: Mapped[str] = mapped_column(String(20))
    # {"timezone": ..., "hours": [...], "holidays": [...]} when calendar == "custom"
    custom_calendar: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # States that stop the clock, and (optionally) only for these on-hold reasons.
    pause_states: Mapped[list[str]] = mapped_column(JSONType)
    pause_hold_reasons: Mapped[list[str] | None] = mapped_column(JSONType)
    warning_percents: Mapped[list[int]] = mapped_column(JSONType)
    # {"1": {"response_minutes": 15, "resolution_minutes": 240, "update_minutes": 30}, ... "5": {...}}
    targets: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSONType)
    created_by: Mapped[str | None] = mapped_column(String(160))


class SlaCalendar(TenantOwned, Base):
    """An effective business calendar an incident's clocks run on, stored once per distinct content: the
    calendar is pinned to the incident when its SLA starts, so editing the tenant's business hours later
    changes no running incident unless a recalculation is asked for."""

    __tablename__ = "sla_calendars"
    __audited__: ClassVar[bool] = False
    __table_args__ = (UniqueConstraint("tenant_id", "digest"),)

    # sha256 of the canonical JSON of ``definition``
    digest: Mapped[str] = mapped_column(String(64))
    # {"source": "24x7" | "custom" | "business_hours", "timezone": ..., "hours": [...], "holidays": [dates]}
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)


class IncidentSla(TenantOwned, Base):
    """The latest computed state of one incident's target (response, resolution, update cadence): what the
    reports aggregate in SQL. Recomputed from the event log on every incident event and timer.

    For ``target == "update"`` the row is the update cadence: ``due_at`` is when the next public update is
    due, ``breached_at`` the first missed update, ``elapsed_seconds`` the counted time of the current cycle."""

    __tablename__ = "incident_slas"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "incident_id", "target"),
        Index("ix_incident_slas_tenant_status", "tenant_id", "status"),
        # The SLA compliance report selects a period's rows by the incident's opening time.
        Index("ix_incident_slas_tenant_opened", "tenant_id", "opened_at"),
        tenant_fk("incident_id", "incidents"),
        tenant_fk("calendar_id", "sla_calendars"),
    )

    incident_id: Mapped[uuid.UUID] = mapped_column()
    target: Mapped[str] = mapped_column(String(20))
    policy_version: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(SmallInteger)
    duration_seconds: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12))
    due_at: Mapped[datetime | None] = mapped_column()
    breached_at: Mapped[datetime | None] = mapped_column()
    stopped_at: Mapped[datetime | None] = mapped_column()
    elapsed_seconds: Mapped[int] = mapped_column(BigInteger)
    paused_seconds: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[datetime] = mapped_column()
    # The calendar pinned when the incident's SLA started (the same on every row of the incident).
    calendar_id: Mapped[uuid.UUID | None] = mapped_column()
    # The incident's opening time (copied: reports select a period's rows without scanning the tenant's).
    opened_at: Mapped[datetime] = mapped_column()


class SlaNotice(TenantOwned, Base):
    """A warning threshold or breach that was passed, stored once per (incident, target, threshold, cycle)
    whatever the policy version or priority, so it is emitted at most once. ``outcome``: ``announced``
    (an event was emitted; ``late`` when more than the late-notice window after it happened),
    ``superseded`` (a late warning overtaken by a later threshold: not emitted) or ``historical``
    (passed before the platform tracked the clock live, e.g. imported or recalculated history)."""

    __tablename__ = "sla_notices"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "incident_id", "target", "threshold", "cycle"),
        tenant_fk("incident_id", "incidents"),
    )

    incident_id: Mapped[uuid.UUID] = mapped_column()
    target: Mapped[str] = mapped_column(String(20))
    # Percent of the target (e.g. 75); 100 is the breach.
    threshold: Mapped[int] = mapped_column(SmallInteger)
    policy_version: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column()
    emitted_at: Mapped[datetime] = mapped_column()
    event_id: Mapped[uuid.UUID | None] = mapped_column()
    # Update cadence: the cycle (0 before the first public update, n after the n-th); 0 for other targets.
    cycle: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    outcome: Mapped[str] = mapped_column(String(12), default="announced", server_default="announced")
