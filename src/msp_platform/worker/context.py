from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.config import Settings

if TYPE_CHECKING:
    from msp_platform.db.engine import Database


@dataclass
class JobContext:
    session: AsyncSession
    settings: Settings
    message_id: str
    tenant_id: uuid.UUID | None
    database: Database
    retries: int = 0
    # Whatever a job wants to report (logged when it finishes).
    info: dict[str, Any] = field(default_factory=dict)
