from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned
from msp_platform.db.types import JSONType


class Timer(TenantOwned, Base):
    """A durable timer: something must happen at ``due_at`` (an SLA warning, an escalation level).

    The row is the truth. A delayed broker message makes it fire on time; a periodic sweep fires whatever is
    overdue (broker restarted, worker killed); firing claims the row with a compare-and-set on ``fired_at``,
    so each timer fires exactly once however many messages or workers race for it.

    ``lease_until``: until then a message for this timer is on its way (the delayed message, a sweep's
    re-queue, or a retry after a failure), so the sweep leaves the timer alone; NULL means no lease.
    """

    __tablename__ = "timers"
    __audited__: ClassVar[bool] = False
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "subject_id", "key"),
        Index("ix_timers_tenant_subject", "tenant_id", "subject_id"),
        # The sweep's index: only timers still waiting, by due time (and lease, checked in the index).
        Index(
            "ix_timers_pending_due",
            "due_at",
            "lease_until",
            postgresql_where=text("fired_at IS NULL AND cancelled_at IS NULL"),
            sqlite_where=text("fired_at IS NULL AND cancelled_at IS NULL"),
        ),
    )

    kind: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[uuid.UUID] = mapped_column()
    key: Mapped[str] = mapped_column(String(120))
    due_at: Mapped[datetime] = mapped_column()
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    fired_at: Mapped[datetime | None] = mapped_column()
    cancelled_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column()
