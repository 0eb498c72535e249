from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from msp_platform.models.incident import Channel, HoldReason, IncidentState, ResolutionCode, Visibility

Level = Annotated[int, msgspec.Meta(ge=1, le=3, description="1 = highest .. 3 = lowest")]
Tier = Annotated[int, msgspec.Meta(ge=1, le=3, description="support tier: 1 (L1) .. 3 (L3)")]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=20_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=80)]
GroupName = Annotated[
    str, msgspec.Meta(max_length=80, description="deprecated: the group's name; send assignment_group_id")
]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=40, description="the source system")]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=120, description="its id there")]
LegacyNumber = Annotated[str, msgspec.Meta(min_length=1, max_length=60, description="its number there")]
ActorName = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]


class IncidentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Title
    description: Text = ""
    caller_id: uuid.UUID | None = None
    affected_device_id: uuid.UUID | None = None
    site_id: uuid.UUID | None = None
    category: ShortText | None = None
    subcategory: ShortText | None = None
    channel: Channel | None = None
    impact: Level = 3
    urgency: Level = 3
    patient_care_impact: bool = False
    # MSP staff only:
    tier: Tier | None = None
    assignment_group_id: uuid.UUID | None = None
    assignment_group: GroupName | None = None
    assignee_id: uuid.UUID | None = None
    # Staff and integrations, for records that come from another system:
    external_source: Source | None = None
    external_id: ExternalId | None = None
    legacy_number: LegacyNumber | None = None


class IncidentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    caller_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    affected_device_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    site_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    category: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    subcategory: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    impact: Level | msgspec.UnsetType = msgspec.UNSET
    urgency: Level | msgspec.UnsetType = msgspec.UNSET
    patient_care_impact: bool | msgspec.UnsetType = msgspec.UNSET
    tier: Tier | msgspec.UnsetType = msgspec.UNSET
    assignment_group_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    assignment_group: GroupName | msgspec.UnsetType | None = msgspec.UNSET
    assignee_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


class TransitionIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    to: IncidentState
    reason: Text | None = None
    on_hold_reason: HoldReason | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: Text | None = None


class CommentIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    visibility: Visibility = Visibility.public


class MergeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    source_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=50)]


class IncidentOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    key: str
    number: int
    title: str
    description: str
    caller_id: uuid.UUID | None
    reported_by: str
    affected_device_id: uuid.UUID | None
    site_id: uuid.UUID | None
    category: str | None
    subcategory: str | None
    channel: Channel
    impact: int
    urgency: int
    patient_care_impact: bool
    priority: int
    priority_label: str
    priority_matrix_version: int
    tier: int
    assignment_group_id: uuid.UUID | None
    assignment_group: str | None  # the group's name
    assignee_id: uuid.UUID | None
    state: IncidentState
    on_hold_reason: HoldReason | None
    resolution_code: ResolutionCode | None
    resolution_notes: str | None
    opened_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    reopen_count: int
    first_contact_resolution: bool
    external_source: str | None
    external_id: str | None
    legacy_number: str | None
    merged_into_id: uuid.UUID | None
    version: int
    created_at: datetime
    updated_at: datetime


class EventOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    incident_id: uuid.UUID
    seq: int
    type: str
    occurred_at: datetime
    actor: str
    visibility: Visibility
    data: dict[str, Any]
    imported: bool


class CommentOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    incident_id: uuid.UUID
    author: str
    author_name: str | None
    body: str
    visibility: Visibility
    created_at: datetime


class MatrixIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    cells: dict[str, dict[str, int]]
    patient_care_raise: int = 1
    patient_care_floor: int = 2
    vip_raise: int = 0


class MatrixOut(msgspec.Struct, kw_only=True):
    version: int
    cells: dict[str, dict[str, int]]
    patient_care_raise: int
    patient_care_floor: int
    vip_raise: int
    created_at: datetime | None
    created_by: str | None


