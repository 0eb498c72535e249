"""All SQL of devices. Queries are tenant-filtered by the session; nothing here names a tenant.

Sites and users are read here only as references (by id, by site code, by email) for validation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.devices.schemas import DeviceSort
from msp_platform.kit.pagination import Ordering, SortKey, check_limit, decode_cursor, encode_cursor
from msp_platform.models.device import Device, DeviceKind, DeviceStatus
from msp_platform.models.site import Site
from msp_platform.models.user import User

# IN lists are sent in chunks: well under every backend's bound-parameter limit.
LOOKUP_CHUNK = 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCOPE = "devices"


@dataclass(frozen=True)
class _Sort:
    """An ordering plus how to read its key values off a row (for the next cursor)."""

    ordering: Ordering
    values: Callable[[Device], list[Any]]


def _nullable_sort(name: str, column: Any, blank: Any, *, descending: bool) -> _Sort:
    """Keyset order on a nullable column: rows without a value last, whatever the direction.

    The keys are (value missing?, value or ``blank``, id), all NULL-free, so cursors compare cleanly.
    """
    missing = case((column.is_(None), 1), else_=0)
    present = func.coalesce(column, literal(blank, column.type))
    ordering = Ordering(
        name,
        (
            SortKey(missing),
            SortKey(present, descending=descending),
            SortKey(Device.id, descending=descending),
        ),
    )
    attribute = column.key

    def values(device: Device) -> list[Any]:
        value = getattr(device, attribute)
        return [0 if value is not None else 1, value if value is not None else blank, device.id]

    return _Sort(ordering, values)


SORTS: dict[DeviceSort, _Sort] = {
    DeviceSort.created: _Sort(
        Ordering("created", (SortKey(Device.created_at), SortKey(Device.id))),
        lambda d: [d.created_at, d.id],
    ),
    DeviceSort.created_desc: _Sort(
        Ordering(
            "-created", (SortKey(Device.created_at, descending=True), SortKey(Device.id, descending=True))
        ),
        lambda d: [d.created_at, d.id],
    ),
    DeviceSort.hostname: _nullable_sort("hostname", Device.hostname, "", descending=False),
    DeviceSort.hostname_desc: _nullable_sort("-hostname", Device.hostname, "", descending=True),
    DeviceSort.last_seen_at: _nullable_sort("last_seen_at", Device.last_seen_at, _EPOCH, descending=False),
    DeviceSort.last_seen_at_desc: _nullable_sort(
        "-last_seen_at", Device.last_seen_at, _EPOCH, descending=True
    ),
    DeviceSort.serial: _nullable_sort("serial", Device.serial, "", descending=False),
    DeviceSort.asset_tag: _nullable_sort("asset_tag", Device.asset_tag, "", descending=False),
}


def _after(ordering: Ordering, values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in ``ordering`` (mixed directions; keys are NULL-free)."""
    clauses: list[ColumnElement[bool]] = []
    for i, key in enumerate(ordering.keys):
        equal_prefix = [ordering.keys[j].column == values[j] for j in range(i)]
        step = key.column < values[i] if key.descending else key.column > values[i]
        clauses.append(and_(*equal_prefix, step))
    return or_(*clauses)


def _like_pattern(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), LOOKUP_CHUNK):
        yield values[start : start + LOOKUP_CHUNK]


@dataclass(frozen=True)
class UserRef:
    id: uuid.UUID
    active: bool


class DeviceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, device_id: uuid.UUID) -> Device | None:
        found: Device | None = await self.session.scalar(select(Device).where(Device.id == device_id))
        return found

    async def by_serial(self, serial: str) -> Device | None:
        found: Device | None = await self.session.scalar(select(Device).where(Device.serial == serial))
        return found

    async def by_asset_tag(self, asset_tag: str) -> Device | None:
        found: Device | None = await self.session.scalar(select(Device).where(Device.asset_tag == asset_tag))
        return found

    async def by_serials(self, serials: Iterable[str]) -> dict[str, Device]:
        found: dict[str, Device] = {}
        for chunk in _chunks(sorted(set(serials))):
            for device in await self.session.scalars(select(Device).where(Device.serial.in_(chunk))):
                found[device.serial or ""] = device
        return found

    async def by_asset_tags(self, tags: Iterable[str]) -> dict[str, Device]:
        found: dict[str, Device] = {}
        for chunk in _chunks(sorted(set(tags))):
            for device in await self.session.scalars(select(Device).where(Device.asset_tag.in_(chunk))):
                found[device.asset_tag or ""] = device
        return found

    async def site_exists(self, site_id: uuid.UUID) -> bool:
        found = await self.session.scalar(select(Site.id).where(Site.id == site_id))
        return found is not None

    async def site_ids_by_code(self, codes: Iterable[str]) -> dict[str, uuid.UUID]:
        """Site code (upper-cased, as stored) -> id."""
        found: dict[str, uuid.UUID] = {}
        for chunk in _chunks(sorted({c.upper() for c in codes})):
            rows = await self.session.execute(select(Site.code, Site.id).where(Site.code.in_(chunk)))
            for code, ident in rows:
                found[code] = ident
        return found

    async def user(self, user_id: uuid.UUID) -> UserRef | None:
        row = (await self.session.execute(select(User.id, User.active).where(User.id == user_id))).first()
        return UserRef(row[0], row[1]) if row is not None else None

    async def users_by_email(self, emails: Iterable[str]) -> dict[str, UserRef]:
        """Email (lower-cased, as stored) -> user."""
        found: dict[str, UserRef] = {}
        for chunk in _chunks(sorted({e.lower() for e in emails})):
            rows = await self.session.execute(
                select(User.email, User.id, User.active).where(User.email.in_(chunk))
            )
            found.update({email: UserRef(ident, active) for email, ident, active in rows})
        return found

    async def page(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        sort: DeviceSort,
        kinds: Sequence[DeviceKind] = (),
        statuses: Sequence[DeviceStatus] = (),
        site_id: uuid.UUID | None = None,
        assigned_user_id: uuid.UUID | None = None,
        unassigned: bool | None = None,
        seen_before: datetime | None = None,
        seen_after: datetime | None = None,
        never_seen: bool | None = None,
        q: str | None = None,
        assigned_only: uuid.UUID | None = None,
    ) -> tuple[list[Device], str | None]:
        stmt: Select[Any] = select(Device)
        if assigned_only is not None:
            stmt = stmt.where(Device.assigned_user_id == assigned_only)
        if kinds:
            stmt = stmt.where(Device.kind.in_([k.value for k in kinds]))
        if statuses:
            stmt = stmt.where(Device.status.in_([s.value for s in statuses]))
        if site_id is not None:
            stmt = stmt.where(Device.site_id == site_id)
        if assigned_user_id is not None:
            stmt = stmt.where(Device.assigned_user_id == assigned_user_id)
        if unassigned is not None:
            assignee = Device.assigned_user_id
            stmt = stmt.where(assignee.is_(None) if unassigned else assignee.is_not(None))
        if seen_before is not None:
            stmt = stmt.where(Device.last_seen_at < seen_before)
        if seen_after is not None:
            stmt = stmt.where(Device.last_seen_at >= seen_after)
        if never_seen is not None:
            seen = Device.last_seen_at
            stmt = stmt.where(seen.is_(None) if never_seen else seen.is_not(None))
        if q:
            pattern = _like_pattern(q)
            stmt = stmt.where(
                or_(
                    *(
                        func.lower(column).like(pattern, escape="\\")
                        for column in (Device.hostname, Device.serial, Device.asset_tag, Device.model)
                    )
                )
            )
        chosen = SORTS[sort]
        size = check_limit(limit)
        if cursor:
            stmt = stmt.where(_after(chosen.ordering, decode_cursor(cursor, _SCOPE, chosen.ordering)))
        rows = list(
            (await self.session.scalars(stmt.order_by(*chosen.ordering.order_by()).limit(size + 1))).all()
        )
        next_cursor = None
        if len(rows) > size:
            rows = rows[:size]
            next_cursor = encode_cursor(_SCOPE, chosen.ordering, chosen.values(rows[-1]))
        return rows, next_cursor
