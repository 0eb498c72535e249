from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from msp_platform.models.incident import HoldReason, IncidentState

Minutes = Annotated[
    int, msgspec.Meta(gt=0, le=60 * 24 * 365, description="minutes of counted (business) time")
]


class TargetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    response_minutes: Minutes
    resolution_minutes: Minutes
    update_minutes: Minutes | None = None


class CustomCalendar(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    timezone: str
    hours: list[dict[str, Any]]
    holidays: list[dict[str, Any]] = msgspec.field(default_factory=list)


class PolicyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    calendar: Literal["business_hours", "24x7", "custom"] = "business_hours"
    custom_calendar: CustomCalendar | None = None
    pause_states: list[IncidentState] = msgspec.field(default_factory=lambda: [IncidentState.on_hold])
    # Only these on-hold reasons pause (e.g. awaiting_caller); omitted: every on-hold pauses.
    pause_hold_reasons: list[HoldReason] | None = None
    warning_percents: list[int] = msgspec.field(default_factory=lambda: [50, 75, 90])
    # Priority ("1".."5") -> targets; a priority without targets has no SLA.
    targets: dict[str, TargetIn]


class PolicyOut(msgspec.Struct, kw_only=True):
    version: int
    name: str
    calendar: str
    custom_calendar: dict[str, Any] | None
    pause_states: list[str]
    pause_hold_reasons: list[str] | None
    warning_percents: list[int]
    targets: dict[str, dict[str, Any]]
    created_at: datetime
    created_by: str | None


class SegmentOut(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime
    kind: str
    state: str
    seconds: int


class WarningOut(msgspec.Struct, kw_only=True):
    percent: int
    reached_at: datetime | None
    due_at: datetime | None


class ClockOut(msgspec.Struct, kw_only=True):
    target: str
    duration_seconds: int
    status: str
    elapsed_seconds: int
    paused_seconds: int
    outside_hours_seconds: int
    remaining_seconds: int
    due_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None
    warnings: list[WarningOut]
    segments: list[SegmentOut]
    explanation: str


class MissedUpdateOut(msgspec.Struct, kw_only=True):
    due_at: datetime
    late_until: datetime | None


class IncidentSlaOut(msgspec.Struct, kw_only=True):
    incident_id: uuid.UUID
    key: str
    priority: int
    policy_version: int | None
    calendar: str
    as_of: datetime
    clocks: list[ClockOut]
    update_cadence_minutes: int | None = None
    missed_updates: list[MissedUpdateOut] = msgspec.field(default_factory=list)


class RecalculateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    opened_from: datetime
    opened_to: datetime
    policy_version: int
    apply: bool = False


class OutcomeOut(msgspec.Struct, kw_only=True):
    status: str
    due_at: datetime | None
    breached_at: datetime | None


class RecalcChange(msgspec.Struct, kw_only=True):
    incident_id: uuid.UUID
    key: str
    target: str
    policy_version_before: int | None
    before: OutcomeOut | None
    after: OutcomeOut | None


class RecalculateOut(msgspec.Struct, kw_only=True):
    examined: int
    changed: int
    applied: bool
    policy_version: int
    changes: list[RecalcChange]
