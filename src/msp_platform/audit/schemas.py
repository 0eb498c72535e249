from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class AuditEventOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID | None
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    # {field: [before, after]}
    changes: dict[str, Any]
    request_id: str | None
    # Staff-only (e.g. about an internal work note): never listed for tenant-level readers.
    internal: bool = False
    hash: str
    prev_hash: str


class ChainVerification(msgspec.Struct, kw_only=True):
    chain: str
    events: int
    valid: bool
    first_bad_seq: int | None = None
    problem: str | None = None
