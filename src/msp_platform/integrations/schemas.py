from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec


class DeliveryStatus(StrEnum):
    pending = "pending"  # queued for its first attempt (or a replay)
    delivered = "delivered"  # a 2xx answered
    failed = "failed"  # the last attempt failed; another is scheduled (next_attempt_at)
    dead = "dead"  # retries exhausted, 410 Gone, or the endpoint was disabled


class EndpointCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    event_types: list[str]
    description: str | None = None
    active: bool = True


class EndpointUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str | msgspec.UnsetType = msgspec.UNSET
    event_types: list[str] | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class EndpointOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut, kw_only=True):
    """The creation response: the only time the signing secret is shown."""

    secret: str


class SecretRotated(msgspec.Struct, kw_only=True):
    """The new signing secret, shown once. The previous one still signs (as a second signature) until
    ``previous_secret_expires_at``."""

    id: uuid.UUID
    secret: str
    previous_secret_expires_at: datetime


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    message_id: str  # the webhook-id header: the same for every attempt and replay
    event_type: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
