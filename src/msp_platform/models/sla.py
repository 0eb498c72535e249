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


class IncidentSla(TenantOwned, Base):
    """The latest computed state of one incident's target (response, resolution, update cadence): what the
    reports aggregate in SQL. Recomputed from the event log on every incident event and timer."""

    __tablename__ = "incident_slas"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "incident_id", "target"),
        Index("ix_incident_slas_tenant_status", "tenant_id", "status"),
        tenant_fk("incident_id", "incidents"),
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


class SlaNotice(TenantOwned, Base):
    """A warning threshold or breach that was announced: stored once, so it is emitted once."""

    __tablename__ = "sla_notices"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "incident_id", "target", "threshold", "policy_version"),
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
