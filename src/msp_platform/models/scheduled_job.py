from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base


class ScheduledJob(Base):
    """One row per periodic job. Schedulers in every process race to move ``next_run_at`` forward with a
    compare-and-set; the one that wins enqueues the run, so it runs once however many processes there are."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column()
    last_run_at: Mapped[datetime | None] = mapped_column()
