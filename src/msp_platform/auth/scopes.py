"""Scopes (per resource, read/write) and the scopes each role may hold."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    tenants_read = "tenants:read"
    tenants_write = "tenants:write"
    users_read = "users:read"
    users_write = "users:write"
    sites_read = "sites:read"
    sites_write = "sites:write"
    devices_read = "devices:read"
    devices_write = "devices:write"
    incidents_read = "incidents:read"
    incidents_write = "incidents:write"
    sla_read = "sla:read"
    sla_write = "sla:write"
    reports_read = "reports:read"
    oncall_read = "oncall:read"
    oncall_write = "oncall:write"
    audit_read = "audit:read"
    clients_read = "clients:read"
    clients_write = "clients:write"
    staff_read = "staff:read"
    staff_write = "staff:write"


class Role(StrEnum):
    msp_admin = "msp_admin"
    msp_agent = "msp_agent"
    tenant_admin = "tenant_admin"
    tenant_user = "tenant_user"


ALL_SCOPES: frozenset[str] = frozenset(s.value for s in Scope)

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.msp_admin: ALL_SCOPES,
    Role.msp_agent: frozenset(
        {
            Scope.tenants_read,
            Scope.users_read,
            Scope.sites_read,
            Scope.devices_read,
            Scope.incidents_read,
            Scope.incidents_write,
            Scope.sla_read,
            Scope.reports_read,
            Scope.oncall_read,
            Scope.oncall_write,
            Scope.staff_read,
        }
    ),
    Role.tenant_admin: frozenset(
        {
            Scope.tenants_read,
            Scope.users_read,
            Scope.users_write,
            Scope.sites_read,
            Scope.sites_write,
            Scope.devices_read,
            Scope.devices_write,
            Scope.incidents_read,
            Scope.incidents_write,
            Scope.sla_read,
            Scope.reports_read,
            Scope.oncall_read,
            Scope.audit_read,
            Scope.clients_read,
            Scope.clients_write,
        }
    ),
    Role.tenant_user: frozenset(
        {
            Scope.tenants_read,
            Scope.sites_read,
            Scope.devices_read,
            Scope.incidents_read,
            Scope.incidents_write,
        }
    ),
}

# An integration client acts for its tenant like a tenant admin would, limited to the scopes it was given.
CLIENT_MAX_SCOPES: frozenset[str] = ROLE_SCOPES[Role.tenant_admin] - {Scope.clients_write}

STAFF_ROLES = frozenset({Role.msp_admin, Role.msp_agent})


def parse_scope(value: str | None) -> frozenset[str]:
    return frozenset(value.split()) if value else frozenset()


def format_scope(scopes: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(scopes))
