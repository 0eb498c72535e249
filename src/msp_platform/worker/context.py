from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.config import Settings


@dataclass
class JobContext:
    session: AsyncSession
    settings: Settings
    message_id: str
    tenant_id: uuid.UUID | None
    retries: int = 0
