"""Service reports: the request options and every report's rows (one flat row type per table, so the JSON rows
and the CSV lines have the same columns)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

import msgspec


class ReportScope(StrEnum):
    tenant = "tenant"  # the acting tenant only
    rollup = "rollup"  # the acting tenant and every descendant the caller may read


class GroupBy(StrEnum):
    none = "none"
    tenant = "tenant"
    site = "site"


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"


class TenantRef(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    slug: str
    name: str
    timezone: str
    parent_id: uuid.UUID | None


class GroupKey(msgspec.Struct, kw_only=True):
    """The tenant (group_by=tenant) or the tenant and site (group_by=site) a row is about. Incidents without a
    site form their own group, with null site fields."""

    tenant_id: uuid.UUID
    tenant_slug: str
    site_id: uuid.UUID | None = None
    site_code: str | None = None
    site_name: str | None = None


# --- rows --------------------------------------------------------------------------------------------------
# ``group`` is null when group_by=none; ``priority`` is null on the "all priorities" total row of a group.


class SlaComplianceRow(msgspec.Struct, kw_only=True):
    group: GroupKey | None
    priority: int | None
    target: Literal["response", "resolution", "update"]
    measured: int
    met: int
    breached: int
    pending: int
    compliance_percent: float | None


class ResponseTimesRow(msgspec.Struct, kw_only=True):
    group: GroupKey | None
    priority: int | None
    responded: int
    mtta_mean_seconds: float | None
    mtta_p50_seconds: float | None
    mtta_p90_seconds: float | None
    resolved: int
    mttr_mean_seconds: float | None
    mttr_p50_seconds: float | None
    mttr_p90_seconds: float | None


class ResolutionQualityRow(msgspec.Struct, kw_only=True):
    group: GroupKey | None
    priority: int | None
    resolved: int
    first_contact_resolved: int
    fcr_percent: float | None
    reopened: int
    reopen_percent: float | None


class BacklogRow(msgspec.Struct, kw_only=True):
    group: GroupKey | None
    priority: int | None
    open: int
    age_lt_1d: int
    age_1d_3d: int
    age_3d_7d: int
    age_7d_30d: int
    age_gt_30d: int


class VolumeRow(msgspec.Struct, kw_only=True):
    group: GroupKey | None
    # "all" (the group's total), "priority" ("1".."5"), "channel" or "category" (null: no category).
    dimension: Literal["all", "priority", "channel", "category"]
    value: str | None
    opened: int
    # Of which cancelled (including duplicates merged into another incident).
    cancelled: int
    percent: float | None


class HourOfWeekRow(msgspec.Struct, kw_only=True):
    group: GroupKey | None
    weekday: int  # 0 = Monday ... 6 = Sunday, local time
    weekday_name: str
    hour: int  # 0..23, local time
    opened: int


# --- envelopes ---------------------------------------------------------------------------------------------


class ReportHeader(msgspec.Struct, kw_only=True):
    report: str
    period_from: datetime = msgspec.field(name="from")
    period_to: datetime = msgspec.field(name="to")
    generated_at: datetime
    scope: ReportScope
    group_by: GroupBy
    # The acting tenant's time zone: a date (or a time without offset) in from/to is read in it.
    timezone: str
    tenants: list[TenantRef]


class SlaComplianceReport(ReportHeader, kw_only=True):
    rows: list[SlaComplianceRow]


class ResponseTimesReport(ReportHeader, kw_only=True):
    rows: list[ResponseTimesRow]


class ResolutionQualityReport(ReportHeader, kw_only=True):
    rows: list[ResolutionQualityRow]


class BacklogReport(ReportHeader, kw_only=True):
    # The end of the period, or the time of the report if the period has not ended yet.
    as_of: datetime
    rows: list[BacklogRow]


class VolumeReport(ReportHeader, kw_only=True):
    rows: list[VolumeRow]


class HourOfWeekReport(ReportHeader, kw_only=True):
    # Every zone incidents were mapped into (a site's own zone, else its tenant's).
    timezones: list[str]
    rows: list[HourOfWeekRow]


class ServiceReport(ReportHeader, kw_only=True):
    backlog_as_of: datetime
    timezones: list[str]
    sla_compliance: list[SlaComplianceRow]
    response_times: list[ResponseTimesRow]
    resolution_quality: list[ResolutionQualityRow]
    backlog: list[BacklogRow]
    volume: list[VolumeRow]
    volume_by_hour_of_week: list[HourOfWeekRow]
