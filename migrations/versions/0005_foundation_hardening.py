"""Foundation hardening (owned by the foundation work package).

Idempotency records now store their response bodies encrypted (``kit.idempotency``). Records written before
hold bodies in plain text, some with secrets shown once (client secrets, invitation tokens); they are
deleted rather than left readable for the rest of their 24 hours. Downgrading deletes them too: the older
code would replay an encrypted body as it is. Either way a retry in flight across the migration runs
again instead of replaying.

Revision ID: 0005_foundation_hardening
Revises: 0004_sla_oncall
"""

from __future__ import annotations

from alembic import op

revision = "0005_foundation_hardening"
down_revision = "0004_sla_oncall"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_records")


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_records")
