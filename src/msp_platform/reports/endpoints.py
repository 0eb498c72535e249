"""/api/v1/reports: service reports over a period, per tenant, per site and rolled up over a health system,
as JSON or CSV."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.openapi.spec import Example, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import QueryParameter

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Scope
from msp_platform.kit.deps import DEPENDENCIES, Caller, Session, TenantId
from msp_platform.kit.openapi import problem_response
from msp_platform.reports import service
from msp_platform.reports.schemas import (
    BacklogReport,
    BacklogRow,
    GroupBy,
    HourOfWeekReport,
    HourOfWeekRow,
    ReportFormat,
    ReportHeader,
    ReportScope,
    ResolutionQualityReport,
    ResolutionQualityRow,
    ResponseTimesReport,
    ResponseTimesRow,
    ServiceReport,
    SlaComplianceReport,
    SlaComplianceRow,
    VolumeReport,
    VolumeRow,
)

CSV_MEDIA_TYPE = "text/csv"  # Litestar appends "; charset=utf-8"

COMMON = f"""
**Who**: tenant administrators and integration clients (scope `reports:read`) for their own tenant; MSP staff
for the tenant named by the `MSP-Tenant` header.

**Period** `[from, to)`: `from` inclusive, `to` exclusive, at most {service.MAX_PERIOD_DAYS} days. ISO 8601: an
instant with an offset (`2025-03-01T05:00:00Z`) is taken as given; a date (`2025-03-01`) or a time without
offset is read in the acting tenant's time zone, so `from=2025-03-01&to=2025-04-01` is March, local time.

**Scope**: `tenant` (default) covers the acting tenant; `rollup` adds every descendant tenant the caller may
read (a health system and its hospitals, for MSP staff granted them; tenant callers only ever see their own
tenant). The `tenants` field lists who is covered.

**Grouping**: `group_by=none` (default) gives one figure set; `tenant` one per tenant; `site` one per tenant
and site (incidents without a site form a group with null site fields). `group` is null for `none`.
Priority rows 1-5 come with a total row whose `priority` is null.

**Format**: JSON by default; CSV with `format=csv` or `Accept: text/csv` (`format` wins). CSV has one line per
row, the group's columns first; a text cell that starts with `=`, `+`, `-`, `@`, tab or carriage return is
prefixed with `'` so that spreadsheets never run it as a formula.
"""

SLA_DESCRIPTION = (
    COMMON
    + """
**SLA compliance per priority and target** (`response`, `resolution`, and `update`: the public update
cadence, met when no update was missed, breached when one was), over the incidents **opened** in the period
(cancelled ones excluded). `met` and `breached` as the SLA engine stored them; a running clock past its due
time counts as breached. `pending`: still running or paused. `compliance_percent` = met / (met +
breached), null when nothing is decided yet. Incidents opened without an SLA policy are not measured.
"""
)
TIMES_DESCRIPTION = (
    COMMON
    + """
**MTTA** (`mtta_*`): time from opening to the first response (a public staff comment, or work started), over
the incidents **opened** in the period that were responded to (cancelled excluded); `responded` counts them.
**MTTR** (`mttr_*`): wall-clock time from opening to resolution, over the incidents **resolved** in the period
(state resolved or closed; pauses and reopened time included); `resolved` counts them. Mean, median (p50) and
90th percentile in seconds; percentiles interpolate linearly (PostgreSQL `percentile_cont`, computed the same
way on SQLite).
"""
)
QUALITY_DESCRIPTION = (
    COMMON
    + """
Over the incidents **resolved** in the period (state resolved or closed): `first_contact_resolved` (resolved
by L1 on first contact, never escalated, held, reassigned twice or reopened) and `reopened` (reopened at
least once before this resolution), with their rates in percent of `resolved`.
"""
)
BACKLOG_DESCRIPTION = (
    COMMON
    + """
**Backlog and ageing** at the end of the period (`as_of`: `to`, or now if the period has not ended): incidents
opened before `as_of` and not resolved, closed or cancelled by then, by current priority and by age at
`as_of` (`<1 d`, `1-3 d`, `3-7 d`, `7-30 d`, `>=30 d`; lower bounds inclusive). Past dates are reconstructed
from the incidents' timestamps; an incident reopened after `as_of` is placed by its latest resolution.
"""
)
VOLUME_DESCRIPTION = (
    COMMON
    + """
**Volume**: incidents **opened** in the period (every state), as one table: `dimension=all` (the total), then
`priority` (1-5), `channel` (every channel) and `category` (those seen; null: no category), with `cancelled`
(of which cancelled, merged duplicates included) and `percent` of the group's total.
"""
)
HOURS_DESCRIPTION = (
    COMMON
    + """
**Volume by hour of week** (shift-change peaks): incidents **opened** in the period, 168 rows per group
(weekday 0 = Monday, hour 0-23) in local time: the time zone of the incident's site, else of its tenant
(`timezones` lists those used). Exact across daylight-saving changes and 30/45-minute offsets.
"""
)
SERVICE_DESCRIPTION = (
    COMMON
    + """
