"""On-call schedule computation: layers, restrictions and overrides -> who is on call when.

Pure functions, no I/O. Conventions (the API and UI rely on them):

* Every interval is half-open ``[start, end)``; every datetime returned is aware and in UTC.
  Inputs must be aware (any zone); naive datetimes are rejected by validation.
* Day/week turns hand off at the same *local wall-clock* time in the layer's zone, so a weekly turn
  spanning a DST change lasts 167 or 169 real hours. Hour turns are real elapsed hours.
* Local times that do not exist (inside a spring-forward gap) resolve to the instant the clocks jump,
  e.g. a 02:30 handoff on the US spring-forward day happens at 03:00 EDT. Local times that occur twice
  (fall-back) resolve to the first occurrence. Both rules keep local->UTC resolution monotonic, so turns
  and restriction windows never come out reversed. Restriction window edges follow the same rules.
* Restrictions mask a layer; they never change whose turn it is.
* Precedence, top to bottom: overrides (the last created wins where overrides of different people
  overlap), then layers from the last in the sequence down to the first.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TurnUnit = Literal["hours", "days", "weeks"]
RestrictionKind = Literal["daily", "weekly"]

OVERRIDE_SOURCE = "override"
TURN_UNITS: tuple[TurnUnit, ...] = ("hours", "days", "weeks")
RESTRICTION_KINDS: tuple[RestrictionKind, ...] = ("daily", "weekly")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)


class FieldError(TypedDict):
    field: str
    message: str


class ScheduleError(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True, slots=True)
class TurnLength:
    count: int
    unit: TurnUnit


@dataclass(frozen=True, slots=True)
class Restriction:
    """A window in the layer's local time during which the layer is active.

    ``daily``: every day from ``start_time`` to ``end_time``; ``end_time <= start_time`` means the window
    runs overnight into the next day. ``weekly``: from ``start_weekday``/``start_time`` to
    ``end_weekday``/``end_time`` (weekdays 0 = Monday .. 6 = Sunday, as ``datetime.weekday()``), wrapping
    into the next week when the end is not after the start.
    """

    kind: RestrictionKind
    start_time: time
    end_time: time
    start_weekday: int | None = None
    end_weekday: int | None = None

    @classmethod
    def daily(cls, start_time: time, end_time: time) -> Restriction:
        return cls("daily", start_time, end_time)

    @classmethod
    def weekly(cls, start_weekday: int, start_time: time, end_weekday: int, end_time: time) -> Restriction:
        return cls("weekly", start_time, end_time, start_weekday, end_weekday)


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    participants: tuple[str, ...]
    # The first handoff; the wall-clock time of day of `start` in `timezone` is the handoff time of
    # every later day/week turn.
    start: datetime
    turn_length: TurnLength
    timezone: str
    restrictions: tuple[Restriction, ...] = ()
    end: datetime | None = None


Rotation = Layer


@dataclass(frozen=True, slots=True)
class Override:
    person: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Shift:
    start: datetime
    end: datetime
    person: str
    source: str  # layer name, or OVERRIDE_SOURCE


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class RenderedLayer:
    name: str
    shifts: tuple[Shift, ...]  # the layer on its own: turns masked by restrictions, before precedence


@dataclass(frozen=True, slots=True)
class FinalSchedule:
    start: datetime
    end: datetime
    shifts: tuple[Shift, ...]
    rendered_layers: tuple[RenderedLayer, ...]
    # Overrides as they apply within the window, after "last created wins" between different people.
    rendered_overrides: tuple[Shift, ...]


# --------------------------------------------------------------------------------------------------
# Validation


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_time(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second or t.microsecond else "%H:%M")


def _load_zone(key: object) -> ZoneInfo | None:
    # "localtime" would silently follow the server's configuration, which is never what a tenant meant.
    if not isinstance(key, str) or key == "localtime":
        return None
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _is_aware(dt: object) -> bool:
    return isinstance(dt, datetime) and dt.utcoffset() is not None


def _check_time(value: object, field: str, label: str, errors: list[FieldError]) -> bool:
    if not isinstance(value, time) or value.tzinfo is not None:
        errors.append(
            {
                "field": field,
                "message": f"{label} must be a time of day such as 18:00, without a time zone "
                "(the layer's time zone applies).",
            }
        )
        return False
    return True


def _check_weekday(value: object, field: str, label: str, errors: list[FieldError]) -> bool:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 6:
        errors.append(
            {
                "field": field,
                "message": f"{label} must be a weekday from 0 (Monday) to 6 (Sunday), got {value!r}.",
            }
        )
        return False
    return True


def _restriction_errors(r: Restriction, prefix: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if r.kind not in RESTRICTION_KINDS:
        errors.append(
            {
                "field": f"{prefix}.kind",
                "message": f"Restriction kind must be 'daily' or 'weekly', got {r.kind!r}.",
            }
        )
        return errors
    times_ok = _check_time(r.start_time, f"{prefix}.start_time", "Restriction start time", errors)
    times_ok &= _check_time(r.end_time, f"{prefix}.end_time", "Restriction end time", errors)
    if r.kind == "daily":
        for attr in ("start_weekday", "end_weekday"):
            if getattr(r, attr) is not None:
                errors.append(
                    {
                        "field": f"{prefix}.{attr}",
                        "message": "A daily restriction applies to every day; use a weekly restriction "
                        "to limit it to certain weekdays.",
                    }
                )
        if times_ok and r.start_time == r.end_time:
            errors.append(
                {
                    "field": prefix,
                    "message": f"Restriction starts and ends at {_fmt_time(r.start_time)}, "
                    "so it has no length. "
                    "Remove the restriction if the layer should always be active.",
                }
            )
        return errors
    days_ok = _check_weekday(r.start_weekday, f"{prefix}.start_weekday", "Restriction start day", errors)
    days_ok &= _check_weekday(r.end_weekday, f"{prefix}.end_weekday", "Restriction end day", errors)
    if times_ok and days_ok and r.start_weekday == r.end_weekday and r.start_time == r.end_time:
        assert r.start_weekday is not None
        errors.append(
            {
                "field": prefix,
                "message": f"Restriction starts and ends on {WEEKDAY_NAMES[r.start_weekday]} at "
                f"{_fmt_time(r.start_time)}, so it has no length. "
                "Remove the restriction if the layer should always be active.",
            }
        )
    return errors


def _layer_errors(layers: Sequence[Layer]) -> list[FieldError]:
    errors: list[FieldError] = []
    seen_names: set[str] = set()
    for i, layer in enumerate(layers):
        p = f"layers[{i}]"
        label = (
            f"Layer '{layer.name}'"
            if isinstance(layer.name, str) and layer.name.strip()
            else f"Layer {i + 1}"
        )
        if not isinstance(layer.name, str) or not layer.name.strip():
            errors.append({"field": f"{p}.name", "message": "Layer name must not be empty."})
        elif layer.name in seen_names:
            # Shifts point back to their layer by name, so names must be unambiguous.
            errors.append(
                {
                    "field": f"{p}.name",
                    "message": f"{label}: another layer already uses this name; names must be unique.",
                }
            )
        elif layer.name == OVERRIDE_SOURCE:
            errors.append(
                {
                    "field": f"{p}.name",
                    "message": f"'{OVERRIDE_SOURCE}' is reserved for overrides; choose another layer name.",
                }
            )
        else:
            seen_names.add(layer.name)

        if not layer.participants:
            errors.append(
                {
                    "field": f"{p}.participants",
                    "message": f"{label} has no participants; add at least one person.",
                }
            )
        elif any(not isinstance(x, str) or not x for x in layer.participants):
            errors.append({"field": f"{p}.participants", "message": f"{label} has an empty participant id."})

        tl = layer.turn_length
        if isinstance(tl.count, bool) or not isinstance(tl.count, int) or tl.count <= 0:
            errors.append(
                {
                    "field": f"{p}.turn_length.count",
                    "message": f"{label}: turn length must be a whole number greater than zero, "
                    f"got {tl.count!r}.",
                }
            )
        if tl.unit not in TURN_UNITS:
            errors.append(
                {
                    "field": f"{p}.turn_length.unit",
                    "message": f"{label}: turn length unit must be one of hours, days or weeks, "
                    f"got {tl.unit!r}.",
                }
            )

        if _load_zone(layer.timezone) is None:
            errors.append(
                {
                    "field": f"{p}.timezone",
                    "message": f"{label}: unknown time zone {layer.timezone!r}; "
                    "use an IANA name such as 'Europe/London'.",
                }
            )

        start_ok = _is_aware(layer.start)
        if not start_ok:
            errors.append(
                {
                    "field": f"{p}.start",
                    "message": f"{label}: start must be a date and time with a UTC offset.",
                }
            )
        if layer.end is not None:
            if not _is_aware(layer.end):
                errors.append(
                    {
                        "field": f"{p}.end",
                        "message": f"{label}: end must be a date and time with a UTC offset.",
                    }
                )
            elif start_ok and layer.end <= layer.start:
                errors.append(
                    {
                        "field": f"{p}.end",
                        "message": f"{label}: end ({_fmt(layer.end)}) must be after "
                        f"the start ({_fmt(layer.start)}).",
                    }
                )

        for j, r in enumerate(layer.restrictions):
            errors.extend(_restriction_errors(r, f"{p}.restrictions[{j}]"))
    return errors


def _override_errors(overrides: Sequence[Override]) -> list[FieldError]:
    errors: list[FieldError] = []
    by_person: dict[str, list[int]] = {}
    for i, o in enumerate(overrides):
        p = f"overrides[{i}]"
        ok = True
        if not isinstance(o.person, str) or not o.person:
            errors.append({"field": f"{p}.person", "message": "An override needs the person who covers it."})
            ok = False
        for attr in ("start", "end"):
            if not _is_aware(getattr(o, attr)):
                errors.append(
                    {
                        "field": f"{p}.{attr}",
                        "message": f"Override {attr} must be a date and time with a UTC offset.",
                    }
                )
                ok = False
        if ok and o.end <= o.start:
            errors.append(
                {
                    "field": f"{p}.end",
                    "message": f"Override end ({_fmt(o.end)}) must be after its start ({_fmt(o.start)}).",
                }
            )
            ok = False
        if ok:
            by_person.setdefault(o.person, []).append(i)

    for person, indexes in by_person.items():
        indexes.sort(key=lambda k: (overrides[k].start, k))
        # Compare with the furthest-reaching earlier override, not just the previous one, so an override
        # nested inside a long one is reported too.
        reach = indexes[0]
        for k in indexes[1:]:
            cur, prev = overrides[k], overrides[reach]
            if cur.start < prev.end:
                newer, older = (k, reach) if k > reach else (reach, k)
                errors.append(
                    {
                        "field": f"overrides[{newer}]",
                        "message": f"Overrides for {person!r} overlap: {_fmt(overrides[newer].start)} to "
                        f"{_fmt(overrides[newer].end)} and {_fmt(overrides[older].start)} to "
                        f"{_fmt(overrides[older].end)}. Merge them or change the times.",
                    }
                )
            if cur.end > prev.end:
                reach = k
    return errors


def validate_layers(layers: Sequence[Layer]) -> None:
    errors = _layer_errors(layers)
    if errors:
        raise ScheduleError(errors)


def validate_overrides(overrides: Sequence[Override]) -> None:
    errors = _override_errors(overrides)
    if errors:
        raise ScheduleError(errors)


def _validate_all(
    layers: Sequence[Layer], overrides: Sequence[Override], window: dict[str, datetime]
) -> None:
    errors = _layer_errors(layers) + _override_errors(overrides)
    for name, value in window.items():
        if not _is_aware(value):
            errors.append({"field": name, "message": f"{name} must be a date and time with a UTC offset."})
    if "start" in window and "end" in window and not errors and window["end"] < window["start"]:
        errors.append(
            {"field": "end", "message": "The end of the requested range must not be before its start."}
        )
    if errors:
        raise ScheduleError(errors)


# --------------------------------------------------------------------------------------------------
# Time zone helpers


def _resolve_local(naive: datetime, tz: ZoneInfo) -> datetime:
    """Wall-clock time in `tz` -> UTC instant, using the gap/fold rules from the module docstring."""
    off0 = naive.replace(tzinfo=tz).utcoffset()
    off1 = naive.replace(tzinfo=tz, fold=1).utcoffset()
    assert off0 is not None
    assert off1 is not None
    if off1 <= off0:
        # Normal time (equal offsets) or a fold, where fold=0 is the first occurrence.
        return (naive - off0).replace(tzinfo=UTC)
    # In a gap: fold=1 reads the time with the post-transition offset (an instant before the jump),
    # fold=0 with the pre-transition one (an instant at or after it). Transitions fall on whole seconds,
    # so bisect seconds between the two for the jump itself; gaps are rare, so this is cheap overall.
    lo = (naive - off1).replace(tzinfo=UTC)
    hi = (naive - off0).replace(tzinfo=UTC)
    before = lo.astimezone(tz).utcoffset()
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if (lo + timedelta(seconds=mid)).astimezone(tz).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return lo + timedelta(seconds=hi_s)


def _local(dt: datetime, tz: ZoneInfo) -> datetime:
    return dt.astimezone(tz).replace(tzinfo=None)


# --------------------------------------------------------------------------------------------------
# Rendering

_Interval = tuple[datetime, datetime]
_Owned = tuple[datetime, datetime, str]


class _LayerCalc:
    __slots__ = ("end", "layer", "local0", "start", "step", "tz", "wall_clock")

    def __init__(self, layer: Layer) -> None:
        zone = _load_zone(layer.timezone)
        assert zone is not None  # validated
        self.layer = layer
        self.tz = zone
        self.start = layer.start.astimezone(UTC)
        self.end = layer.end.astimezone(UTC) if layer.end is not None else None
        self.local0 = _local(layer.start, zone)
        count, unit = layer.turn_length.count, layer.turn_length.unit
        self.wall_clock = unit != "hours"
        self.step = {"hours": timedelta(hours=count), "days": _DAY * count, "weeks": _WEEK * count}[unit]

    def turn_start(self, k: int) -> datetime:
        if k == 0:
            # Exactly as given, even if its wall-clock time is ambiguous and it meant the second occurrence.
            return self.start
        if not self.wall_clock:
            return self.start + self.step * k
        return _resolve_local(self.local0 + self.step * k, self.tz)

    def turn_index(self, t: datetime) -> int:
        if self.wall_clock:
            k = (_local(t, self.tz) - self.local0) // self.step
        else:
            k = (t - self.start) // self.step
        # The wall-clock estimate can be off by one around DST changes; settle it against real instants.
        k = max(k, 0)
        while k > 0 and self.turn_start(k) > t:
            k -= 1
        while self.turn_start(k + 1) <= t:
            k += 1
        return k

    def turns(self, a: datetime, b: datetime) -> list[_Owned]:
        lo = max(a, self.start)
        hi = b if self.end is None else min(b, self.end)
        out: list[_Owned] = []
        if lo >= hi:
            return out
        people = self.layer.participants
        k = self.turn_index(lo)
        s = self.turn_start(k)
        while s < hi:
            e = self.turn_start(k + 1)
            if e > s:  # only a gap longer than a turn could collapse one; then that turn is skipped
                out.append((max(s, lo), min(e, hi), people[k % len(people)]))
            k += 1
            s = e
        return out

    def windows(self, a: datetime, b: datetime) -> list[_Interval]:
        if not self.layer.restrictions:
            return [(a, b)]
        tz = self.tz
        # One day/week of margin on each side catches windows that started earlier and run into [a, b).
        first_day = _local(a, tz).date() - _DAY
        last_day = _local(b, tz).date() + _DAY
        raw: list[_Interval] = []
        for r in self.layer.restrictions:
            if r.kind == "daily":
                span = _DAY
                anchor = datetime.combine(first_day, r.start_time)
                length = datetime.combine(first_day, r.end_time) - anchor
            else:
                assert r.start_weekday is not None
                assert r.end_weekday is not None
                span = _WEEK
                monday = first_day - timedelta(days=first_day.weekday()) - _WEEK
                anchor = datetime.combine(monday + timedelta(days=r.start_weekday), r.start_time)
                length = datetime.combine(monday + timedelta(days=r.end_weekday), r.end_time) - anchor
            if length <= timedelta(0):
                length += span  # overnight / wrapping into the next week
            last = datetime.combine(last_day, time())
            while anchor <= last:
                ws = _resolve_local(anchor, tz)
                we = _resolve_local(anchor + length, tz)
                if we > a and ws < b and we > ws:
                    raw.append((max(ws, a), min(we, b)))
                anchor += span
        raw.sort()
        merged: list[_Interval] = []
        for ws, we in raw:
            if merged and ws <= merged[-1][1]:
                if we > merged[-1][1]:
                    merged[-1] = (merged[-1][0], we)
            else:
                merged.append((ws, we))
        return merged

    def render(self, a: datetime, b: datetime) -> list[_Owned]:
        turns = self.turns(a, b)
        if not self.layer.restrictions:
            return turns
        windows = self.windows(a, b)
        out: list[_Owned] = []
        i = j = 0
        while i < len(turns) and j < len(windows):
            ts, te, person = turns[i]
            ws, we = windows[j]
            s, e = max(ts, ws), min(te, we)
            if s < e:
                out.append((s, e, person))
            if te <= we:
                i += 1
            else:
                j += 1
        return out


def _merge(segments: list[_Owned]) -> list[_Owned]:
    out: list[_Owned] = []
    for seg in segments:
        if out and out[-1][1] == seg[0] and out[-1][2] == seg[2]:
            out[-1] = (out[-1][0], seg[1], seg[2])
        else:
            out.append(seg)
    return out


_Item = tuple[datetime, datetime, int, str, str]  # start, end, priority, person, source


def _stack(items: list[_Item]) -> list[Shift]:
    """Flatten prioritized intervals: at every instant the highest priority active interval wins.

    Intervals sharing a priority must not overlap (true for one layer's turns); overrides each get their
    own priority. This is the hot loop for long windows, hence plain tuples and local names.
    """
    n = len(items)
    # Event codes: idx for a start, n + idx for an end. All events at one instant are applied before
    # the winner is read, so their relative order does not matter.
    events = [(it[0], idx) for idx, it in enumerate(items)]
    events += [(it[1], n + idx) for idx, it in enumerate(items)]
    events.sort()
    active = [False] * n
    heap: list[tuple[int, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    out: list[Shift] = []
    last_end: datetime | None = None
    last_key: tuple[str, str] | None = None
    seg_start: datetime | None = None
    prev: datetime | None = None
    for t, code in events:
        if prev is not None and t != prev:
            while heap and not active[heap[0][1]]:
                pop(heap)
            if heap:
                it = items[heap[0][1]]
                key = (it[3], it[4])
                if key != last_key or last_end != prev:
                    if seg_start is not None and last_key is not None and last_end is not None:
                        out.append(Shift(seg_start, last_end, *last_key))
                    seg_start, last_key = prev, key
                last_end = t
        prev = t
        if code < n:
            active[code] = True
            push(heap, (-items[code][2], code))
        else:
            active[code - n] = False
    if seg_start is not None and last_key is not None and last_end is not None:
        out.append(Shift(seg_start, last_end, *last_key))
    return out


def _compute(
    layers: Sequence[Layer], overrides: Sequence[Override], start: datetime, end: datetime
) -> FinalSchedule:
    a, b = start.astimezone(UTC), end.astimezone(UTC)
    rendered: list[RenderedLayer] = []
    items: list[_Item] = []
    for prio, layer in enumerate(layers):
        segs = _merge(_LayerCalc(layer).render(a, b)) if a < b else []
        name = layer.name
        rendered.append(RenderedLayer(name, tuple(Shift(s, e, p, name) for s, e, p in segs)))
        items.extend((s, e, prio, p, name) for s, e, p in segs)
    override_items: list[_Item] = []
    for n, o in enumerate(overrides):
        s, e = max(o.start.astimezone(UTC), a), min(o.end.astimezone(UTC), b)
        if s < e:
            override_items.append((s, e, len(layers) + n, o.person, OVERRIDE_SOURCE))
    return FinalSchedule(
        start=a,
        end=b,
        shifts=tuple(_stack(items + override_items)),
        rendered_layers=tuple(rendered),
        rendered_overrides=tuple(_stack(override_items)),
    )


def compute_schedule(
    layers: Sequence[Layer], overrides: Sequence[Override], start: datetime, end: datetime
) -> FinalSchedule:
    """Raises ScheduleError for invalid input, so a schedule that could not have been saved is never
    rendered silently wrong."""
    _validate_all(layers, overrides, {"start": start, "end": end})
    return _compute(layers, overrides, start, end)


def on_call_at(
    layers: Sequence[Layer],
    overrides: Sequence[Override],
    at: datetime,
    *,
    horizon: timedelta = timedelta(days=92),
) -> Shift | None:
    """The shift covering `at`, with its real (merged) bounds as compute_schedule reports them.

    A shift can be unbounded (one participant, no end), so its bounds are searched at most `horizon`
    away from `at` and clipped there.
    """
    _validate_all(layers, overrides, {"at": at})
    t = at.astimezone(UTC)
    longest = max([_LayerCalc(layer).step for layer in layers], default=_DAY)
    reach = min(max(longest, _DAY), horizon)
    while True:
        lo, hi = t - reach, t + reach
        shifts = _compute(layers, overrides, lo, hi).shifts
        k = bisect_right([s.start for s in shifts], t) - 1
        if k < 0 or shifts[k].end <= t:
            return None
        found = shifts[k]
        if reach >= horizon or (found.start > lo and found.end < hi):
            return found
        reach = min(reach * 2, horizon)


def find_gaps(
    layers: Sequence[Layer], overrides: Sequence[Override], start: datetime, end: datetime
) -> tuple[Gap, ...]:
    schedule = compute_schedule(layers, overrides, start, end)
    gaps: list[Gap] = []
    cursor = schedule.start
    for shift in schedule.shifts:
        if shift.start > cursor:
            gaps.append(Gap(cursor, shift.start))
        cursor = max(cursor, shift.end)
    if cursor < schedule.end:
        gaps.append(Gap(cursor, schedule.end))
    return tuple(gaps)
