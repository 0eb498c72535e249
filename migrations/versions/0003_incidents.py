"""Incidents: numbering, priority matrices, the event log, comments.

Revision ID: 0003_incidents
Revises: 0002_tenants_users_devices
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from msp_platform.db.base import UTCDateTime
from msp_platform.db.rls import disable_tenant_rls, enable_tenant_rls
from msp_platform.db.types import JSONType

revision = "0003_incidents"
down_revision = "0002_tenants_users_devices"
branch_labels = None
depends_on = None


def _tenant_keys() -> list[sa.Column[object]]:
    return [sa.Column("tenant_id", sa.Uuid(), nullable=False), sa.Column("id", sa.Uuid(), nullable=False)]


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _tenant_fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", column],
        [f"{target}.tenant_id", f"{target}.id"],
        ondelete="RESTRICT",
        name=f"fk_{table}_tenant_id_{column}_{target}",
    )


def upgrade() -> None:
    op.create_table(
        "incidents",
        *_tenant_keys(),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("caller_id", sa.Uuid(), nullable=True),
        sa.Column("reported_by", sa.String(160), nullable=False),
        sa.Column("affected_device_id", sa.Uuid(), nullable=True),
        sa.Column("site_id", sa.Uuid(), nullable=True),
        sa.Column("category", sa.String(80), nullable=True),
        sa.Column("subcategory", sa.String(80), nullable=True),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("impact", sa.SmallInteger(), nullable=False),
        sa.Column("urgency", sa.SmallInteger(), nullable=False),
        sa.Column("patient_care_impact", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("priority_matrix_version", sa.Integer(), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("assignment_group", sa.String(80), nullable=True),
        sa.Column("assignee_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("on_hold_reason", sa.String(20), nullable=True),
        sa.Column("resolution_code", sa.String(30), nullable=True),
        sa.Column("resolution_notes", sa.Text(), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("first_response_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("first_contact_resolution", sa.Boolean(), nullable=False),
        sa.Column("external_source", sa.String(40), nullable=True),
        sa.Column("external_id", sa.String(120), nullable=True),
        sa.Column("legacy_number", sa.String(60), nullable=True),
        sa.Column("merged_into_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("impact BETWEEN 1 AND 3", name="ck_incidents_impact_range"),
        sa.CheckConstraint("urgency BETWEEN 1 AND 3", name="ck_incidents_urgency_range"),
        sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_incidents_priority_range"),
        sa.CheckConstraint("tier BETWEEN 1 AND 3", name="ck_incidents_tier_range"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["assignee_id"], ["staff_members.id"], ondelete="RESTRICT"),
        _tenant_fk("incidents", "caller_id", "users"),
        _tenant_fk("incidents", "affected_device_id", "devices"),
        _tenant_fk("incidents", "site_id", "sites"),
        _tenant_fk("incidents", "merged_into_id", "incidents"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "number"),
        sa.UniqueConstraint("tenant_id", "key"),
        sa.UniqueConstraint("tenant_id", "external_source", "external_id"),
    )
    op.create_index("ix_incidents_tenant_state_priority", "incidents", ["tenant_id", "state", "priority"])
    op.create_index("ix_incidents_tenant_caller", "incidents", ["tenant_id", "caller_id"])
    op.create_index("ix_incidents_tenant_assignee", "incidents", ["tenant_id", "assignee_id"])
    op.create_index("ix_incidents_tenant_opened", "incidents", ["tenant_id", "opened_at"])
    op.create_index("ix_incidents_tenant_legacy", "incidents", ["tenant_id", "legacy_number"])
    enable_tenant_rls(op, "incidents")

    op.create_table(
        "incident_events",
        *_tenant_keys(),
        sa.Column("incident_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("visibility", sa.String(10), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        _tenant_fk("incident_events", "incident_id", "incidents"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "incident_id", "seq"),
    )
    op.create_index(
        "ix_incident_events_tenant_incident_time",
        "incident_events",
        ["tenant_id", "incident_id", "occurred_at"],
    )
    enable_tenant_rls(op, "incident_events")

    op.create_table(
        "incident_comments",
        *_tenant_keys(),
        sa.Column("incident_id", sa.Uuid(), nullable=False),
        sa.Column("author", sa.String(160), nullable=False),
        sa.Column("author_name", sa.String(200), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(10), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        _tenant_fk("incident_comments", "incident_id", "incidents"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_index(
        "ix_incident_comments_tenant_incident",
        "incident_comments",
        ["tenant_id", "incident_id", "created_at"],
    )
    enable_tenant_rls(op, "incident_comments")

    op.create_table(
        "incident_counters",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    enable_tenant_rls(op, "incident_counters")

    op.create_table(
        "priority_matrices",
        *_tenant_keys(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cells", JSONType, nullable=False),
        sa.Column("patient_care_raise", sa.SmallInteger(), nullable=False),
        sa.Column("patient_care_floor", sa.SmallInteger(), nullable=False),
        sa.Column("vip_raise", sa.SmallInteger(), nullable=False),
        sa.Column("created_by", sa.String(160), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "version"),
    )
    enable_tenant_rls(op, "priority_matrices")


def downgrade() -> None:
    for table in ("priority_matrices", "incident_counters", "incident_comments", "incident_events"):
        disable_tenant_rls(op, table)
    op.drop_table("priority_matrices")
    op.drop_table("incident_counters")
    op.drop_index("ix_incident_comments_tenant_incident", table_name="incident_comments")
    op.drop_table("incident_comments")
    op.drop_index("ix_incident_events_tenant_incident_time", table_name="incident_events")
    op.drop_table("incident_events")
    disable_tenant_rls(op, "incidents")
    for index in (
        "ix_incidents_tenant_legacy",
        "ix_incidents_tenant_opened",
        "ix_incidents_tenant_assignee",
        "ix_incidents_tenant_caller",
        "ix_incidents_tenant_state_priority",
    ):
        op.drop_index(index, table_name="incidents")
    op.drop_table("incidents")
