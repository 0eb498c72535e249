from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk
from msp_platform.db.types import JSONType, StrEnumType


class IncidentState(StrEnum):
    new = "new"
    assigned = "assigned"
    in_progress = "in_progress"
    on_hold = "on_hold"
    resolved = "resolved"
    closed = "closed"
    cancelled = "cancelled"


class Channel(StrEnum):
    phone = "phone"
    portal = "portal"
    email = "email"
    api = "api"
    walk_up = "walk_up"
    after_hours = "after_hours"


class HoldReason(StrEnum):
    awaiting_caller = "awaiting_caller"
    awaiting_vendor = "awaiting_vendor"
    awaiting_change = "awaiting_change"
    scheduled = "scheduled"
    other = "other"


class ResolutionCode(StrEnum):
    solved_permanently = "solved_permanently"
    solved_workaround = "solved_workaround"
    hardware_replaced = "hardware_replaced"
    user_education = "user_education"
    not_reproducible = "not_reproducible"
    duplicate = "duplicate"
    out_of_scope = "out_of_scope"
    other = "other"


class Visibility(StrEnum):
    public = "public"  # the tenant sees it
    internal = "internal"  # MSP staff only


class Incident(TenantOwned, Base):
    __tablename__ = "incidents"
    __audit_exclude__: ClassVar[frozenset[str]] = frozenset({"version"})
    __table_args__ = (
        UniqueConstraint("tenant_id", "number"),
        UniqueConstraint("tenant_id", "key"),
        UniqueConstraint("tenant_id", "external_source", "external_id"),
        CheckConstraint("impact BETWEEN 1 AND 3", name="impact_range"),
        CheckConstraint("urgency BETWEEN 1 AND 3", name="urgency_range"),
        CheckConstraint("priority BETWEEN 1 AND 5", name="priority_range"),
        CheckConstraint("tier BETWEEN 1 AND 3", name="tier_range"),
        Index("ix_incidents_tenant_state_priority", "tenant_id", "state", "priority"),
        Index("ix_incidents_tenant_caller", "tenant_id", "caller_id"),
        Index("ix_incidents_tenant_assignee", "tenant_id", "assignee_id"),
        Index("ix_incidents_tenant_opened", "tenant_id", "opened_at"),
        Index("ix_incidents_tenant_group", "tenant_id", "assignment_group_id"),
        tenant_fk("caller_id", "users"),
        tenant_fk("affected_device_id", "devices"),
        tenant_fk("site_id", "sites"),
        tenant_fk("merged_into_id", "incidents"),
    )

    number: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    caller_id: Mapped[uuid.UUID | None] = mapped_column()
    reported_by: Mapped[str] = mapped_column(String(160))
    affected_device_id: Mapped[uuid.UUID | None] = mapped_column()
    site_id: Mapped[uuid.UUID | None] = mapped_column()
    category: Mapped[str | None] = mapped_column(String(80))
    subcategory: Mapped[str | None] = mapped_column(String(80))
    channel: Mapped[Channel] = mapped_column(StrEnumType(Channel, 20))
    impact: Mapped[int] = mapped_column(SmallInteger)
    urgency: Mapped[int] = mapped_column(SmallInteger)
    patient_care_impact: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[int] = mapped_column(SmallInteger)
    priority_matrix_version: Mapped[int] = mapped_column(Integer)
    tier: Mapped[int] = mapped_column(SmallInteger, default=1)
    assignment_group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assignment_groups.id", ondelete="RESTRICT")
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_members.id", ondelete="RESTRICT"))
    state: Mapped[IncidentState] = mapped_column(StrEnumType(IncidentState, 20), default=IncidentState.new)
    on_hold_reason: Mapped[HoldReason | None] = mapped_column(StrEnumType(HoldReason, 20))
    resolution_code: Mapped[ResolutionCode | None] = mapped_column(StrEnumType(ResolutionCode, 30))
    resolution_notes: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column()
    first_response_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    first_contact_resolution: Mapped[bool] = mapped_column(Boolean, default=False)
    external_source: Mapped[str | None] = mapped_column(String(40))
    external_id: Mapped[str | None] = mapped_column(String(120))
    # The number in the system the incident came from; unique per tenant and source, whatever its case.
    legacy_number: Mapped[str | None] = mapped_column(String(60))
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column()
    # Bumped by every change; clients may send If-Match to avoid lost updates.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The SLA policy version in force when the incident opened (None: the tenant had no policy yet).
    sla_policy_version: Mapped[int | None] = mapped_column(Integer)


