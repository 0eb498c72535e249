"""Service reports over a period [from, to): SLA compliance, response and resolution times, first-contact
resolution and reopens, backlog ageing, and volume (by priority, channel, category and local hour of week).

Which incidents count (also in the endpoints' OpenAPI description):

- **Volume**: incidents *opened* in the period, every state (cancelled ones and merged duplicates are
  counted, and shown separately as ``cancelled``).
- **SLA compliance**: the response, resolution and update-cadence targets of incidents *opened* in the
  period, cancelled ones excluded (``update``: met when no public update was missed, breached when one was). ``met`` / ``breached`` as stored by the SLA engine; a running clock already past its due
  time counts as breached; ``pending`` are clocks still running or paused. Compliance = met / (met +
  breached), pending excluded; null when nothing was decided.
- **MTTA**: mean (and p50/p90) of ``first_response_at - opened_at`` over incidents *opened* in the period
  that have a first response (cancelled ones excluded).
- **MTTR, first-contact resolution, reopen rate**: over incidents *resolved* in the period (``resolved_at``
  in the period, state resolved or closed). MTTR is wall-clock ``resolved_at - opened_at`` (pauses and
  time spent reopened included); FCR = incidents flagged first-contact-resolved / resolved; reopen rate =
  incidents reopened at least once / resolved.
- **Backlog**: incidents open at the end of the period (or now, if the period has not ended), aged at that
  instant: <1 d, 1-3 d, 3-7 d, 7-30 d, >=30 d. Reconstructed from the timestamps (opened before, not
  resolved/closed/cancelled by then); the priority is the current one.
- **Hour of week**: incidents opened in the period by local weekday and hour, in the time zone of the
  incident's site, else its tenant's.

Percentiles are ``percentile_cont`` (linear interpolation) on both databases.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.principal import Principal
from msp_platform.authz.service import staff_tenants
from msp_platform.authz.types import AccessibleTenantId, TenantContext
from msp_platform.db.session import set_tenant_context
from msp_platform.kit.errors import FieldError, NotFound, ValidationFailed
from msp_platform.kit.params import EARLIEST, LATEST
from msp_platform.kit.time import utcnow
from msp_platform.models.incident import Channel
from msp_platform.models.site import Site
from msp_platform.models.tenant import Tenant
from msp_platform.reports.repository import (
    AGE_BUCKETS,
    SLA_TARGETS,
    SLOT_SECONDS,
    SLOTS_PER_WEEK,
    DurationStats,
    GroupTuple,
    ReportRepository,
)
from msp_platform.reports.schemas import (
    BacklogReport,
    BacklogRow,
    GroupBy,
    GroupKey,
    HourOfWeekReport,
    HourOfWeekRow,
    ReportScope,
    ResolutionQualityReport,
    ResolutionQualityRow,
    ResponseTimesReport,
    ResponseTimesRow,
    ServiceReport,
    SlaComplianceReport,
    SlaComplianceRow,
    TenantRef,
    VolumeReport,
    VolumeRow,
)

MAX_PERIOD_DAYS = 400
PRIORITIES = (1, 2, 3, 4, 5)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SLOTS_PER_DAY = 24 * 4
SLOTS_PER_HOUR = 4
R = TypeVar("R", bound=msgspec.Struct)


# --- the period ------------------------------------------------------------------------------------------


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_instant(raw: str, zone: ZoneInfo) -> datetime | None:
    """ISO 8601: an instant with an offset (or Z) as given; a date, or a time without offset, in ``zone``.
    None when it is not one, or lies outside the years 1900..9000 (kit.params)."""
    text = raw.strip()
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), time(0), tzinfo=zone)
        else:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=zone)
        if not EARLIEST <= parsed <= LATEST:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_period(raw_from: str | None, raw_to: str | None, zone: ZoneInfo) -> tuple[datetime, datetime]:
    errors: list[FieldError] = []
    expected = "an ISO 8601 date (2025-01-31) or date-time (2025-01-31T00:00:00Z) between 1900 and 9000"
    bounds: dict[str, datetime | None] = {}
    for name, raw in (("from", raw_from), ("to", raw_to)):
        bounds[name] = None if raw is None else parse_instant(raw, zone)
        if raw is None:
            errors.append(FieldError(name, f"is required: {expected}"))
        elif bounds[name] is None:
            errors.append(FieldError(name, f"{raw!r} is not {expected}"))
    start, end = bounds["from"], bounds["to"]
    if start is not None and end is not None:
        if end <= start:
            errors.append(FieldError("to", "must be after from"))
        elif end - start > timedelta(days=MAX_PERIOD_DAYS):
            errors.append(FieldError("to", f"the period may span at most {MAX_PERIOD_DAYS} days"))
    if errors:
        raise ValidationFailed("The report period is invalid.", errors=errors)
    assert start is not None
    assert end is not None
    return start, end


def parse_scope(raw: str | None) -> ReportScope:
    try:
        return ReportScope(raw or ReportScope.tenant.value)
    except ValueError:
        raise ValidationFailed(
            "The report scope is invalid.",
            errors=[FieldError("scope", f"{raw!r} is not one of: {', '.join(s.value for s in ReportScope)}")],
        ) from None


# --- who and what a report covers --------------------------------------------------------------------


@dataclass
class ReportContext:
    acting: Tenant
    tenants: list[Tenant]
    scope: ReportScope
    group_by: GroupBy
    start: datetime
    end: datetime
    now: datetime
    sites: dict[uuid.UUID, Site] = field(default_factory=dict)
    by_id: dict[uuid.UUID, Tenant] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {t.id: t for t in self.tenants}

    @property
    def backlog_as_of(self) -> datetime:
        return min(self.end, self.now)

    def header(self, report: str) -> dict[str, Any]:
        return {
            "report": report,
            "period_from": self.start,
            "period_to": self.end,
            "generated_at": self.now,
            "scope": self.scope,
            "group_by": self.group_by,
            "timezone": self.acting.timezone,
            "tenants": [
                TenantRef(id=t.id, slug=t.slug, name=t.name, timezone=t.timezone, parent_id=t.parent_id)
                for t in self.tenants
            ],
        }

    def group_key(self, group: GroupTuple) -> GroupKey | None:
        if not group:
            return None
        tenant_id = group[0]
        assert tenant_id is not None
        tenant = self.by_id.get(tenant_id)
        slug = tenant.slug if tenant else str(tenant_id)
        site_id = group[1] if len(group) > 1 else None
        if site_id is None:
            return GroupKey(tenant_id=tenant_id, tenant_slug=slug)
        site = self.sites.get(site_id)
        return GroupKey(
            tenant_id=tenant_id,
            tenant_slug=slug,
            site_id=site_id,
            site_code=site.code if site else None,
            site_name=site.name if site else None,
        )

    def group_order(self, group: GroupTuple) -> tuple[str, int, str]:
        key = self.group_key(group)
        if key is None:
            return ("", 0, "")
        return (key.tenant_slug, 1 if key.site_id is None else 0, key.site_code or "")

    def groups(self, seen: Iterable[GroupTuple]) -> list[GroupTuple]:
        """The groups to report: those with data, ordered by tenant slug and site code (no site last);
        group_by=none always has its one group."""
        found = set(seen)
        if self.group_by is GroupBy.none:
            found.add(())
        return sorted(found, key=self.group_order)


async def _report_tenant_ids(
    session: AsyncSession, principal: Principal, acting: uuid.UUID, scope: ReportScope
) -> frozenset[uuid.UUID]:
    """The acting tenant, and for a rollup its descendants the caller may read: staff through their grants
    (as for MSP-Tenant); tenant users and clients are bound to their own tenant, so theirs is that alone."""
    if scope is ReportScope.tenant:
        return frozenset({acting})
    if principal.tenant_id is not None:
        readable: frozenset[uuid.UUID] = frozenset({principal.tenant_id})
    elif principal.is_staff:
        readable = await staff_tenants(session, principal)
    else:
        readable = frozenset()
    children: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for tenant_id, parent_id in await ReportRepository(session).tenant_tree():
        if parent_id is not None:
            children[parent_id].append(tenant_id)
    result: set[uuid.UUID] = {acting}
    seen: set[uuid.UUID] = {acting}
    stack = list(children.get(acting, ()))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in readable:
            result.add(current)
        # Walk on below a tenant the caller cannot read: a grant may cover a grandchild only.
        stack.extend(children.get(current, ()))
    return frozenset(result)


async def open_report(
    session: AsyncSession,
    principal: Principal,
    tenant_id: AccessibleTenantId,
    *,
    raw_scope: str | None,
    group_by: GroupBy,
    raw_from: str | None,
    raw_to: str | None,
) -> ReportContext:
    """Check the period, work out the tenants the report covers and bind the session to read exactly them."""
    repo = ReportRepository(session)
    found = await repo.tenants([tenant_id])
    if not found:
        raise NotFound(f"Tenant {tenant_id} not found.")
    acting = found[0]
    scope = parse_scope(raw_scope)
    start, end = parse_period(raw_from, raw_to, _zone(acting.timezone))
    ids = await _report_tenant_ids(session, principal, acting.id, scope)
    # Every id is the acting tenant (checked by authz for this request) or one authz lists for the caller.
    readable = frozenset(AccessibleTenantId(t) for t in ids)
    await set_tenant_context(session, TenantContext(tenant_id=tenant_id, readable=readable))
    await repo.prepare()
    tenants = sorted(await repo.tenants(sorted(ids)), key=lambda t: (t.id != acting.id, t.slug))
    ctx = ReportContext(
        acting=acting,
        tenants=tenants,
        scope=scope,
        group_by=group_by,
        start=start,
        end=end,
        now=utcnow(),
    )
    if group_by is GroupBy.site:
        ctx.sites = {s.id: s for s in await repo.sites()}
    return ctx


# --- 1. SLA compliance ---------------------------------------------------------------------------------


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


async def sla_compliance(session: AsyncSession, ctx: ReportContext) -> list[SlaComplianceRow]:
    counts = await ReportRepository(session).sla_counts(ctx.start, ctx.end, ctx.group_by, now=ctx.now)
    table: dict[tuple[GroupTuple, int, str], tuple[int, int, int]] = {
        (c.group, c.priority, c.target): (c.measured, c.met, c.breached) for c in counts
    }
    rows: list[SlaComplianceRow] = []
    for group in ctx.groups(c.group for c in counts):
        key = ctx.group_key(group)
        totals: dict[str, list[int]] = {t: [0, 0, 0] for t in SLA_TARGETS}
        for priority in PRIORITIES:
            for target in SLA_TARGETS:
                measured, met, breached = table.get((group, priority, target), (0, 0, 0))
                rows.append(_sla_row(key, priority, target, measured, met, breached))
                for i, value in enumerate((measured, met, breached)):
                    totals[target][i] += value
        for target in SLA_TARGETS:
            rows.append(_sla_row(key, None, target, *totals[target]))
    return rows


def _sla_row(
    key: GroupKey | None, priority: int | None, target: str, measured: int, met: int, breached: int
) -> SlaComplianceRow:
    return SlaComplianceRow(
        group=key,
        priority=priority,
        target="response" if target == "response" else "update" if target == "update" else "resolution",
        measured=measured,
        met=met,
        breached=breached,
        pending=measured - met - breached,
        compliance_percent=_percent(met, met + breached),
    )


# --- 2/3. times, first-contact resolution, reopens --------------------------------------------------------


@dataclass
class _Times:
    responded: dict[tuple[GroupTuple, int | None], DurationStats]
    resolved: dict[tuple[GroupTuple, int | None], DurationStats]


async def _times(session: AsyncSession, ctx: ReportContext) -> _Times:
    repo = ReportRepository(session)
    responded = await repo.response_times(ctx.start, ctx.end, ctx.group_by)
    resolved = await repo.resolution_times(ctx.start, ctx.end, ctx.group_by)
    return _Times({(s.group, s.priority): s for s in responded}, {(s.group, s.priority): s for s in resolved})


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _mean(stats: DurationStats | None) -> float | None:
    return _seconds(stats.total_seconds / stats.count) if stats and stats.count else None


def _response_rows(ctx: ReportContext, times: _Times) -> list[ResponseTimesRow]:
    rows: list[ResponseTimesRow] = []
    seen = [g for g, _ in times.responded] + [g for g, _ in times.resolved]
    for group in ctx.groups(seen):
        key = ctx.group_key(group)
        for priority in (*PRIORITIES, None):
            a = times.responded.get((group, priority))
            r = times.resolved.get((group, priority))
            rows.append(
                ResponseTimesRow(
                    group=key,
                    priority=priority,
                    responded=a.count if a else 0,
                    mtta_mean_seconds=_mean(a),
                    mtta_p50_seconds=_seconds(a.p50_seconds) if a else None,
                    mtta_p90_seconds=_seconds(a.p90_seconds) if a else None,
                    resolved=r.count if r else 0,
                    mttr_mean_seconds=_mean(r),
                    mttr_p50_seconds=_seconds(r.p50_seconds) if r else None,
                    mttr_p90_seconds=_seconds(r.p90_seconds) if r else None,
                )
            )
    return rows


def _quality_rows(ctx: ReportContext, times: _Times) -> list[ResolutionQualityRow]:
    rows: list[ResolutionQualityRow] = []
    for group in ctx.groups(g for g, _ in times.resolved):
        key = ctx.group_key(group)
        for priority in (*PRIORITIES, None):
            r = times.resolved.get((group, priority))
            resolved = r.count if r else 0
            fcr = r.first_contact if r else 0
            reopened = r.reopened if r else 0
            rows.append(
                ResolutionQualityRow(
                    group=key,
                    priority=priority,
                    resolved=resolved,
                    first_contact_resolved=fcr,
                    fcr_percent=_percent(fcr, resolved),
                    reopened=reopened,
                    reopen_percent=_percent(reopened, resolved),
                )
            )
    return rows


async def response_times(session: AsyncSession, ctx: ReportContext) -> list[ResponseTimesRow]:
    return _response_rows(ctx, await _times(session, ctx))


async def resolution_quality(session: AsyncSession, ctx: ReportContext) -> list[ResolutionQualityRow]:
    resolved = await ReportRepository(session).resolution_times(ctx.start, ctx.end, ctx.group_by)
    return _quality_rows(ctx, _Times({}, {(s.group, s.priority): s for s in resolved}))


# --- 4. backlog ---------------------------------------------------------------------------------------


async def backlog(session: AsyncSession, ctx: ReportContext) -> list[BacklogRow]:
    counts = await ReportRepository(session).backlog(ctx.backlog_as_of, ctx.group_by)
    table = {(c.group, c.priority): c.buckets for c in counts}
    names = [name for name, _ in AGE_BUCKETS]
    rows: list[BacklogRow] = []
    for group in ctx.groups(c.group for c in counts):
        key = ctx.group_key(group)
        total = dict.fromkeys(names, 0)
        for priority in PRIORITIES:
            buckets = table.get((group, priority), dict.fromkeys(names, 0))
            for name in names:
                total[name] += buckets[name]
            rows.append(_backlog_row(key, priority, buckets))
        rows.append(_backlog_row(key, None, total))
    return rows


def _backlog_row(key: GroupKey | None, priority: int | None, buckets: dict[str, int]) -> BacklogRow:
    return BacklogRow(group=key, priority=priority, open=sum(buckets.values()), **buckets)


# --- 5. volume ----------------------------------------------------------------------------------------


VolumeDimension = Literal["all", "priority", "channel", "category"]


async def volume(session: AsyncSession, ctx: ReportContext) -> list[VolumeRow]:
    counts = await ReportRepository(session).volume(ctx.start, ctx.end, ctx.group_by)
    # (group, dimension, value) -> [opened, of which cancelled]: one pass over the grouped counts.
    sums: dict[tuple[GroupTuple, str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for c in counts:
        for dimension, value in (
            ("all", None),
            ("priority", str(c.priority)),
            ("channel", c.channel),
            ("category", c.category),
        ):
            cell = sums[(c.group, dimension, value)]
            cell[0] += c.count
            cell[1] += c.count if c.cancelled else 0
    known_channels = [ch.value for ch in Channel]
    rows: list[VolumeRow] = []
    for group in ctx.groups({c.group for c in counts}):
        key = ctx.group_key(group)
        total = sums[(group, "all", None)][0]
        seen_channels = {v for g, d, v in sums if g == group and d == "channel" and v is not None}
        categories = {v for g, d, v in sums if g == group and d == "category"}
        lines: list[tuple[VolumeDimension, str | None]] = [
            ("all", None),
            *(("priority", str(p)) for p in PRIORITIES),
            *(("channel", ch) for ch in known_channels + sorted(seen_channels - set(known_channels))),
            *(("category", cat) for cat in sorted(categories, key=lambda v: (v is None, v or ""))),
        ]
        for dimension, value in lines:
            opened, cancelled = sums.get((group, dimension, value), (0, 0))
            rows.append(
                VolumeRow(
                    group=key,
                    dimension=dimension,
                    value=value,
                    opened=opened,
                    cancelled=cancelled,
                    percent=_percent(opened, total),
                )
            )
    return rows


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def offset_changes(zones: Iterable[ZoneInfo], start: datetime, end: datetime) -> list[datetime]:
    """Every 15-minute slot start in (start, end) where one of the zones changes its UTC offset."""
    first = datetime.fromtimestamp(start.timestamp() // SLOT_SECONDS * SLOT_SECONDS, UTC)
    changes: set[datetime] = set()
    for zone in zones:
        day = first
        while day < end:
            following = min(day + timedelta(days=1), end)
            if _offset(zone, day) != _offset(zone, following):
                # Zones change at most once a day: find the slot within that day.
                changes |= _changes_within(zone, day, following)
            day = following
    return sorted(c for c in changes if start < c < end)


def _changes_within(zone: ZoneInfo, low: datetime, high: datetime) -> set[datetime]:
    found: set[datetime] = set()
    step = timedelta(seconds=SLOT_SECONDS)
    at = low
    previous = _offset(zone, at)
    while at < high:
        at += step
        current = _offset(zone, at)
        if current != previous:
            found.add(at)
            previous = current
    return found


async def hour_of_week(session: AsyncSession, ctx: ReportContext) -> tuple[list[str], list[HourOfWeekRow]]:
    repo = ReportRepository(session)
    zone_names = sorted({t.timezone for t in ctx.tenants} | set(await repo.site_timezones()))
    zones = {name: _zone(name) for name in zone_names}
    eras = offset_changes(zones.values(), ctx.start, ctx.end)
    era_starts = [ctx.start, *eras]
    counts = await repo.hour_of_week(ctx.start, ctx.end, ctx.group_by, eras)
    grid: dict[GroupTuple, list[int]] = defaultdict(lambda: [0] * (7 * 24))
    used: set[str] = set()
    for c in counts:
        zone = zones.get(c.timezone) or _zone(c.timezone)
        used.add(c.timezone)
        offset = _offset(zone, era_starts[c.era])
        local_slot = (c.utc_slot_of_week + int(offset.total_seconds()) // SLOT_SECONDS) % SLOTS_PER_WEEK
        weekday, slot_of_day = divmod(local_slot, SLOTS_PER_DAY)
        grid[c.group][weekday * 24 + slot_of_day // SLOTS_PER_HOUR] += c.count
    rows: list[HourOfWeekRow] = []
    for group in ctx.groups(grid):
        key = ctx.group_key(group)
        cells = grid[group]
        rows += [
            HourOfWeekRow(group=key, weekday=d, weekday_name=WEEKDAYS[d], hour=h, opened=cells[d * 24 + h])
            for d in range(7)
            for h in range(24)
        ]
    return sorted(used) or [ctx.acting.timezone], rows


# --- the reports ----------------------------------------------------------------------------------------


async def sla_compliance_report(session: AsyncSession, ctx: ReportContext) -> SlaComplianceReport:
    return SlaComplianceReport(**ctx.header("sla_compliance"), rows=await sla_compliance(session, ctx))


async def response_times_report(session: AsyncSession, ctx: ReportContext) -> ResponseTimesReport:
    return ResponseTimesReport(**ctx.header("response_times"), rows=await response_times(session, ctx))


async def resolution_quality_report(session: AsyncSession, ctx: ReportContext) -> ResolutionQualityReport:
    return ResolutionQualityReport(
        **ctx.header("resolution_quality"), rows=await resolution_quality(session, ctx)
    )


async def backlog_report(session: AsyncSession, ctx: ReportContext) -> BacklogReport:
    return BacklogReport(**ctx.header("backlog"), as_of=ctx.backlog_as_of, rows=await backlog(session, ctx))


async def volume_report(session: AsyncSession, ctx: ReportContext) -> VolumeReport:
    return VolumeReport(**ctx.header("volume"), rows=await volume(session, ctx))


async def hour_of_week_report(session: AsyncSession, ctx: ReportContext) -> HourOfWeekReport:
    timezones, rows = await hour_of_week(session, ctx)
    return HourOfWeekReport(**ctx.header("volume_by_hour_of_week"), timezones=timezones, rows=rows)


async def service_report(session: AsyncSession, ctx: ReportContext) -> ServiceReport:
    times = await _times(session, ctx)
    timezones, by_hour = await hour_of_week(session, ctx)
    return ServiceReport(
        **ctx.header("service"),
        backlog_as_of=ctx.backlog_as_of,
        timezones=timezones,
        sla_compliance=await sla_compliance(session, ctx),
        response_times=_response_rows(ctx, times),
        resolution_quality=_quality_rows(ctx, times),
        backlog=await backlog(session, ctx),
        volume=await volume(session, ctx),
        volume_by_hour_of_week=by_hour,
    )


# --- CSV ----------------------------------------------------------------------------------------------

GROUP_COLUMNS: dict[GroupBy, tuple[str, ...]] = {
    GroupBy.none: (),
    GroupBy.tenant: ("tenant_id", "tenant_slug"),
    GroupBy.site: ("tenant_id", "tenant_slug", "site_id", "site_code", "site_name"),
}
# The combined report as one long table: a row per figure, with the dimensions that apply to it.
LONG_DIMENSIONS = ("priority", "target", "dimension", "dimension_value", "weekday", "hour")
SECTION_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "sla_compliance": ("priority", "target"),
    "response_times": ("priority",),
    "resolution_quality": ("priority",),
    "backlog": ("priority",),
    "volume": ("dimension", "value"),
    "volume_by_hour_of_week": ("weekday", "hour", "weekday_name"),
}


# A text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    # Text (a category, a site name) is data, never a formula: prefix it with a quote, as OWASP advises.
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _flat(row: msgspec.Struct, group_by: GroupBy) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(row)
    group = data.pop("group", None) or {}
    return {**{c: group.get(c) for c in GROUP_COLUMNS[group_by]}, **data}


def _write(header: Sequence[str], lines: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for line in lines:
        writer.writerow([_cell(v) for v in line])
    return buffer.getvalue().encode()


def rows_csv(row_type: type[R], rows: Sequence[R], group_by: GroupBy) -> bytes:
    """One line per row; the group's columns first (none for group_by=none)."""
    names = [f.encode_name for f in msgspec.structs.fields(row_type) if f.name != "group"]
    header = [*GROUP_COLUMNS[group_by], *names]
    return _write(header, ([_flat(r, group_by).get(c) for c in header] for r in rows))


def service_csv(report: ServiceReport) -> bytes:
    """The combined report in long form: section, group, the dimensions that apply, metric, value."""
    group_columns = GROUP_COLUMNS[report.group_by]
    header = ["section", *group_columns, *LONG_DIMENSIONS, "metric", "value"]
    lines: list[list[Any]] = []
    sections: dict[str, Sequence[msgspec.Struct]] = {
        "sla_compliance": report.sla_compliance,
        "response_times": report.response_times,
        "resolution_quality": report.resolution_quality,
        "backlog": report.backlog,
        "volume": report.volume,
        "volume_by_hour_of_week": report.volume_by_hour_of_week,
    }
    for section, rows in sections.items():
        dims = SECTION_DIMENSIONS[section]
        for row in rows:
            flat = _flat(row, report.group_by)
            where = {d: flat.pop(d) for d in dims}
            if "value" in where:
                where["dimension_value"] = where.pop("value")
            where.pop("weekday_name", None)
            group = [flat.pop(c) for c in group_columns]
            for metric, value in flat.items():
                lines.append([section, *group, *(where.get(d) for d in LONG_DIMENSIONS), metric, value])
    return _write(header, lines)
