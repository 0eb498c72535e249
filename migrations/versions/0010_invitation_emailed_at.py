"""user_invitations.emailed_at: when the invitation email went to the mail server, so a redelivered job
does not email the same link twice, and administrators see whether it was sent.

Revision ID: 0010_invitation_emailed_at
Revises: 0009_escalations_hardening
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import msp_platform.db.base

revision = "0010_invitation_emailed_at"
down_revision = "0009_escalations_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "user_invitations",
        sa.Column("emailed_at", msp_platform.db.base.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # SQLite (3.35+) drops a plain column in place; batch mode would rebuild the table.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text('ALTER TABLE "user_invitations" DROP COLUMN "emailed_at"'))
    else:
        op.drop_column("user_invitations", "emailed_at")
