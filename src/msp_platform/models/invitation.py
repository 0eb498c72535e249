from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk


class Invitation(TenantOwned, Base):
    """A single-use, expiring link for a user to set their password. Only the token's hash is stored; the
    token itself names its tenant so the public accept endpoint can scope its lookup."""

    __tablename__ = "user_invitations"
    __table_args__ = (UniqueConstraint("token_hash"), tenant_fk("user_id", "users"))
    __audit_exclude__ = frozenset({"token_hash"})

    user_id: Mapped[uuid.UUID] = mapped_column()
    token_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    # When the invitation email was handed to the mail server (a redelivered job does not send it twice).
    emailed_at: Mapped[datetime | None] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(120))