**Everything at once**: `sla_compliance`, `response_times`, `resolution_quality`, `backlog`, `volume` and
`volume_by_hour_of_week`, with the definitions of the separate reports. As CSV it is one long table:
`section`, the group's columns, the dimensions that apply (`priority`, `target`, `dimension`,
`dimension_value`, `weekday`, `hour`), `metric` and `value` — ready for a pivot table.
"""
)

# ``from`` is a Python keyword and ``scope`` a reserved Litestar name: both are read as text and checked in the
# service, so that every validation error names the query parameter (``to`` likewise, for a uniform error).
PeriodFrom = Annotated[
    str | None,
    QueryParameter(
        name="from",
        required=True,
        description="Start of the period, inclusive: ISO 8601 date or date-time (see the description).",
        examples=[Example(value="2025-03-01")],
    ),
]
PeriodTo = Annotated[
    str | None,
    QueryParameter(
        name="to",
        required=True,
        description="End of the period, exclusive: ISO 8601 date or date-time.",
        examples=[Example(value="2025-04-01")],
    ),
]
ScopeParam = Annotated[
    str | None,
    QueryParameter(
        name="scope",
        description="`tenant` (default): the acting tenant; `rollup`: with its descendants you may read.",
        schema_extra={"enum": [s.value for s in ReportScope], "default": ReportScope.tenant.value},
    ),
]
GroupByParam = Annotated[GroupBy, QueryParameter(description="`none` (default), `tenant` or `site`.")]
FormatParam = Annotated[
    ReportFormat | None,
    QueryParameter(description="`json` or `csv`; without it, the Accept header decides."),
]


@dataclass
class _ReportOperation(Operation):
    """Documents the CSV rendering next to the JSON one."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {
                **(ok.content or {}),
                "text/csv": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.STRING,
                        description="RFC 4180 CSV with a header line (format=csv or Accept: text/csv).",
                    )
                ),
            }


def _report_route(summary: str, description: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "operation_class": _ReportOperation,
        "responses": {
            422: problem_response(
                "Invalid period (not ISO 8601, outside 1900..9000, to <= from, too long) or option."
            )
        },
        **protected(Scope.reports_read),
    }


def _wants_csv(request: Request[Any, Any, Any], fmt: ReportFormat | None) -> bool:
    if fmt is not None:
        return fmt is ReportFormat.csv
    return request.accept.best_match(["application/json", "text/csv"], default="") == "text/csv"


def _render(
    request: Request[Any, Any, Any],
    fmt: ReportFormat | None,
    report: ReportHeader,
    csv: Callable[[], bytes],
) -> Response[Any]:
    if not _wants_csv(request, fmt):
        return Response(report)
    tenant = report.tenants[0].slug if report.tenants else "tenant"
    name = f"{report.report}_{tenant}_{report.period_from:%Y%m%dT%H%M}_{report.period_to:%Y%m%dT%H%M}.csv"
    return Response(
        csv(),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _open(
    session: Session,
    principal: Caller,
    tenant_id: TenantId,
    period_from: str | None,
    to: str | None,
    report_scope: str | None,
    group_by: GroupBy,
) -> service.ReportContext:
    return await service.open_report(
        session,
        principal,
        tenant_id,
        raw_scope=report_scope,
        group_by=group_by,
        raw_from=period_from,
        raw_to=to,
    )


class ReportController(Controller):
    path = "/api/v1/reports"
    tags = ["Reports"]
    dependencies = DEPENDENCIES

    @get("/service", **_report_route("Service report: every section at once", SERVICE_DESCRIPTION))
    async def service_report(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[ServiceReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.service_report(session, ctx)
        return _render(request, format, report, lambda: service.service_csv(report))

    @get("/sla-compliance", **_report_route("SLA compliance per priority", SLA_DESCRIPTION))
    async def sla_compliance(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[SlaComplianceReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.sla_compliance_report(session, ctx)
        return _render(
            request, format, report, lambda: service.rows_csv(SlaComplianceRow, report.rows, group_by)
        )

    @get("/response-times", **_report_route("MTTA and MTTR (mean, p50, p90)", TIMES_DESCRIPTION))
    async def response_times(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[ResponseTimesReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.response_times_report(session, ctx)
        return _render(
            request, format, report, lambda: service.rows_csv(ResponseTimesRow, report.rows, group_by)
        )

    @get(
        "/resolution-quality",
        **_report_route("First-contact resolution and reopen rates", QUALITY_DESCRIPTION),
    )
    async def resolution_quality(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[ResolutionQualityReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.resolution_quality_report(session, ctx)
        return _render(
            request, format, report, lambda: service.rows_csv(ResolutionQualityRow, report.rows, group_by)
        )

    @get("/backlog", **_report_route("Backlog and ageing at the end of the period", BACKLOG_DESCRIPTION))
    async def backlog(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[BacklogReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.backlog_report(session, ctx)
        return _render(request, format, report, lambda: service.rows_csv(BacklogRow, report.rows, group_by))

    @get("/volume", **_report_route("Volume by priority, channel and category", VOLUME_DESCRIPTION))
    async def volume(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[VolumeReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.volume_report(session, ctx)
        return _render(request, format, report, lambda: service.rows_csv(VolumeRow, report.rows, group_by))

    @get(
        "/volume/hour-of-week",
        **_report_route("Volume by local weekday and hour (shift-change peaks)", HOURS_DESCRIPTION),
    )
    async def hour_of_week(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        tenant_id: TenantId,
        period_from: PeriodFrom = None,
        to: PeriodTo = None,
        report_scope: ScopeParam = None,
        group_by: GroupByParam = GroupBy.none,
        format: FormatParam = None,
    ) -> Response[HourOfWeekReport]:
        ctx = await _open(session, principal, tenant_id, period_from, to, report_scope, group_by)
        report = await service.hour_of_week_report(session, ctx)
        return _render(
            request, format, report, lambda: service.rows_csv(HourOfWeekRow, report.rows, group_by)
        )
