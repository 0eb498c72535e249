from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base
from msp_platform.db.types import JSONType
from msp_platform.kit.ids import new_id


class OutboxMessage(Base):
    """A job written in the same transaction as the change that caused it.

    Committing the change commits the job; a rollback drops it. After commit the message is sent to the
    broker at once; a relay resends any message still unsent (broker down, process killed). Actors are
    idempotent, so the rare double send is harmless.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_pending", "sent_at", "available_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    actor_name: Mapped[str] = mapped_column(String(120))
    queue_name: Mapped[str] = mapped_column(String(60))
    kwargs: Mapped[dict[str, object]] = mapped_column(JSONType)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    available_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
