"""Every domain controller under /api/v1, in one list the app factory mounts."""

from __future__ import annotations

from typing import Any

from msp_platform.audit.endpoints import AuditController
from msp_platform.devices.endpoints import DeviceController
from msp_platform.escalations.endpoints import EscalationPolicyController, PageController
from msp_platform.identity.accept_page import AcceptInvitationPage
from msp_platform.identity.endpoints import (
    ClientController,
    InvitationAcceptController,
    StaffController,
    UserController,
)
from msp_platform.incidents.endpoints import (
    AssignmentGroupController,
    IncidentController,
    PriorityMatrixController,
)
from msp_platform.integrations.endpoints import WebhookController
from msp_platform.oncall.endpoints import MyOncallController, OncallFeedController, OncallScheduleController
from msp_platform.reports.endpoints import ReportController
from msp_platform.sites.endpoints import SiteController
from msp_platform.sla.endpoints import SlaController
from msp_platform.tenants.endpoints import TenantController

API_CONTROLLERS: list[Any] = [
    ClientController,
    StaffController,
    SiteController,
    AuditController,
    TenantController,
    DeviceController,
    UserController,
    InvitationAcceptController,
    AcceptInvitationPage,
    IncidentController,
    PriorityMatrixController,
    AssignmentGroupController,
    SlaController,
    EscalationPolicyController,
    PageController,
    WebhookController,
    ReportController,
    OncallScheduleController,
    OncallFeedController,
    MyOncallController,
]
