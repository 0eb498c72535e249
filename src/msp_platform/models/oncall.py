"""On-call schedules, escalation policies, escalations and pages, and notification records.

People are staff members (the MSP) or users of the tenant (a hospital's own IT lead); each reference is a
real foreign key — tenant rows through composite keys — so nothing can point into another tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk
from msp_platform.db.types import JSONType

ONE_PERSON = "(staff_id IS NOT NULL AND user_id IS NULL) OR (staff_id IS NULL AND user_id IS NOT NULL)"


class _Person:
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_members.id", ondelete="RESTRICT"))
    user_id: Mapped[uuid.UUID | None] = mapped_column()


class OncallSchedule(TenantOwned, Base):
    __tablename__ = "oncall_schedules"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64))
    # When the current version passed the gap check and was published; every change clears it.
    published_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)
    # What escalations page from: the last published version, frozen (layers, members, overrides) until the
    # next publish, so an edit takes effect for paging only once it passed the gap check.
    published_version: Mapped[int | None] = mapped_column(Integer)
    published_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class OncallLayer(TenantOwned, Base):
    __tablename__ = "oncall_layers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "schedule_id", "position"),
        tenant_fk("schedule_id", "oncall_schedules"),
    )

    schedule_id: Mapped[uuid.UUID] = mapped_column()
    position: Mapped[int] = mapped_column(SmallInteger)  # 0 = bottom; higher layers win
    name: Mapped[str] = mapped_column(String(120))
    start_at: Mapped[datetime] = mapped_column()
    end_at: Mapped[datetime | None] = mapped_column()
    turn_count: Mapped[int] = mapped_column(Integer)
    turn_unit: Mapped[str] = mapped_column(String(10))  # hours | days | weeks
    timezone: Mapped[str] = mapped_column(String(64))
    # [{"kind": "daily", "start": "18:00", "end": "08:00"}, {"kind": "weekly", "start_weekday": 5, ...}]
    restrictions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class OncallLayerMember(_Person, TenantOwned, Base):
    __tablename__ = "oncall_layer_members"
    __table_args__ = (
        UniqueConstraint("tenant_id", "layer_id", "position"),
        CheckConstraint(ONE_PERSON, name="one_person"),
        tenant_fk("layer_id", "oncall_layers"),
        tenant_fk("user_id", "users"),
    )

    layer_id: Mapped[uuid.UUID] = mapped_column()
    position: Mapped[int] = mapped_column(SmallInteger)


class OncallOverride(_Person, TenantOwned, Base):
    __tablename__ = "oncall_overrides"
    __table_args__ = (
        CheckConstraint(ONE_PERSON, name="one_person"),
        CheckConstraint("end_at > start_at", name="ordered"),
        Index("ix_oncall_overrides_tenant_schedule", "tenant_id", "schedule_id", "start_at"),
        tenant_fk("schedule_id", "oncall_schedules"),
        tenant_fk("user_id", "users"),
    )

    schedule_id: Mapped[uuid.UUID] = mapped_column()
    start_at: Mapped[datetime] = mapped_column()
    end_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(160))


class EscalationPolicy(TenantOwned, Base):
    __tablename__ = "escalation_policies"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # How many times the whole ladder repeats when nobody acknowledges.
    repeat_count: Mapped[int] = mapped_column(SmallInteger, default=0)
    # [{"type": "incident_created", "priorities": [1, 2]}, {"type": "sla_warning", "percent": 75},
    #  {"type": "sla_breached"}, {"type": "after_hours"}]
    triggers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class EscalationLevel(TenantOwned, Base):
    __tablename__ = "escalation_levels"
    __table_args__ = (
        UniqueConstraint("tenant_id", "policy_id", "position"),
        tenant_fk("policy_id", "escalation_policies"),
    )

    policy_id: Mapped[uuid.UUID] = mapped_column()
    position: Mapped[int] = mapped_column(SmallInteger)
    # Minutes after the previous level (after the trigger, for the first level).
    delay_minutes: Mapped[int] = mapped_column(Integer)


class EscalationTarget(_Person, TenantOwned, Base):
    __tablename__ = "escalation_targets"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'person' AND ((staff_id IS NOT NULL AND user_id IS NULL) OR (staff_id IS NULL AND user_id IS NOT NULL))"
            " AND schedule_id IS NULL AND tier IS NULL)"
            " OR (kind = 'schedule' AND schedule_id IS NOT NULL AND staff_id IS NULL AND user_id IS NULL AND tier IS NULL)"
            " OR (kind = 'tier_group' AND tier BETWEEN 1 AND 3 AND staff_id IS NULL AND user_id IS NULL AND schedule_id IS NULL)"
            " OR (kind = 'policy' AND target_policy_id IS NOT NULL AND staff_id IS NULL AND user_id IS NULL"
            " AND schedule_id IS NULL AND tier IS NULL)",
            name="one_target",
        ),
        Index("ix_escalation_targets_tenant_level", "tenant_id", "level_id"),
        tenant_fk("level_id", "escalation_levels"),
        tenant_fk("schedule_id", "oncall_schedules"),
        tenant_fk("user_id", "users"),
        tenant_fk("target_policy_id", "escalation_policies"),
    )

    level_id: Mapped[uuid.UUID] = mapped_column()
    kind: Mapped[str] = mapped_column(String(12))  # person | schedule | tier_group | policy
    schedule_id: Mapped[uuid.UUID | None] = mapped_column()
    tier: Mapped[int | None] = mapped_column(SmallInteger)
    # Hand the incident to another policy (cycles between policies are refused).
    target_policy_id: Mapped[uuid.UUID | None] = mapped_column()


class Escalation(TenantOwned, Base):
    """One run of a policy for one incident (and one trigger): which level and repeat it is at. Its history
    (started, paged, acknowledged, exhausted) is in the incident's event log, not the audit log."""

    __tablename__ = "escalations"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "incident_id", "policy_id", "trigger_key"),
        Index("ix_escalations_tenant_incident", "tenant_id", "incident_id"),
        tenant_fk("incident_id", "incidents"),
        tenant_fk("policy_id", "escalation_policies"),
    )

    incident_id: Mapped[uuid.UUID] = mapped_column()
    policy_id: Mapped[uuid.UUID] = mapped_column()
    trigger: Mapped[str] = mapped_column(String(40))
    trigger_key: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16))  # active | acknowledged | resolved | exhausted
    level: Mapped[int] = mapped_column(SmallInteger, default=0)
    repeat: Mapped[int] = mapped_column(SmallInteger, default=0)
    started_at: Mapped[datetime] = mapped_column()
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(String(160))
    resolved_at: Mapped[datetime | None] = mapped_column()
    # The policy's ladder when the escalation started ({"policy", "repeat_count", "levels": [{"delay_minutes",
    # "targets": [...]}]}): editing or deactivating the policy never changes a running escalation.
    ladder: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Page(_Person, TenantOwned, Base):
    __tablename__ = "pages"
    __audited__: ClassVar[bool] = False  # recorded in the incident's event log
    __table_args__ = (
        # Superseded by the two partial indexes below: one of staff_id / user_id is always NULL, and NULLs
        # are distinct in a unique constraint, so it never fires. Kept because SQLite cannot drop it without
        # rebuilding the table (which the notifications' foreign keys forbid once pages exist).
        UniqueConstraint("tenant_id", "escalation_id", "level", "repeat", "staff_id", "user_id"),
        # A person is paged once per (escalation, level, repeat).
        Index(
            "uq_pages_staff_once",
            "tenant_id",
            "escalation_id",
            "level",
            "repeat",
            "staff_id",
            unique=True,
            postgresql_where=text("staff_id IS NOT NULL"),
            sqlite_where=text("staff_id IS NOT NULL"),
        ),
        Index(
            "uq_pages_user_once",
            "tenant_id",
            "escalation_id",
            "level",
            "repeat",
            "user_id",
            unique=True,
            postgresql_where=text("user_id IS NOT NULL"),
            sqlite_where=text("user_id IS NOT NULL"),
        ),
        CheckConstraint(ONE_PERSON, name="one_person"),
        Index("ix_pages_tenant_incident", "tenant_id", "incident_id"),
        tenant_fk("escalation_id", "escalations"),
        tenant_fk("incident_id", "incidents"),
        tenant_fk("user_id", "users"),
    )

    escalation_id: Mapped[uuid.UUID] = mapped_column()
    incident_id: Mapped[uuid.UUID] = mapped_column()
    level: Mapped[int] = mapped_column(SmallInteger)
    repeat: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[str] = mapped_column(String(16))  # triggered | acknowledged | resolved | superseded
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()


class WebhookEndpoint(TenantOwned, Base):
    __tablename__ = "webhook_endpoints"
    __audit_exclude__: ClassVar[frozenset[str]] = frozenset({"secret_encrypted"})

    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    # Standard Webhooks signing secret ("whsec_..."), encrypted with MSP_SECRET_KEY.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class WebhookDelivery(TenantOwned, Base):
    __tablename__ = "webhook_deliveries"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "endpoint_id", "message_id"),
        Index("ix_webhook_deliveries_tenant_endpoint", "tenant_id", "endpoint_id", "created_at"),
        tenant_fk("endpoint_id", "webhook_endpoints"),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column()
    # The Standard Webhooks webhook-id: the same for every attempt and replay of one message.
    message_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(80))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | failed | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column()


class Notification(TenantOwned, Base):
    """One message to one person through one channel (email, webhook...), for a page."""

    __tablename__ = "notifications"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "page_id", "channel"),
        tenant_fk("page_id", "pages"),
    )

    page_id: Mapped[uuid.UUID] = mapped_column()
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(12))  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
