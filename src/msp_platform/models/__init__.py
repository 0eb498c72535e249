"""Every table, imported so Alembic and the mappers see them all."""

from msp_platform.models.assignment_group import AssignmentGroup, AssignmentGroupMember
from msp_platform.models.audit import AuditChain, AuditEvent, PlatformAuditEvent
from msp_platform.models.device import Device, DeviceKind, DeviceStatus
from msp_platform.models.idempotency import IdempotencyRecord
from msp_platform.models.incident import (
    Channel,
    HoldReason,
    Incident,
    IncidentComment,
    IncidentCounter,
    IncidentEvent,
    IncidentState,
    PriorityMatrix,
    ResolutionCode,
    Visibility,
)
from msp_platform.models.invitation import Invitation
from msp_platform.models.oauth import OAuthClient, RefreshToken, RevokedAccessToken, SigningKey
from msp_platform.models.oncall import (
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    Notification,
    OncallLayer,
    OncallLayerMember,
    OncallOverride,
    OncallSchedule,
    Page,
    WebhookDelivery,
    WebhookEndpoint,
)
from msp_platform.models.outbox import OutboxMessage
from msp_platform.models.scheduled_job import ScheduledJob
from msp_platform.models.site import Site, SiteKind
from msp_platform.models.sla import IncidentSla, SlaCalendar, SlaNotice, SlaPolicy
from msp_platform.models.staff import StaffGrant, StaffMember, StaffRole
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.timer import Timer
from msp_platform.models.user import User, UserRole

__all__ = [
    "AssignmentGroup",
    "AssignmentGroupMember",
    "AuditChain",
    "AuditEvent",
    "Channel",
    "Device",
    "DeviceKind",
    "DeviceStatus",
    "Escalation",
    "EscalationLevel",
    "EscalationPolicy",
    "EscalationTarget",
    "HoldReason",
    "IdempotencyRecord",
    "Incident",
    "IncidentComment",
    "IncidentCounter",
    "IncidentEvent",
    "IncidentSla",
    "IncidentState",
    "Invitation",
    "Notification",
    "OAuthClient",
    "OncallLayer",
    "OncallLayerMember",
    "OncallOverride",
    "OncallSchedule",
    "OutboxMessage",
    "Page",
    "PlatformAuditEvent",
    "PriorityMatrix",
    "RefreshToken",
    "ResolutionCode",
    "RevokedAccessToken",
    "ScheduledJob",
    "SigningKey",
    "Site",
    "SiteKind",
    "SlaCalendar",
    "SlaNotice",
    "SlaPolicy",
    "StaffGrant",
    "StaffMember",
    "StaffRole",
    "Tenant",
    "TenantStatus",
    "Timer",
    "User",
    "UserRole",
    "Visibility",
    "WebhookDelivery",
    "WebhookEndpoint",
]
