"""Incidents: assignment groups, append-only events, legacy numbers.

- ``assignment_groups`` (MSP teams, not tenant-owned) and ``assignment_group_members``; incidents point at a
  group by id. Existing free-text group names become groups (one per name, whatever its case).
- ``incident_events`` becomes append-only for the application role (no UPDATE/DELETE/TRUNCATE).
- Legacy numbers: unique per tenant and source system whatever their case (earlier duplicates get the
  incident's key appended, so none is lost), looked up case-insensitively.

Revision ID: 0007_incidents_hardening
Revises: 0006_tenants_hardening
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import make_url

from msp_platform.db.base import UTCDateTime
from msp_platform.db.types import JSONType
from msp_platform.kit.ids import new_id
from msp_platform.kit.time import utcnow

revision = "0007_incidents_hardening"
down_revision = "0006_tenants_hardening"
branch_labels = None
depends_on = None

GROUP_FK = "fk_incidents_assignment_group_id_assignment_groups"

_incidents = sa.table(
    "incidents",
    sa.column("tenant_id", sa.Uuid()),
    sa.column("id", sa.Uuid()),
    sa.column("number", sa.BigInteger()),
    sa.column("key", sa.String()),
    sa.column("tier", sa.SmallInteger()),
    sa.column("assignment_group", sa.String()),
    sa.column("assignment_group_id", sa.Uuid()),
    sa.column("external_source", sa.String()),
    sa.column("legacy_number", sa.String()),
)
_groups = sa.table(
    "assignment_groups",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("tier", sa.SmallInteger()),
    sa.column("description", sa.Text()),
    sa.column("active", sa.Boolean()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def _defer_foreign_keys() -> None:
    # SQLite rebuilds a table to alter it (copy, drop, rename); rows of other tables that reference it must not
    # fail the drop. Deferred checks run at the commit, when the rebuilt table holds the same rows.
    if not _postgres():
        op.execute("PRAGMA defer_foreign_keys = ON")


@contextmanager
def _rebuild(table: str) -> Iterator[Any]:
    """``op.batch_alter_table``, quietly. SQLite rebuilds the table, reflecting it and the tables its foreign
    keys name; SQLAlchemy cannot reflect expression indexes there (the groups' name index) and warns. The
    rebuilt ``incidents`` has none at these points: its expression indexes are created after the rebuilds
    and dropped before them on the way down. (A later migration rebuilding ``incidents`` on SQLite must
    recreate ``ix_incidents_tenant_legacy_lower`` and ``uq_incidents_tenant_source_legacy`` itself.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        with op.batch_alter_table(table) as batch:
            yield batch


def _app_role() -> str:
    """The application's (non-owner) role, named as migrations/env.py names it."""
    from msp_platform.config import Settings

    given = context.config.attributes.get("settings")
    settings = given if isinstance(given, Settings) else Settings()
    app_user = make_url(settings.effective_database_url).username or ""
    owner_user = make_url(settings.effective_owner_url).username or ""
    return app_user if app_user and app_user != owner_user else ""


def _event_log_privileges(statement: str) -> None:
    """Run ``statement`` (with ``{role}``) for the application role, if this database has one."""
    if not _postgres():
        return
    role = _app_role()
    bind = op.get_bind()
    if (
        not role
        or bind.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar() is None
    ):
        return
    op.execute(statement.format(role=bind.dialect.identifier_preparer.quote(role)))


def _rls_binds_owner(on: bool) -> None:
    # FORCE row-level security binds the owner too; the data steps below read every tenant's incidents.
    if _postgres():
        op.execute(f"ALTER TABLE incidents {'' if on else 'NO '}FORCE ROW LEVEL SECURITY")


def _groups_from_names() -> None:
    """One group per free-text name (names differing only in case are one group), at the lowest tier seen."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_incidents.c.assignment_group, sa.func.min(_incidents.c.tier))
        .where(_incidents.c.assignment_group.is_not(None))
        .group_by(_incidents.c.assignment_group)
        .order_by(_incidents.c.assignment_group)
    ).all()
    groups: dict[str, dict[str, object]] = {}
    for name, tier in rows:
        key = str(name).strip().lower()
        if not key:
            continue
        level = max(1, min(3, int(tier or 1)))
        group = groups.setdefault(key, {"id": new_id(), "name": str(name).strip()[:80], "tier": level})
        group["tier"] = min(level, int(str(group["tier"])))
    if not groups:
        return
    now = utcnow()
    bind.execute(
        _groups.insert(),
        [
            g | {"description": "", "active": True, "created_at": now, "updated_at": now}
            for g in groups.values()
        ],
    )
    for name, _ in rows:
        found = groups.get(str(name).strip().lower())
        if found is not None:
            bind.execute(
                _incidents.update()
                .where(_incidents.c.assignment_group == name)
                .values(assignment_group_id=found["id"])
            )


def _unique_legacy_numbers() -> None:
    """Keep the first incident's legacy number of each duplicate set; the later ones get their key appended."""
    bind = op.get_bind()
    source = sa.func.coalesce(_incidents.c.external_source, "")
    lowered = sa.func.lower(_incidents.c.legacy_number)
    duplicates = bind.execute(
        sa.select(_incidents.c.tenant_id, source, lowered)
        .where(_incidents.c.legacy_number.is_not(None))
        .group_by(_incidents.c.tenant_id, source, lowered)
        .having(sa.func.count() > 1)
    ).all()
    for tenant_id, src, legacy in duplicates:
        rows = bind.execute(
            sa.select(_incidents.c.id, _incidents.c.key, _incidents.c.legacy_number)
            .where(_incidents.c.tenant_id == tenant_id, source == src, lowered == legacy)
            .order_by(_incidents.c.number)
        ).all()
        for incident_id, key, number in rows[1:]:
            renamed = f"{str(number)[: 59 - len(key)]}~{key}"
            bind.execute(
                _incidents.update()
                .where(_incidents.c.tenant_id == tenant_id, _incidents.c.id == incident_id)
                .values(legacy_number=renamed)
            )


def upgrade() -> None:
    _defer_foreign_keys()
    op.create_table(
        "assignment_groups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("tenant_ids", JSONType, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("tier BETWEEN 1 AND 3", name="ck_assignment_groups_tier_range"),
        sa.PrimaryKeyConstraint("id", name="pk_assignment_groups"),
    )
    op.create_index(
        "uq_assignment_groups_name_lower", "assignment_groups", [sa.text("lower(name)")], unique=True
    )
    op.create_table(
        "assignment_group_members",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["assignment_groups.id"],
            ondelete="CASCADE",
            name="fk_assignment_group_members_group_id_assignment_groups",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_members.id"],
            ondelete="CASCADE",
            name="fk_assignment_group_members_staff_id_staff_members",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_assignment_group_members"),
        sa.UniqueConstraint("group_id", "staff_id", name="uq_assignment_group_members_group_id_staff_id"),
    )
    op.create_index("ix_assignment_group_members_staff", "assignment_group_members", ["staff_id"])

    with _rebuild("incidents") as batch:
        batch.add_column(sa.Column("assignment_group_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            GROUP_FK, "assignment_groups", ["assignment_group_id"], ["id"], ondelete="RESTRICT"
        )
    _rls_binds_owner(False)
    _groups_from_names()
    _unique_legacy_numbers()
    _rls_binds_owner(True)
    op.drop_index("ix_incidents_tenant_legacy", table_name="incidents")
    with _rebuild("incidents") as batch:
        batch.drop_column("assignment_group")
    op.create_index("ix_incidents_tenant_group", "incidents", ["tenant_id", "assignment_group_id"])
    op.create_index(
        "ix_incidents_tenant_legacy_lower", "incidents", ["tenant_id", sa.text("lower(legacy_number)")]
    )
    op.create_index(
        "uq_incidents_tenant_source_legacy",
        "incidents",
        ["tenant_id", sa.text("coalesce(external_source, '')"), sa.text("lower(legacy_number)")],
        unique=True,
    )
    # The event log is append-only for the application (SLA clocks are computed from it). env.py re-applies
    # this after every run (db.rls.APPEND_ONLY_TABLES); doing it here covers databases migrated by older code.
    _event_log_privileges("REVOKE UPDATE, DELETE, TRUNCATE ON incident_events FROM {role}")


def downgrade() -> None:
    _defer_foreign_keys()
    _event_log_privileges("GRANT UPDATE, DELETE ON incident_events TO {role}")
    op.drop_index("uq_incidents_tenant_source_legacy", table_name="incidents")
    op.drop_index("ix_incidents_tenant_legacy_lower", table_name="incidents")
    op.drop_index("ix_incidents_tenant_group", table_name="incidents")
    with _rebuild("incidents") as batch:
        batch.add_column(sa.Column("assignment_group", sa.String(80), nullable=True))
    _rls_binds_owner(False)
    op.get_bind().execute(
        _incidents.update()
        .where(_incidents.c.assignment_group_id.is_not(None))
        .values(
            assignment_group=sa.select(_groups.c.name)
            .where(_groups.c.id == _incidents.c.assignment_group_id)
            .scalar_subquery()
        )
    )
    _rls_binds_owner(True)
    with _rebuild("incidents") as batch:
        batch.drop_constraint(GROUP_FK, type_="foreignkey")
        batch.drop_column("assignment_group_id")
    op.create_index("ix_incidents_tenant_legacy", "incidents", ["tenant_id", "legacy_number"])
    op.drop_index("ix_assignment_group_members_staff", table_name="assignment_group_members")
    op.drop_table("assignment_group_members")
    op.drop_index("uq_assignment_groups_name_lower", table_name="assignment_groups")
    op.drop_table("assignment_groups")
