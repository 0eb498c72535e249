from __future__ import annotations

import uuid
from datetime import date, datetime
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


class HolidayIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    date: date
    name: Annotated[str, msgspec.Meta(max_length=120)] = ""


class CustomCalendar(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    timezone: Annotated[str, msgspec.Meta(max_length=64, description="IANA time zone, e.g. America/Chicago")]
    # {"weekday": 0-6 (Monday 0), "start": "HH:MM", "end": "HH:MM"}; no hours: open around the clock, except
    # the holidays (whole local days).
    hours: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=70)]
    holidays: Annotated[list[HolidayIn | str], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )


class PolicyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]  # not blank
    calendar: Literal["business_hours", "24x7", "custom"] = "business_hours"
    custom_calendar: CustomCalendar | None = None
    pause_states: list[IncidentState] = msgspec.field(default_factory=lambda: [IncidentState.on_hold])
    # Only these on-hold reasons pause (e.g. awaiting_caller); omitted: every on-hold pauses.
    pause_hold_reasons: list[HoldReason] | None = None
    warning_percents: Annotated[list[int], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=lambda: [50, 75, 90]
    )
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
    cycle: int = 0


class UpdateCadenceOut(msgspec.Struct, kw_only=True):
    """The update cadence as a target: a cycle runs from the start (cycle 0) or from each public comment by
    MSP staff to the next; a cycle whose counted time passed the cadence is a missed update."""

    cadence_seconds: int
    # breached: some update was missed; otherwise the current cycle's running / paused / met (stopped)
    status: str
    # When the next public update is due (in the past when overdue); null while paused or stopped.
    next_update_due_at: datetime | None
    cycle: int
    cycle_started_at: datetime
    elapsed_seconds: int
    remaining_seconds: int
    warnings: list[WarningOut]
    missed: list[MissedUpdateOut]


class PriorityPeriodOut(msgspec.Struct, kw_only=True):
    since: datetime
    priority: int


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
    next_update_due_at: datetime | None = None
    update_cadence: UpdateCadenceOut | None = None
    # The effective calendar pinned to the incident: source, timezone, hours, holidays.
    calendar_definition: dict[str, Any] | None = None
    # The priority in force from each instant (the log's priority changes), as the clocks used it.
    priority_history: list[PriorityPeriodOut] = msgspec.field(default_factory=list)
    rules: list[str] = msgspec.field(default_factory=list)


PolicyVersion = Annotated[int, msgspec.Meta(ge=1, le=2_147_483_647)]


class RecalculateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A page of at most ``limit`` incidents opened in [opened_from, opened_to) per call; pass ``cursor``
    (``next_cursor`` of the previous page) for the next."""

    opened_from: datetime
    opened_to: datetime
    policy_version: PolicyVersion
    apply: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 500
    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class OutcomeOut(msgspec.Struct, kw_only=True):
    status: str
    due_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None = None


class RecalcChange(msgspec.Struct, kw_only=True):
    incident_id: uuid.UUID
    key: str
    target: str
    policy_version_before: int | None
    before: OutcomeOut | None
    after: OutcomeOut | None


class RecalculateOut(msgspec.Struct, kw_only=True):
    examined: int
    # changes in this page: a status, due time or breach time that differs (target "update": the cadence)
    changed: int
    applied: bool
    policy_version: int
    changes: list[RecalcChange]
    next_cursor: str | None = None
