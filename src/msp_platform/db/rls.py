"""PostgreSQL row-level security for tenant tables, used by migrations (run as the owner).

Policies read two transaction-local settings written by the session (``db.session``):
``app.tenant_id`` (the write tenant) and ``app.tenant_ids`` (every readable tenant, comma-separated).
Unset or empty means no rows: the policies are fail-closed, and FORCE makes them bind the owner too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

APPEND_ONLY_TABLES = ("audit_events", "platform_audit_events", "incident_events")
# Each wrapped in a scalar sub-select so PostgreSQL evaluates it once per statement (an InitPlan), not once
# per row: the report queries over a million incidents spent most of their time re-reading the settings.
# Migration 0008 rewrote the policies of the tables created before it to this form.
WRITE_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
READ_TENANTS = "((SELECT string_to_array(NULLIF(current_setting('app.tenant_ids', true), ''), ','))::uuid[])"


def enable_tenant_rls(op: Any, table: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_read ON {table} FOR SELECT USING (tenant_id = ANY ({READ_TENANTS}))")
    op.execute(
        f"CREATE POLICY tenant_write ON {table} FOR ALL "
        f"USING (tenant_id = {WRITE_TENANT}) WITH CHECK (tenant_id = {WRITE_TENANT})"
    )


def disable_tenant_rls(op: Any, table: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP POLICY IF EXISTS tenant_write ON {table}")
    op.execute(f"DROP POLICY IF EXISTS tenant_read ON {table}")
    op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


def ensure_app_role(connection: Any, role: str) -> None:
    """Create the application's login role if missing and grant it DML (never ownership) on every table."""
    if connection.dialect.name != "postgresql" or not role:
        return
    quoted = connection.dialect.identifier_preparer.quote(role)
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
    if not exists:
        connection.execute(
            text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
        )
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    connection.execute(
        text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
    )
    connection.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}"))
    connection.execute(text(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {quoted}"))
    # The audit log is append-only for the application (the hash chain catches the owner).
    for table in APPEND_ONLY_TABLES:
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None:
            connection.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {quoted}"))
