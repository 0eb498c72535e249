"""Every table, imported so Alembic and the mappers see them all."""

from msp_platform.models.idempotency import IdempotencyRecord
from msp_platform.models.oauth import OAuthClient, RefreshToken, RevokedAccessToken, SigningKey
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.scheduled_job import ScheduledJob
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User, UserRole

__all__ = [
    "IdempotencyRecord",
    "OAuthClient",
    "OutboxMessage",
    "RefreshToken",
    "RevokedAccessToken",
    "ScheduledJob",
    "SigningKey",
    "StaffGrant",
    "StaffMember",
    "StaffRole",
    "Tenant",
    "TenantStatus",
    "User",
    "UserRole",
]
