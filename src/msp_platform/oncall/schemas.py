"""Request and response bodies of /api/v1/oncall.

People are always a ``PersonRef`` on the way in (exactly one of ``staff_id`` / ``user_id``) and a
``PersonOut`` (the same ids plus the display name) on the way out. Timestamps are ISO 8601 with an offset;
restriction times are local wall-clock times ``HH:MM`` in the layer's time zone.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec


class PersonRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An MSP staff member granted the tenant, or a user of the tenant: set exactly one id."""

    staff_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None


class TurnLengthIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    count: int
    unit: str  # hours | days | weeks (checked by the schedule engine, with a clear message)


class RestrictionIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """When the layer is active, in its local time. ``daily``: every day from ``start`` to ``end`` (an end at
    or before the start runs overnight). ``weekly``: from ``start_weekday`` ``start`` to ``end_weekday``
    ``end`` (0 = Monday .. 6 = Sunday), wrapping into the next week."""

    kind: str
    start: str
    end: str
    start_weekday: int | None = None
    end_weekday: int | None = None


class LayerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    # The first handoff; day/week turns hand off at this wall-clock time in ``timezone`` from then on.
    start_at: datetime
    end_at: datetime | None = None
    turn_length: TurnLengthIn
    # IANA name; defaults to the schedule's time zone.
    timezone: str | None = None
    participants: list[PersonRef]
    restrictions: list[RestrictionIn] = msgspec.field(default_factory=list)


class ScheduleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    # IANA name; defaults to the tenant's time zone.
    timezone: str | None = None
    description: str | None = None
    # Bottom to top: a later layer wins where layers overlap.
    layers: list[LayerIn]


class ScheduleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    timezone: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET


class LayersIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    layers: list[LayerIn]


class OverrideCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    person: PersonRef
    start_at: datetime
    end_at: datetime
    reason: str | None = None


class FeedTokenCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Set for a personal feed (only that person's shifts); omit for the whole schedule.
    person: PersonRef | None = None
    expires_in_days: int = 365


class FeedTokenRevoke(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str


# --- responses ------------------------------------------------------------------------------------------


class PersonOut(msgspec.Struct, kw_only=True):
    staff_id: uuid.UUID | None
    user_id: uuid.UUID | None
    name: str | None


class TurnLengthOut(msgspec.Struct, kw_only=True):
    count: int
    unit: str


class RestrictionOut(msgspec.Struct, kw_only=True):
    kind: str
    start: str
    end: str
    start_weekday: int | None = None
    end_weekday: int | None = None


class LayerOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    position: int
    name: str
    start_at: datetime
    end_at: datetime | None
    turn_length: TurnLengthOut
    timezone: str
    restrictions: list[RestrictionOut]
    participants: list[PersonOut]


class ScheduleOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    description: str | None
    timezone: str
    version: int
    # Set by POST .../publish once the gap check passed; every change clears it.
    published_at: datetime | None
    # The version escalations page from (frozen at its publish); null: never published. Edits made since
    # (``version`` > ``published_version``) page only once published again.
    published_version: int | None
    layers: list[LayerOut]
    created_at: datetime
    updated_at: datetime


class OverrideOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    schedule_id: uuid.UUID
    person: PersonOut
    start_at: datetime
    end_at: datetime
    reason: str | None
    created_by: str | None
    created_at: datetime


class ShiftOut(msgspec.Struct, kw_only=True):
    start_at: datetime
    end_at: datetime
    person: PersonOut
    source: Literal["layer", "override"]
    layer_id: uuid.UUID | None = None
    layer_name: str | None = None
    override_id: uuid.UUID | None = None


class FinalScheduleOut(msgspec.Struct, kw_only=True):
    schedule_id: uuid.UUID
    version: int
    published_at: datetime | None
    window_start: datetime
    window_end: datetime
    shifts: list[ShiftOut]


class OnCallOut(msgspec.Struct, kw_only=True):
    schedule_id: uuid.UUID
    version: int
    published_at: datetime | None
    at: datetime
    # Empty when nobody is on call at ``at``; the shift's bounds are its real (merged) start and end.
    on_call: list[ShiftOut]


class GapOut(msgspec.Struct, kw_only=True):
    start_at: datetime
    end_at: datetime
    hours: float


class GapsOut(msgspec.Struct, kw_only=True):
    schedule_id: uuid.UUID
    version: int
    window_start: datetime
    window_end: datetime
    weeks: int
    covered: bool
    total_gap_hours: float
    gaps: list[GapOut]
    # People with shifts in the window who cannot be paged (deactivated, or no longer granted the tenant):
    # their shifts are counted as gaps.
    unreachable: list[PersonOut] = msgspec.field(default_factory=list)


class FeedTokenOut(msgspec.Struct, kw_only=True):
    """Shown once: the token is the credential of the feed URL. Revoke it (or every token of the schedule)
    with the revoke endpoints."""

    token: str
    url: str
    webcal_url: str
    schedule_id: uuid.UUID
    person: PersonOut | None
    issued_at: datetime
    expires_at: datetime


# --- the caller's own on-call shifts (/api/v1/me/oncall) ---------------------------------------------------


class PersonalFeedTokenCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    expires_in_days: int = 365


class PersonalFeedTokenOut(msgspec.Struct, kw_only=True):
    """Shown once: the token is the credential of the feed URL. It serves the caller's shifts across every
    schedule and tenant, and stops when it expires, is revoked, or the caller is deactivated or loses access
    to every tenant."""

    token: str
    url: str
    webcal_url: str
    person: PersonOut
    issued_at: datetime
    expires_at: datetime


class MyShiftOut(msgspec.Struct, kw_only=True):
    start_at: datetime
    end_at: datetime
    tenant_id: uuid.UUID
    tenant_name: str
    schedule_id: uuid.UUID
    schedule_name: str
    # The schedule version the shift comes from (the published one).
    schedule_version: int | None
    source: Literal["layer", "override"]
    layer_name: str | None


class MyShiftsOut(msgspec.Struct, kw_only=True):
    person: PersonOut
    window_start: datetime
    window_end: datetime
    shifts: list[MyShiftOut]
