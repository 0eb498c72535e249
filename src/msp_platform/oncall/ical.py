"""iCalendar (RFC 5545) feeds of on-call shifts, for calendar subscriptions.

Feeds are re-fetched periodically by calendar clients, so everything except DTSTAMP is a pure function
of the input: event UIDs are derived from (namespace, person, start) so a shift whose end or source
changes is updated in place by clients instead of being duplicated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from icalendar import Calendar, Event
from icalendar.enums import TRANSP

from msp_platform.oncall.schedule import Shift

DEFAULT_PRODID = "-//msp-platform//oncall//EN"

# Fixed root so UIDs stay stable across deployments and releases; changing it re-keys every feed.
_UID_ROOT = uuid.uuid5(uuid.NAMESPACE_URL, "urn:msp-platform:oncall")


def _utc(dt: datetime) -> datetime:
    if dt.utcoffset() is None:
        raise ValueError(f"shift times must be timezone-aware, got naive {dt.isoformat()}")
    # iCalendar has no sub-second precision; truncating here keeps UIDs and times consistent.
    return dt.astimezone(UTC).replace(microsecond=0)


def shift_uid(uid_namespace: str, person: str, start: datetime) -> str:
    return str(uuid.uuid5(_UID_ROOT, f"{uid_namespace}\x1f{person}\x1f{_utc(start).isoformat()}"))


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """One event of a feed that mixes several schedules (a person's own calendar): each entry carries the
    UID namespace of its schedule and its own summary."""

    uid_namespace: str
    person: str
    start: datetime
    end: datetime
    summary: str
    description: str | None = None


def render_ical(
    calendar_name: str,
    shifts: Iterable[Shift],
    *,
    uid_namespace: str,
    prodid: str = DEFAULT_PRODID,
    person_names: Mapping[str, str] | None = None,
    dtstamp: datetime | None = None,
) -> bytes:
    """`uid_namespace` should identify the feed (e.g. "schedule:<id>" or "schedule:<id>:person:<id>"),
    so the same shift in two feeds a user subscribes to does not collide. `dtstamp` defaults to now;
    pass a fixed value to get byte-identical output (ETags)."""
    names = person_names or {}
    ordered = sorted(
        ((_utc(s.start), _utc(s.end), s) for s in shifts),
        key=lambda item: (item[0], item[1], item[2].person, item[2].source),
    )
    entries = [
        CalendarEntry(
            uid_namespace,
            shift.person,
            start,
            end,
            f"On call: {names.get(shift.person, shift.person)} ({shift.source})",
        )
        for start, end, shift in ordered
    ]
    return _render(calendar_name, entries, calendar_uid=uid_namespace, prodid=prodid, dtstamp=dtstamp)


def render_entries(
    calendar_name: str,
    entries: Iterable[CalendarEntry],
    *,
    calendar_uid: str,
    prodid: str = DEFAULT_PRODID,
    dtstamp: datetime | None = None,
) -> bytes:
    """A feed of entries from several schedules, in time order; each UID comes from the entry's own
    namespace, so an entry keeps its UID whatever else the feed holds."""
    ordered = sorted(
        entries, key=lambda e: (_utc(e.start), _utc(e.end), e.uid_namespace, e.person, e.summary)
    )
    return _render(calendar_name, ordered, calendar_uid=calendar_uid, prodid=prodid, dtstamp=dtstamp)


def _render(
    calendar_name: str,
    entries: Iterable[CalendarEntry],
    *,
    calendar_uid: str,
    prodid: str,
    dtstamp: datetime | None,
) -> bytes:
    stamp = _utc(dtstamp if dtstamp is not None else datetime.now(UTC))
    calendar = Calendar.new(
        name=calendar_name,
        prodid=prodid,
        method="PUBLISH",
        calscale="GREGORIAN",
        uid=uuid.uuid5(_UID_ROOT, calendar_uid),
    )
    seen: dict[str, int] = {}
    for entry in entries:
        start, end = _utc(entry.start), _utc(entry.end)
        if end <= start:
            continue
        uid = shift_uid(entry.uid_namespace, entry.person, start)
        # Only a caller mixing feeds (e.g. several layers' shifts) can repeat person+start; suffix the
        # repeats deterministically rather than emit duplicate UIDs, which clients treat as one event.
        repeat = seen.get(uid, 0)
        seen[uid] = repeat + 1
        if repeat:
            uid = f"{uid}-{repeat}"
        calendar.add_component(
            Event.new(
                uid=uid,
                stamp=stamp,
                start=start,
                end=end,
                summary=entry.summary,
                description=entry.description,
                # Being on call is not being busy; an opaque week-long event would block free/busy lookups.
                transparency=TRANSP.TRANSPARENT,
            )
        )
    feed: bytes = calendar.to_ical()  # icalendar's to_ical is untyped
    return feed
