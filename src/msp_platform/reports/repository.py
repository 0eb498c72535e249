"""All SQL of the service reports: every figure is aggregated in the database (GROUP BY / COUNT / SUM /
percentiles); nothing here loads incidents.

Queries are tenant-filtered by the session (the report's tenants are its readable set, see
``service.open_report``), and on PostgreSQL by row-level security. The session's automatic filter only
reaches entities at the top level of a statement, so the one query that ranks rows in a subquery (SQLite
percentiles) restates the session's scope inside it.

Dialect-specific expressions: epoch seconds are ``extract(epoch ...)`` on PostgreSQL and ``julianday`` /
``strftime('%s')`` on SQLite; percentiles are ``percentile_cont`` on PostgreSQL and the same linear
interpolation over ``row_number()`` windows on SQLite (identical results).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from msp_platform.authz.types import TenantScopeError
from msp_platform.db.session import get_tenant_context
from msp_platform.models.incident import Incident, IncidentState
from msp_platform.models.site import Site
from msp_platform.models.sla import IncidentSla
from msp_platform.models.tenant import Tenant
from msp_platform.reports.schemas import GroupBy

# A group: () for group_by=none, (tenant_id,) for tenant, (tenant_id, site_id) for site.
GroupTuple = tuple[uuid.UUID | None, ...]

OPEN_STATES = (
    IncidentState.new.value,
    IncidentState.assigned.value,
    IncidentState.in_progress.value,
    IncidentState.on_hold.value,
)
RESOLVED_STATES = (IncidentState.resolved.value, IncidentState.closed.value)
CANCELLED = IncidentState.cancelled.value
SLA_TARGETS = ("response", "resolution", "update")
SLOT_SECONDS = 900  # 15 minutes: every IANA offset in use is a multiple of it
SLOTS_PER_WEEK = 7 * 24 * 4
# The Unix epoch (1970-01-01) was a Thursday: shifting by three days makes slot 0 Monday 00:00 UTC.
EPOCH_WEEK_SHIFT = 3 * 24 * 4
PERCENTILES = (0.5, 0.9)
# Backlog age buckets: (name, lower bound) — an incident falls in the last bucket whose bound its age reaches.
AGE_BUCKETS: tuple[tuple[str, timedelta], ...] = (
    ("age_lt_1d", timedelta(0)),
    ("age_1d_3d", timedelta(days=1)),
    ("age_3d_7d", timedelta(days=3)),
    ("age_7d_30d", timedelta(days=7)),
    ("age_gt_30d", timedelta(days=30)),
)


@dataclass(frozen=True)
class SlaCount:
    group: GroupTuple
    priority: int
    target: str
    measured: int
    met: int
    breached: int


@dataclass(frozen=True)
class DurationStats:
    group: GroupTuple
    priority: int | None  # None: every priority of the group
    count: int
    total_seconds: float
    p50_seconds: float | None
    p90_seconds: float | None
    first_contact: int = 0
    reopened: int = 0


@dataclass(frozen=True)
class BacklogCount:
    group: GroupTuple
    priority: int
    buckets: dict[str, int]


@dataclass(frozen=True)
class VolumeCount:
    group: GroupTuple
    priority: int
    channel: str
    category: str | None
    cancelled: bool
    count: int


@dataclass(frozen=True)
class SlotCount:
    group: GroupTuple
    timezone: str
    era: int  # index of the stretch between offset changes (see ``hour_of_week``)
    utc_slot_of_week: int  # 0 = Monday 00:00-00:15 UTC
    count: int


def _group_columns(group_by: GroupBy) -> list[Any]:
    if group_by is GroupBy.tenant:
        return [Incident.tenant_id]
    if group_by is GroupBy.site:
        return [Incident.tenant_id, Incident.site_id]
    return []


def _group_of(row: Sequence[Any], width: int) -> GroupTuple:
    return tuple(row[:width])


def _int(value: Any) -> int:
    return int(value or 0)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class ReportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    async def prepare(self) -> None:
        """Per-transaction settings for reporting queries (PostgreSQL): no JIT compilation, whose fixed cost
        (hundreds of milliseconds for these plans) exceeds what it saves on a few hundred thousand rows."""
        if self._postgres:
            await self.session.execute(text("SET LOCAL jit = off"))

    # --- tenants and sites (labels, time zones, the rollup tree) ---------------------------------------

    async def tenant_tree(self) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
        """(id, parent_id) of every tenant: the platform table, read to walk a health system's hospitals."""
        rows = await self.session.execute(select(Tenant.id, Tenant.parent_id))
        return [(r[0], r[1]) for r in rows]

    async def tenants(self, ids: Sequence[uuid.UUID]) -> list[Tenant]:
        rows = await self.session.scalars(select(Tenant).where(Tenant.id.in_(list(ids))))
        return list(rows.all())

    async def sites(self) -> list[Site]:
        return list((await self.session.scalars(select(Site))).all())

    async def site_timezones(self) -> list[str]:
        rows = await self.session.scalars(select(Site.timezone).where(Site.timezone.is_not(None)).distinct())
        return [r for r in rows.all() if r]

    # --- expressions -----------------------------------------------------------------------------------

    def _seconds(self, later: Any, earlier: Any) -> ColumnElement[float]:
        if self._postgres:
            return cast(extract("epoch", later - earlier), Float)
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0

    def _utc_slot_of_week(self, at: Any) -> ColumnElement[int]:
        if self._postgres:
            slot: ColumnElement[int] = cast(func.floor(extract("epoch", at) / SLOT_SECONDS), BigInteger)
        else:
            slot = cast(func.strftime("%s", at), Integer) // SLOT_SECONDS
        return (slot + EPOCH_WEEK_SHIFT) % SLOTS_PER_WEEK

    def _scope_filter(self) -> ColumnElement[bool]:
        ctx = get_tenant_context(self.session)
        if ctx is None:
            raise TenantScopeError("reports queried without a tenant context")
        return Incident.tenant_id.in_(list(ctx.readable))

    # --- 1. SLA compliance -----------------------------------------------------------------------------

    async def sla_counts(
        self, start: datetime, end: datetime, group_by: GroupBy, *, now: datetime
    ) -> list[SlaCount]:
        """Per group, priority and target: the SLA rows of incidents opened in [start, end), cancelled ones
        excluded. A running clock already past its due time counts as breached (its timer may not have
        fired yet)."""
        keys = _group_columns(group_by)
        met = func.sum(case((IncidentSla.status == "met", 1), else_=0))
        breached = func.sum(
            case(
                (IncidentSla.status == "breached", 1),
                (and_(IncidentSla.status == "running", IncidentSla.due_at <= now), 1),
                else_=0,
            )
        )
        stmt = (
            select(*keys, Incident.priority, IncidentSla.target, func.count(), met, breached)
            .select_from(IncidentSla)
            .join(
                Incident,
                and_(Incident.tenant_id == IncidentSla.tenant_id, Incident.id == IncidentSla.incident_id),
            )
            .where(
                Incident.opened_at >= start,
                Incident.opened_at < end,
                # The same period on the SLA rows' copy of opened_at: read by index, not every tenant row.
                IncidentSla.opened_at >= start,
                IncidentSla.opened_at < end,
                Incident.state != CANCELLED,
                IncidentSla.target.in_(SLA_TARGETS),
            )
            .group_by(*keys, Incident.priority, IncidentSla.target)
        )
        width = len(keys)
        return [
            SlaCount(
                group=_group_of(r, width),
                priority=int(r[width]),
                target=str(r[width + 1]),
                measured=_int(r[width + 2]),
                met=_int(r[width + 3]),
                breached=_int(r[width + 4]),
            )
            for r in await self.session.execute(stmt)
        ]

    # --- 2/3. response and resolution times, first-contact resolution, reopens --------------------------

    async def response_times(self, start: datetime, end: datetime, group_by: GroupBy) -> list[DurationStats]:
        """Time to first response of incidents opened in [start, end) and responded to (cancelled ones
        excluded), per group and priority and per group (``priority`` None)."""
        seconds = self._seconds(Incident.first_response_at, Incident.opened_at)
        where = [
            Incident.opened_at >= start,
            Incident.opened_at < end,
            Incident.state != CANCELLED,
            Incident.first_response_at.is_not(None),
        ]
        return await self._durations(seconds, where, group_by, quality=False)

    async def resolution_times(
        self, start: datetime, end: datetime, group_by: GroupBy
    ) -> list[DurationStats]:
        """Time to resolve, first-contact resolutions and reopened incidents, over the incidents resolved in
        [start, end) (state resolved or closed; ``resolved_at`` is the last resolution), per group and
        priority and per group (``priority`` None)."""
        seconds = self._seconds(Incident.resolved_at, Incident.opened_at)
        where = [
            Incident.resolved_at >= start,
            Incident.resolved_at < end,
            Incident.state.in_(RESOLVED_STATES),
        ]
        return await self._durations(seconds, where, group_by, quality=True)

    async def _durations(
        self,
        seconds: ColumnElement[float],
        where: list[ColumnElement[bool]],
        group_by: GroupBy,
        *,
        quality: bool,
    ) -> list[DurationStats]:
        keys = _group_columns(group_by)
        width = len(keys)
        fcr = case((Incident.first_contact_resolution.is_(True), 1), else_=0)
        reopened = case((Incident.reopen_count > 0, 1), else_=0)
        statements: list[Select[Any]] = []
        if self._postgres:
            measures: list[Any] = [
                func.count(),
                func.sum(seconds),
                *(func.percentile_cont(p).within_group(seconds) for p in PERCENTILES),
            ]
            if quality:
                measures += [func.sum(fcr), func.sum(reopened)]
            # One pass for both levels; the total rows have a null priority (never null otherwise).
            sets = func.grouping_sets(tuple_(*keys, Incident.priority), tuple_(*keys))
            statements.append(select(*keys, Incident.priority, *measures).where(*where).group_by(sets))
        else:
            statements += [
                self._ranked_durations(seconds, where, keys, fcr, reopened, by_priority=b, quality=quality)
                for b in (True, False)
            ]
        out: list[DurationStats] = []
        for stmt in statements:
            for values in await self.session.execute(stmt):
                priority, at = values[width], width + 1
                out.append(
                    DurationStats(
                        group=_group_of(values, width),
                        priority=None if priority is None else int(priority),
                        count=_int(values[at]),
                        total_seconds=float(values[at + 1] or 0),
                        p50_seconds=_float(values[at + 2]),
                        p90_seconds=_float(values[at + 3]),
                        first_contact=_int(values[at + 4]) if quality else 0,
                        reopened=_int(values[at + 5]) if quality else 0,
                    )
                )
        return out

    def _ranked_durations(
        self,
        seconds: ColumnElement[float],
        where: list[ColumnElement[bool]],
        keys: list[Any],
        fcr: ColumnElement[int],
        reopened: ColumnElement[int],
        *,
        by_priority: bool,
        quality: bool,
    ) -> Select[Any]:
        """``percentile_cont`` for SQLite: rank each group's values, then interpolate linearly between the
        two ranks around ``1 + p * (n - 1)`` (the same definition PostgreSQL uses). Columns as on
        PostgreSQL: the group, the priority (null for the group's total), the measures."""
        partition = [*keys, Incident.priority] if by_priority else keys
        ranked = (
            select(
                *(k.label(f"k{i}") for i, k in enumerate(keys)),
                Incident.priority.label("priority"),
                seconds.label("v"),
                fcr.label("fcr"),
                reopened.label("reopened"),
                func.row_number().over(partition_by=partition or None, order_by=seconds).label("rn"),
                func.count().over(partition_by=partition or None).label("n"),
            )
            .where(self._scope_filter(), *where)
            .subquery()
        )
        outer_keys = [ranked.c[f"k{i}"] for i in range(len(keys))]
        priority = ranked.c.priority if by_priority else literal(None, Integer)

        def percentile(p: float) -> ColumnElement[float]:
            position = literal(p) * (ranked.c.n - 1) + 1
            low = cast(position, Integer)  # floor: positions are positive
            fraction = position - low
            return func.sum(
                case(
                    (ranked.c.rn == low, ranked.c.v * (1 - fraction)),
                    (ranked.c.rn == low + 1, ranked.c.v * fraction),
                    else_=0.0,
                )
            )

        measures: list[Any] = [
            func.count(),
            func.sum(ranked.c.v),
            *(percentile(p) for p in PERCENTILES),
        ]
        if quality:
            measures += [func.sum(ranked.c.fcr), func.sum(ranked.c.reopened)]
        grouping = [*outer_keys, ranked.c.priority] if by_priority else outer_keys
        return select(*outer_keys, priority, *measures).group_by(*grouping)

    # --- 4. backlog and ageing -------------------------------------------------------------------------

    async def backlog(self, as_of: datetime, group_by: GroupBy) -> list[BacklogCount]:
        """Incidents open at ``as_of``, by age at ``as_of``: opened before it and neither resolved nor closed
        (or cancelled) by then. Read from the timestamps, so a past date is reconstructed; only incidents
        reopened after ``as_of`` are placed by their latest resolution. The priority is the current one."""
        keys = _group_columns(group_by)
        open_at = and_(
            Incident.opened_at < as_of,
            or_(Incident.resolved_at.is_(None), Incident.resolved_at >= as_of),
            or_(Incident.closed_at.is_(None), Incident.closed_at >= as_of),
            # Open now, or closed only after as_of (also skips finished rows that lack their timestamps).
            or_(
                Incident.state.in_(OPEN_STATES),
                Incident.resolved_at >= as_of,
                Incident.closed_at >= as_of,
            ),
        )
        bucket_sums = []
        bounds = [b for _, b in AGE_BUCKETS]
        for i, (name, lower) in enumerate(AGE_BUCKETS):
            # age >= lower  <=>  opened_at <= as_of - lower; age < upper  <=>  opened_at > as_of - upper
            conditions = [Incident.opened_at <= as_of - lower] if lower else []
            if i + 1 < len(bounds):
                conditions.append(Incident.opened_at > as_of - bounds[i + 1])
            bucket_sums.append(func.sum(case((and_(*conditions), 1), else_=0)).label(name))
        stmt = (
            select(*keys, Incident.priority, *bucket_sums).where(open_at).group_by(*keys, Incident.priority)
        )
        width = len(keys)
        return [
            BacklogCount(
                group=_group_of(r, width),
                priority=int(r[width]),
                buckets={name: _int(r[width + 1 + i]) for i, (name, _) in enumerate(AGE_BUCKETS)},
            )
            for r in await self.session.execute(stmt)
        ]

    # --- 5. volume -------------------------------------------------------------------------------------

    async def volume(self, start: datetime, end: datetime, group_by: GroupBy) -> list[VolumeCount]:
        """Incidents opened in [start, end) by priority, channel and category (one grouped pass; the totals
        per dimension are sums of these few hundred counts)."""
        keys = _group_columns(group_by)
        cancelled = case((Incident.state == CANCELLED, 1), else_=0).label("is_cancelled")
        stmt = (
            select(*keys, Incident.priority, Incident.channel, Incident.category, cancelled, func.count())
            .where(Incident.opened_at >= start, Incident.opened_at < end)
            # The flag by its output name: its CASE carries bind parameters (see ``hour_of_week``).
            .group_by(
                *keys, Incident.priority, Incident.channel, Incident.category, literal_column("is_cancelled")
            )
        )
        width = len(keys)
        return [
            VolumeCount(
                group=_group_of(r, width),
                priority=int(r[width]),
                channel=str(r[width + 1]),
                category=r[width + 2],
                cancelled=bool(r[width + 3]),
                count=_int(r[width + 4]),
            )
            for r in await self.session.execute(stmt)
        ]

    async def hour_of_week(
        self, start: datetime, end: datetime, group_by: GroupBy, eras: Sequence[datetime]
    ) -> list[SlotCount]:
        """Incidents opened in [start, end) by local time zone (the site's, else the tenant's), UTC
        15-minute slot of the week and era: ``eras`` are the instants where any of those zones changes its
        UTC offset, so within one era every zone has one offset and the service maps each (zone, era, slot)
        to the local weekday and hour exactly (DST, 30/45-minute offsets), the same on every database."""
        keys = _group_columns(group_by)
        zone = func.coalesce(Site.timezone, Tenant.timezone).label("local_tz")
        era: ColumnElement[int] = (
            case(*((Incident.opened_at < at, i) for i, at in enumerate(eras)), else_=len(eras))
            if eras
            else literal(0)
        )
        slot = self._utc_slot_of_week(Incident.opened_at).label("utc_slot")
        stmt = (
            select(*keys, zone, era.label("era"), slot, func.count())
            .select_from(Incident)
            .outerjoin(Site, and_(Site.tenant_id == Incident.tenant_id, Site.id == Incident.site_id))
            .join(Tenant, Tenant.id == Incident.tenant_id)
            .where(Incident.opened_at >= start, Incident.opened_at < end)
            # By output name: the CASE and the slot arithmetic carry bind parameters, which PostgreSQL
            # would not match between the select list and a repeated GROUP BY expression.
            .group_by(*keys, literal_column("local_tz"), literal_column("era"), literal_column("utc_slot"))
        )
        width = len(keys)
        return [
            SlotCount(
                group=_group_of(r, width),
                timezone=str(r[width]),
                era=int(r[width + 1]),
                utc_slot_of_week=int(r[width + 2]),
                count=_int(r[width + 3]),
            )
            for r in await self.session.execute(stmt)
        ]