# Lookups by legacy number ignore case; one legacy number per tenant and source system.
Index("ix_incidents_tenant_legacy_lower", Incident.tenant_id, func.lower(Incident.legacy_number))
Index(
    "uq_incidents_tenant_source_legacy",
    Incident.tenant_id,
    func.coalesce(Incident.external_source, ""),
    func.lower(Incident.legacy_number),
    unique=True,
)

# Service reports (migration 0008): resolutions and closures in a period, and the open backlog.
Index("ix_incidents_tenant_resolved", Incident.tenant_id, Incident.resolved_at)
Index("ix_incidents_tenant_closed", Incident.tenant_id, Incident.closed_at)
Index(
    "ix_incidents_tenant_open_opened",
    Incident.tenant_id,
    Incident.opened_at,
    postgresql_where=text("state IN ('new', 'assigned', 'in_progress', 'on_hold')"),
    sqlite_where=text("state IN ('new', 'assigned', 'in_progress', 'on_hold')"),
)


class IncidentEvent(TenantOwned, Base):
    """The append-only history of an incident. ``occurred_at`` is when it happened (for imported history, the
    source system's time), which is what SLA clocks are computed from. On PostgreSQL the application's role
    may only INSERT and SELECT here (``db.rls.APPEND_ONLY_TABLES``): nothing rewrites history."""

    __tablename__ = "incident_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "incident_id", "seq"),
        Index("ix_incident_events_tenant_incident_time", "tenant_id", "incident_id", "occurred_at"),
        tenant_fk("incident_id", "incidents"),
    )
    # Not in the audit log: this table is itself the incident's append-only record.
    __audited__: ClassVar[bool] = False

    incident_id: Mapped[uuid.UUID] = mapped_column()
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(160))
    visibility: Mapped[Visibility] = mapped_column(StrEnumType(Visibility, 10), default=Visibility.public)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)


class IncidentComment(TenantOwned, Base):
    __tablename__ = "incident_comments"
    # Tenant admins read the audit log; internal notes must not reach them through it.
    __audit_exclude__: ClassVar[frozenset[str]] = frozenset({"body"})
    __table_args__ = (
        Index("ix_incident_comments_tenant_incident", "tenant_id", "incident_id", "created_at"),
        tenant_fk("incident_id", "incidents"),
    )

    incident_id: Mapped[uuid.UUID] = mapped_column()
    author: Mapped[str] = mapped_column(String(160))
    author_name: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    visibility: Mapped[Visibility] = mapped_column(StrEnumType(Visibility, 10), default=Visibility.public)


class IncidentCounter(Base):
    """Per-tenant incident numbers: incremented in the creating transaction, so numbers are gap-free (a rolled
    back create gives its number back) and the row lock serialises concurrent creates of one tenant."""

    __tablename__ = "incident_counters"
    __tenant_owned__: ClassVar[bool] = True
    __audited__: ClassVar[bool] = False

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True
    )
    last_number: Mapped[int] = mapped_column(BigInteger, default=0)


class PriorityMatrix(TenantOwned, Base):
    """Impact x urgency -> priority, versioned per tenant. An incident records the version it was prioritised
    with. ``patient_care_raise`` moves patient-care incidents up that many levels, never above
    ``patient_care_floor`` (e.g. at least P2)."""

    __tablename__ = "priority_matrices"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    version: Mapped[int] = mapped_column(Integer)
    # {"1": {"1": 1, "2": 2, "3": 3}, "2": {...}, "3": {...}}: impact -> urgency -> priority
    cells: Mapped[dict[str, dict[str, int]]] = mapped_column(JSONType)
    patient_care_raise: Mapped[int] = mapped_column(SmallInteger, default=1)
    patient_care_floor: Mapped[int] = mapped_column(SmallInteger, default=2)
    vip_raise: Mapped[int] = mapped_column(SmallInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(String(160))
