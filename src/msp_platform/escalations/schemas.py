from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec


class TriggerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["incident_created", "sla_warning", "sla_breached", "after_hours"]
    # incident_created / after_hours: only these priorities (omitted: all). incident_created with priorities
    # also starts when a priority change brings the incident into them (once per incident), and again each
    # time the incident is reopened.
    priorities: list[Annotated[int, msgspec.Meta(ge=1, le=5)]] | None = None
    # sla_warning: starts at the first warning announced at or above this percent of the target's time
    percent: Annotated[int, msgspec.Meta(ge=1, le=99)] | None = None
    # sla_warning / sla_breached: one target; omitted: response or resolution. "update" (a missed public
    # update) escalates each miss anew.
    target: Literal["response", "resolution", "update"] | None = None


class TargetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["person", "schedule", "tier_group", "policy"]
    staff_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    schedule_id: uuid.UUID | None = None
    tier: Annotated[int, msgspec.Meta(ge=1, le=3)] | None = None
    policy_id: uuid.UUID | None = None


class LevelIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    delay_minutes: Annotated[int, msgspec.Meta(ge=0, le=24 * 60)]
    targets: Annotated[list[TargetIn], msgspec.Meta(min_length=1, max_length=20)]


class PolicyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    active: bool = True
    repeat_count: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0
    triggers: list[TriggerIn] = msgspec.field(default_factory=list)
    levels: Annotated[list[LevelIn], msgspec.Meta(min_length=1, max_length=10)]


class TargetOut(msgspec.Struct, kw_only=True):
    kind: str
    staff_id: uuid.UUID | None
    user_id: uuid.UUID | None
    schedule_id: uuid.UUID | None
    tier: int | None
    policy_id: uuid.UUID | None


class LevelOut(msgspec.Struct, kw_only=True):
    position: int
    delay_minutes: int
    targets: list[TargetOut]


class PolicyOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    active: bool
    repeat_count: int
    triggers: list[dict[str, object]]
    levels: list[LevelOut]
    created_at: datetime
    updated_at: datetime


class EscalationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    incident_id: uuid.UUID
    policy_id: uuid.UUID
    trigger: str
    state: str
    level: int
    repeat: int
    started_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None


class PageOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    escalation_id: uuid.UUID
    incident_id: uuid.UUID
    level: int
    repeat: int
    staff_id: uuid.UUID | None
    user_id: uuid.UUID | None
    state: str
    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
