from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from msp_platform.models.incident import Channel, HoldReason, IncidentState, ResolutionCode, Visibility

Level = Annotated[int, msgspec.Meta(ge=1, le=3, description="1 = highest .. 3 = lowest")]
Tier = Annotated[int, msgspec.Meta(ge=1, le=3, description="support tier: 1 (L1) .. 3 (L3)")]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=20_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=80)]


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
    assignment_group: ShortText | None = None
    assignee_id: uuid.UUID | None = None
    # Staff and integrations, for records that come from another system:
    external_source: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    external_id: Annotated[str, msgspec.Meta(max_length=120)] | None = None
    legacy_number: Annotated[str, msgspec.Meta(max_length=60)] | None = None


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
    assignment_group: ShortText | msgspec.UnsetType | None = msgspec.UNSET
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
    assignment_group: str | None
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