# --- assignment groups ---------------------------------------------------------------------------------

GroupNameIn = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
TenantIds = Annotated[
    list[uuid.UUID],
    msgspec.Meta(max_length=1000, description="the tenants the group works for (omit or null: every tenant)"),
]


class GroupCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: GroupNameIn
    tier: Tier
    description: Text = ""
    active: bool = True
    tenant_ids: TenantIds | None = None


class GroupUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: GroupNameIn | msgspec.UnsetType = msgspec.UNSET
    tier: Tier | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    tenant_ids: TenantIds | msgspec.UnsetType | None = msgspec.UNSET


class GroupOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    tier: int
    description: str
    active: bool
    tenant_ids: list[uuid.UUID] | None
    created_at: datetime
    updated_at: datetime


class MemberIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    staff_id: uuid.UUID


class MemberOut(msgspec.Struct, kw_only=True):
    staff_id: uuid.UUID
    name: str
    email: str
    role: str
    tier: int | None
    active: bool


# --- imported history ----------------------------------------------------------------------------------

ImportedEventType = Literal[
    "assigned", "state_changed", "priority_changed", "tier_changed", "commented", "responded"
]


class ImportedEventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One event of an imported incident's history, at its original time. Which fields apply depends on
    ``type``: ``assigned`` (assignee_id and/or assignment_group_id, null to clear), ``state_changed`` (to,
    and reason / on_hold_reason / resolution_code + resolution_notes as a live transition needs them),
    ``priority_changed`` (impact, urgency, patient_care_impact), ``tier_changed`` (tier), ``commented``
    (body, visibility) and ``responded`` (the first response; otherwise the first public staff comment or
    move to in_progress/resolved counts)."""

    type: ImportedEventType
    at: datetime
    # Who did it: one of our staff, a user of the tenant, or a name in the source system.
    staff_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    actor: ActorName | None = None
    assignee_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    assignment_group_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    to: IncidentState | None = None
    reason: Text | None = None
    on_hold_reason: HoldReason | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: Text | None = None
    impact: Level | None = None
    urgency: Level | None = None
    patient_care_impact: bool | None = None
    tier: Tier | None = None
    body: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None
    visibility: Visibility | None = None


class IncidentImportIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An incident from another system, opened at ``opened_at``, with its history in time order."""

    external_source: Source
    external_id: ExternalId
    legacy_number: LegacyNumber | None = None
    title: Title
    description: Text = ""
    caller_id: uuid.UUID | None = None
    affected_device_id: uuid.UUID | None = None
    site_id: uuid.UUID | None = None
    category: ShortText | None = None
    subcategory: ShortText | None = None
    channel: Channel = Channel.api
    impact: Level = 3
    urgency: Level = 3
    patient_care_impact: bool = False
    tier: Tier = 1
    opened_at: datetime
    # Who opened it: one of our staff, a user of the tenant, or a name in the source system.
    opened_by_staff_id: uuid.UUID | None = None
    opened_by_user_id: uuid.UUID | None = None
    opened_by: ActorName | None = None
    events: Annotated[list[ImportedEventIn], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )


class IncidentImportBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    incidents: Annotated[list[IncidentImportIn], msgspec.Meta(min_length=1, max_length=500)]


class ImportRowError(msgspec.Struct):
    field: str
    message: str


class ImportRowOut(msgspec.Struct, kw_only=True):
    row: int  # 1-based position in ``incidents``
    status: str  # created | skipped (already imported) | error | valid (not stored: the atomic import failed)
    external_source: str
    external_id: str
    id: uuid.UUID | None = None
    key: str | None = None
    detail: str | None = None
    errors: list[ImportRowError] = msgspec.field(default_factory=list)


class IncidentImportReport(msgspec.Struct, kw_only=True):
    mode: str
    committed: bool
    total: int
    created: int
    skipped: int
    failed: int
    rows: list[ImportRowOut]
