"""Every table, imported so Alembic and the mappers see them all."""

from msp_platform.models.audit import AuditChain, AuditEvent, PlatformAuditEvent
from msp_platform.models.device import Device, DeviceKind, DeviceStatus
from msp_platform.models.idempotency import IdempotencyRecord
from msp_platform.models.invitation import Invitation
from msp_platform.models.oauth import OAuthClient, RefreshToken, RevokedAccessToken, SigningKey
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.scheduled_job import ScheduledJob
from msp_platform.models.site import Site, SiteKind
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User, UserRole

__all__ = [
    "AuditChain",
    "AuditEvent",
    "Device",
    "DeviceKind",
    "DeviceStatus",
    "IdempotencyRecord",
    "Invitation",
    "OAuthClient",
    "OutboxMessage",
    "PlatformAuditEvent",
    "RefreshToken",
    "RevokedAccessToken",
    "ScheduledJob",
    "SigningKey",
    "Site",
    "SiteKind",
    "StaffGrant",
    "StaffMember",
    "StaffRole",
    "Tenant",
    "TenantStatus",
    "User",
    "UserRole",
]
