from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, TenantOwned, tenant_fk

# pending: the link still works; used: the password was set with it; revoked: withdrawn (a newer invitation,
# the user deactivated, or revoked by hand); expired: past ``expires_at`` unused.
InvitationStatus = Literal["pending", "used", "revoked", "expired"]


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

    def status(self, now: datetime) -> InvitationStatus:
        """Used wins over revoked, revoked over expired: what accepting it would answer."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "pending"
