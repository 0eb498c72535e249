"""Tenants (calendar, lifecycle), sites, user profile fields, invitations, devices, audit log.

Revision ID: 0002_tenants_users_devices
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from msp_platform.db.base import UTCDateTime
from msp_platform.db.rls import disable_tenant_rls, enable_tenant_rls
from msp_platform.db.types import JSONType

revision = "0002_tenants_users_devices"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def _tenant_keys() -> list[sa.Column[object]]:
    return [
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
    ]


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _audit_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("object_type", sa.String(60), nullable=False),
        sa.Column("object_id", sa.String(80), nullable=False),
        sa.Column("changes", JSONType, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("business_calendar", JSONType, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("suspended_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("offboarded_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("manifest_version", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_tenants_ticket_prefix", ["ticket_prefix"])
    with op.batch_alter_table("tenants") as batch:
        batch.alter_column("business_calendar", server_default=None)

    op.create_table(
        "sites",
        *_tenant_keys(),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "parent_id"],
            ["sites.tenant_id", "sites.id"],
            ondelete="RESTRICT",
            name="fk_sites_tenant_id_parent_id_sites",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "code"),
    )
    enable_tenant_rls(op, "sites")

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("title", sa.String(120), nullable=True))
        batch.add_column(sa.Column("department", sa.String(120), nullable=True))
        batch.add_column(sa.Column("site_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("phone", sa.String(40), nullable=True))
        batch.add_column(sa.Column("vip", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("clinical", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("employee_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("deactivated_at", UTCDateTime(), nullable=True))
        batch.create_foreign_key(
            "fk_users_tenant_id_site_id_sites",
            "sites",
            ["tenant_id", "site_id"],
            ["tenant_id", "id"],
            ondelete="RESTRICT",
        )
    with op.batch_alter_table("users") as batch:
        batch.alter_column("vip", server_default=None)
        batch.alter_column("clinical", server_default=None)

    op.create_table(
        "user_invitations",
        *_tenant_keys(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(120), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["users.tenant_id", "users.id"],
            ondelete="RESTRICT",
            name="fk_user_invitations_tenant_id_user_id_users",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("token_hash"),
    )
    enable_tenant_rls(op, "user_invitations")

    op.create_table(
        "devices",
        *_tenant_keys(),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("hostname", sa.String(253), nullable=True),
        sa.Column("serial", sa.String(100), nullable=True),
        sa.Column("asset_tag", sa.String(100), nullable=True),
        sa.Column("manufacturer", sa.String(100), nullable=True),
        sa.Column("model", sa.String(100), nullable=True),
        sa.Column("os", sa.String(100), nullable=True),
        sa.Column("os_version", sa.String(100), nullable=True),
        sa.Column("site_id", sa.Uuid(), nullable=True),
        sa.Column("assigned_user_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "site_id"],
            ["sites.tenant_id", "sites.id"],
            ondelete="RESTRICT",
            name="fk_devices_tenant_id_site_id_sites",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "assigned_user_id"],
            ["users.tenant_id", "users.id"],
            ondelete="RESTRICT",
            name="fk_devices_tenant_id_assigned_user_id_users",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "serial"),
        sa.UniqueConstraint("tenant_id", "asset_tag"),
    )
    op.create_index("ix_devices_tenant_hostname", "devices", ["tenant_id", "hostname"])
    op.create_index("ix_devices_tenant_site", "devices", ["tenant_id", "site_id"])
    op.create_index("ix_devices_tenant_assigned_user", "devices", ["tenant_id", "assigned_user_id"])
    enable_tenant_rls(op, "devices")

    op.create_table(
        "audit_events",
        *_tenant_keys(),
        *_audit_columns(),
        *_timestamps(),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "seq"),
    )
    op.create_index(
        "ix_audit_events_tenant_object", "audit_events", ["tenant_id", "object_type", "object_id"]
    )
    enable_tenant_rls(op, "audit_events")

    op.create_table(
        "platform_audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_audit_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    op.create_table(
        "audit_chains",
        sa.Column("chain", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("chain"),
    )


def downgrade() -> None:
    op.drop_table("audit_chains")
    op.drop_table("platform_audit_events")
    disable_tenant_rls(op, "audit_events")
    op.drop_index("ix_audit_events_tenant_object", table_name="audit_events")
    op.drop_table("audit_events")
    disable_tenant_rls(op, "devices")
    op.drop_index("ix_devices_tenant_assigned_user", table_name="devices")
    op.drop_index("ix_devices_tenant_site", table_name="devices")
    op.drop_index("ix_devices_tenant_hostname", table_name="devices")
    op.drop_table("devices")
    disable_tenant_rls(op, "user_invitations")
    op.drop_table("user_invitations")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("fk_users_tenant_id_site_id_sites", type_="foreignkey")
        for column in (
            "deactivated_at",
            "employee_id",
            "clinical",
            "vip",
            "phone",
            "site_id",
            "department",
            "title",
        ):
            batch.drop_column(column)
    disable_tenant_rls(op, "sites")
    op.drop_table("sites")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint("uq_tenants_ticket_prefix", type_="unique")
        for column in (
            "manifest_version",
            "offboarded_at",
            "suspended_at",
            "status_reason",
            "business_calendar",
        ):
            batch.drop_column(column)
