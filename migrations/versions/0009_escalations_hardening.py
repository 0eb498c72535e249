"""Escalations and on-call hardening.

- timers: ``lease_until`` (a message is on its way until then: the sweep leaves the timer alone), and the
  sweep's partial index now carries it beside ``due_at``.
- escalations: ``ladder``, the policy's levels frozen when the escalation started.
- pages: one page per (escalation, level, repeat, person) enforced by two partial unique indexes (the
  original unique constraint includes the always-NULL other person column, so NULLS DISTINCT never let it
  fire; it stays, harmless, because SQLite cannot drop it without rebuilding a referenced table).
- oncall_schedules: ``published_version`` and ``published_snapshot``, what escalations page from.

Revision ID: 0009_escalations_hardening
Revises: 0008_sla_hardening
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import msp_platform.db.base

revision = "0009_escalations_hardening"
down_revision = "0008_sla_hardening"
branch_labels = None
depends_on = None

PENDING = "fired_at IS NULL AND cancelled_at IS NULL"


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _drop_column(table: str, column: str) -> None:
    """SQLite (3.35+) drops a plain column in place; batch mode would rebuild the table, which its foreign
    keys (pages -> escalations, layers -> schedules) forbid once rows exist."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text(f'ALTER TABLE "{table}" DROP COLUMN "{column}"'))
    else:
        op.drop_column(table, column)


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(
            sa.Column("lease_until", msp_platform.db.base.UTCDateTime(timezone=True), nullable=True)
        )
    op.drop_index(
        "ix_timers_pending_due",
        table_name="timers",
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_index(
        "ix_timers_pending_due",
        "timers",
        ["due_at", "lease_until"],
        unique=False,
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )

    with op.batch_alter_table("escalations") as batch:
        batch.add_column(sa.Column("ladder", _json(), nullable=True))

    for column in ("staff_id", "user_id"):
        op.create_index(
            f"uq_pages_{column.removesuffix('_id')}_once",
            "pages",
            ["tenant_id", "escalation_id", "level", "repeat", column],
            unique=True,
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
        )

    with op.batch_alter_table("oncall_schedules") as batch:
        batch.add_column(sa.Column("published_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("published_snapshot", _json(), nullable=True))


def downgrade() -> None:
    _drop_column("oncall_schedules", "published_snapshot")
    _drop_column("oncall_schedules", "published_version")

    for column in ("staff_id", "user_id"):
        op.drop_index(
            f"uq_pages_{column.removesuffix('_id')}_once",
            table_name="pages",
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
        )

    _drop_column("escalations", "ladder")

    op.drop_index(
        "ix_timers_pending_due",
        table_name="timers",
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    _drop_column("timers", "lease_until")
    op.create_index(
        "ix_timers_pending_due",
        "timers",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
