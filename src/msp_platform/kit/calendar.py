"""Business calendars: an IANA time zone, weekly opening windows and holiday dates.

The definition every method agrees with: a UTC instant is open iff its local wall-clock
time in `timezone` lies inside a window (an overnight window continues on the next local
date) and its local date is not a holiday. Skipped wall times on spring-forward days are
never open; repeated wall times on fall-back days are open twice.

Internally instants are integer microseconds since the Unix epoch, so sums of intervals
are exact and cheap; the datetime-facing methods convert at the edges.
"""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import chain
from typing import TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
DAY_US = 1440 * MINUTE_US
_MINUTES_PER_DAY = 1440
_MINUTES_PER_WEEK = 7 * _MINUTES_PER_DAY
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
# 1970-01-01 was a Thursday; day index 0 therefore has weekday 3.
_EPOCH_WEEKDAY = 3
_WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
# zoneinfo cannot represent instants near datetime.min/max in every zone; calendars are
# for business use, so refusing anything outside these years keeps the edges simple.
_MIN_YEAR = 2
_MAX_YEAR = 9998
# Names ZoneInfo resolves from the tz database directory that are not IANA zones (the host's own zone and
# tzdata's internal files): refused as input.
_NOT_IANA = frozenset({"localtime", "posixrules", "Factory", "leapseconds", "tzdata.zi", "zone.tab"})


class FieldErrorDict(TypedDict):
    field: str
    message: str


class BeyondHorizon(ValueError):
    """The business time asked for is not reached within the search horizon."""


class CalendarError(ValueError):
    """Invalid calendar definition; `errors` is shaped for a problem+json response."""

    def __init__(self, errors: list[FieldErrorDict]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


def to_us(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime {moment.isoformat()} must be timezone-aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


def from_us(instant: int) -> datetime:
    return _EPOCH + timedelta(microseconds=instant)


def td_us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


def _format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _parse_hhmm(text: str, *, is_end: bool) -> int | None:
    match = _HHMM.fullmatch(text.strip())
    if match is None:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59:
        return None
    if hours == 24 and minutes == 0 and is_end:
        return _MINUTES_PER_DAY
    if hours > 23:
        return None
    minute = hours * 60 + minutes
    # "22:00"-"00:00" is how people write "until midnight"; as an end, 00:00 is the
    # midnight that closes the day, not a zero-length tail on the next one.
    if is_end and minute == 0:
        return _MINUTES_PER_DAY
    return minute


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """Opening hours on one weekday (0=Mon); `end <= start` continues into the next day."""

    weekday: int
    start: int
    end: int

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    @classmethod
    def parse(cls, weekday: int, start: str, end: str) -> "WeeklyWindow":
        """Build from "HH:MM" strings; an end of "24:00" or "00:00" means end of day."""
        errors: list[FieldErrorDict] = []
        start_minute = _parse_hhmm(start, is_end=False)
        end_minute = _parse_hhmm(end, is_end=True)
        if start_minute is None:
            errors.append(
                {"field": "start", "message": f"'{start}' is not a time of day; use HH:MM, 00:00 to 23:59"}
            )
        if end_minute is None:
            errors.append(
                {"field": "end", "message": f"'{end}' is not a time of day; use HH:MM, 00:00 to 24:00"}
            )
        if errors:
            raise CalendarError(errors)
        assert start_minute is not None
        assert end_minute is not None
        return cls(weekday, start_minute, end_minute)

    def week_span(self) -> tuple[int, int]:
        """[start, end) in minutes from Monday 00:00; the end may pass the end of the week."""
        begin = self.weekday * _MINUTES_PER_DAY + self.start
        length = self.end - self.start if not self.overnight else _MINUTES_PER_DAY - self.start + self.end
        return begin, begin + length

    def __str__(self) -> str:
        day = _WEEKDAY_NAMES[self.weekday] if 0 <= self.weekday <= 6 else f"weekday {self.weekday}"
        suffix = " (next day)" if self.overnight else ""
        return f"{day} {_format_minute(self.start)}-{_format_minute(self.end)}{suffix}"


def _window_errors(windows: Mapping[int, WeeklyWindow], *, any_given: bool) -> list[FieldErrorDict]:
    """Checks on windows keyed by their position in the caller's input."""
    errors: list[FieldErrorDict] = []
    if not any_given:
        errors.append(
            {"field": "windows", "message": "a business calendar needs at least one opening window"}
        )
        return errors
    spans: list[tuple[int, int, int]] = []
    for index, window in windows.items():
        where = f"windows[{index}]"
        valid = True
        if not 0 <= window.weekday <= 6:
            errors.append(
                {
                    "field": f"{where}.weekday",
                    "message": f"weekday must be 0 (Monday) to 6 (Sunday), got {window.weekday}",
                }
            )
            valid = False
        if not 0 <= window.start < _MINUTES_PER_DAY:
            errors.append({"field": f"{where}.start", "message": "start must be a time from 00:00 to 23:59"})
            valid = False
        if not 0 < window.end <= _MINUTES_PER_DAY:
            errors.append({"field": f"{where}.end", "message": "end must be a time from 00:01 to 24:00"})
            valid = False
        if valid and window.start == window.end:
            errors.append(
                {
                    "field": where,
                    "message": f"window starts and ends at {_format_minute(window.start)}, so it is empty",
                }
            )
            valid = False
        if valid:
            begin, finish = window.week_span()
            spans.append((begin, finish, index))
    if len(spans) > 1:
        # Unroll the week once so a Sunday-night window is compared with Monday's, then
        # sweep keeping the window that reaches furthest (it may overlap several later ones).
        unrolled = sorted(spans + [(b + _MINUTES_PER_WEEK, f + _MINUTES_PER_WEEK, i) for b, f, i in spans])
        reported: set[tuple[int, int]] = set()
        reach_end, reach_index = unrolled[0][1], unrolled[0][2]
        for begin, finish, index in unrolled[1:]:
            pair = (min(index, reach_index), max(index, reach_index))
            if begin < reach_end and index != reach_index and pair not in reported:
                reported.add(pair)
                errors.append(
                    {
                        "field": f"windows[{pair[1]}]",
                        "message": f"{windows[pair[1]]} overlaps {windows[pair[0]]} (windows[{pair[0]}])",
                    }
                )
            if finish > reach_end:
                reach_end, reach_index = finish, index
    return errors


def _timezone_errors(timezone: str, *, strict: bool = False) -> list[FieldErrorDict]:
    if strict and (
        not timezone
        or timezone in _NOT_IANA
        or timezone.startswith(("/", "."))
        or ".." in timezone
        or timezone.endswith((".tab", ".zi"))
    ):
        return [{"field": "timezone", "message": f"'{timezone}' is not an IANA time zone name"}]
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return [{"field": "timezone", "message": f"'{timezone}' is not a known IANA time zone"}]
    return []


def _day_index(day: date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def _year_start_us(year: int) -> int:
    return _day_index(date(year, 1, 1)) * DAY_US


def _year_of(instant: int) -> int:
    return date.fromordinal(_EPOCH_ORDINAL + instant // DAY_US).year


@lru_cache(maxsize=2048)
def _year_transitions(key: str, year: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """UTC offset at the start of a UTC year and the (instant, new offset) changes in it.

    zoneinfo exposes no transition table, so sample every 6 hours and bisect to the second
    (TZif transitions are whole seconds). Two transitions that cancel within 6 hours would
    be missed; no zone in use since the 1970s does that.
    """
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise OverflowError(f"year {year} is outside the supported calendar range")
    zone = ZoneInfo(key)

    def offset(second: int) -> int:
        value = datetime.fromtimestamp(second, zone).utcoffset()
        assert value is not None
        return td_us(value)

    lo = _year_start_us(year) // SECOND_US
    hi = _year_start_us(year + 1) // SECOND_US
    step = 6 * 3600
    current = first = offset(lo)
    changes: list[tuple[int, int]] = []
    previous = lo
    for sample in chain(range(lo + step, hi - 1, step), (hi - 1,)):
        while offset(sample) != current:
            # Invariant: offset(low) == current != offset(high), so this finds a real change.
            low, high = previous, sample
            while high - low > 1:
                middle = (low + high) // 2
                if offset(middle) == current:
                    low = middle
                else:
                    high = middle
            current = offset(high)
            changes.append((high * SECOND_US, current))
            previous = high
        previous = sample
    return first, tuple(changes)


def _offset_periods(key: str, lo: int, hi: int | None) -> Iterator[tuple[int, int, int]]:
    """(start, end, utc offset) pieces with a constant offset covering [lo, hi)."""
    year = _year_of(lo)
    while True:
        year_end = _year_start_us(year + 1)
        piece_start = _year_start_us(year)
        piece_offset, changes = _year_transitions(key, year)
        for change_at, new_offset in (*changes, (year_end, 0)):
            start = max(piece_start, lo)
            end = change_at if hi is None else min(change_at, hi)
            if start < end:
                yield start, end, piece_offset
            piece_start, piece_offset = change_at, new_offset
        if hi is not None and year_end >= hi:
            return
        year += 1


def _minute_segments(windows: Sequence[WeeklyWindow]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Open microsecond-of-day ranges per weekday, overnight tails moved to the next day."""
    per_day: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for window in windows:
        if window.overnight:
            per_day[window.weekday].append((window.start, _MINUTES_PER_DAY))
            per_day[(window.weekday + 1) % 7].append((0, window.end))
        else:
            per_day[window.weekday].append((window.start, window.end))
    result: list[tuple[tuple[int, int], ...]] = []
    for segments in per_day:
        merged: list[list[int]] = []
        for start, end in sorted(segments):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        result.append(tuple((s * MINUTE_US, e * MINUTE_US) for s, e in merged))
    return tuple(result)


@dataclass(frozen=True)
class BusinessCalendar:
    timezone: str
    windows: tuple[WeeklyWindow, ...]
    holidays: frozenset[date] = frozenset()
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _segments: tuple[tuple[tuple[int, int], ...], ...] = field(init=False, repr=False, compare=False)
    _holiday_days: frozenset[int] = field(init=False, repr=False, compare=False)
    _always: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any iterable from callers, but store hashable, deduplicated values.
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        self.validate()
        segments = _minute_segments(self.windows)
        full_day = ((0, DAY_US),)
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))
        object.__setattr__(self, "_segments", segments)
        object.__setattr__(self, "_holiday_days", frozenset(_day_index(d) for d in self.holidays))
        # Every wall-clock time open means every instant is open, whatever the zone does.
        object.__setattr__(self, "_always", not self.holidays and all(s == full_day for s in segments))

    @classmethod
    def always_open(cls, tz: str = "UTC") -> "BusinessCalendar":
        return cls(tz, tuple(WeeklyWindow(day, 0, _MINUTES_PER_DAY) for day in range(7)))

    def validate(self) -> None:
        """Raise CalendarError listing every problem; construction already calls this."""
        errors = _timezone_errors(self.timezone) + _window_errors(
            dict(enumerate(self.windows)), any_given=bool(self.windows)
        )
        if any(not isinstance(day, date) or isinstance(day, datetime) for day in self.holidays):
            errors.append({"field": "holidays", "message": "holidays must be dates without a time"})
        if errors:
            raise CalendarError(errors)

    @property
    def is_always_open(self) -> bool:
        return self._always

    def is_open(self, at: datetime) -> bool:
        to_us(at)  # rejects naive datetimes
        if self._always:
            return True
        local = at.astimezone(self._zone)
        if _day_index(local.date()) in self._holiday_days:
            return False
        of_day = ((local.hour * 60 + local.minute) * 60 + local.second) * SECOND_US + local.microsecond
        return any(start <= of_day < end for start, end in self._segments[local.weekday()])

    def _local_open(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Open naive-local ranges within [lo, hi), as microseconds of wall-clock time."""
        day = lo // DAY_US
        last = (hi - 1) // DAY_US
        segments = self._segments
        holidays = self._holiday_days
        while day <= last:
            if day not in holidays:
                base = day * DAY_US
                for start, end in segments[(day + _EPOCH_WEEKDAY) % 7]:
                    a = base + start
                    b = base + end
                    if a < lo:
                        a = lo
                    if b > hi:
                        b = hi
                    if a < b:
                        yield a, b
            day += 1

    def open_intervals_us(self, lo: int, hi: int | None) -> Iterator[tuple[int, int]]:
        """Maximal open [a, b) ranges within [lo, hi) in epoch microseconds; hi=None is unbounded."""
        if hi is not None and hi <= lo:
            return
        if self._always:
            if hi is None:
                raise ValueError("an always-open calendar has one unbounded interval")
            yield lo, hi
            return
        pending_start: int | None = None
        pending_end: int | None = None
        for start, end, offset in _offset_periods(self.timezone, lo, hi):
            # Within a constant-offset piece, local time is UTC shifted by `offset`, so the
            # open wall-clock ranges map back by the same shift; skipped and repeated wall
            # times fall out of this without special cases.
            for a, b in self._local_open(start + offset, end + offset):
                a -= offset
                b -= offset
                if pending_end is not None and a <= pending_end:
                    pending_end = max(pending_end, b)
                    continue
                if pending_start is not None and pending_end is not None:
                    yield pending_start, pending_end
                pending_start, pending_end = a, b
        if pending_start is not None and pending_end is not None:
            yield pending_start, pending_end

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        for a, b in self.open_intervals_us(to_us(start), to_us(end)):
            yield from_us(a), from_us(b)

    def business_us_between(self, lo: int, hi: int) -> int:
        if hi < lo:
            return -self.business_us_between(hi, lo)
        return sum(b - a for a, b in self.open_intervals_us(lo, hi))

    def business_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Open time in [a, b); negative when b is before a, like `b - a`."""
        return timedelta(microseconds=self.business_us_between(to_us(a), to_us(b)))

    def add_business_us(self, start: int, amount: int, *, within: int | None = None) -> int:
        """`start` plus `amount` of open time. With `within` (microseconds), give up when the answer lies
        further than that from `start` and raise BeyondHorizon: a calendar open one minute a week must not
        send a search to the year 9999."""
        if amount < 0:
            raise ValueError("business time to add must not be negative")
        if self._always:
            return start + amount
        hi = None if within is None else start + within
        for a, b in self.open_intervals_us(start, hi):
            if amount == 0:
                return a
            if b - a >= amount:
                return a + amount
            amount -= b - a
        if within is not None:
            raise BeyondHorizon(f"not reached within {within // DAY_US} days")
        raise AssertionError("unreachable: open intervals are unbounded")  # pragma: no cover

    def open_us_per_week(self) -> int:
        """Open wall-clock time in a week, holidays and DST shifts aside (the weekly windows' total)."""
        return sum(end - start for day in self._segments for start, end in day)

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime:
        """Earliest instant by which `duration` of open time has passed since `start`.

        A positive duration that is used up exactly at a closing time returns the closing
        time, not the next opening. A zero duration returns the first open instant at or
        after `start` (i.e. the limit of ever smaller durations), which is `start` itself
        when the calendar is open then.
        """
        return from_us(self.add_business_us(to_us(start), td_us(duration)))

    def next_open(self, at: datetime) -> datetime:
        return self.add_business_time(at, timedelta(0))


def parse_calendar(
    timezone: str,
    windows: Iterable[Mapping[str, object]],
    holidays: Iterable[str | date] = (),
) -> BusinessCalendar:
    """Build a calendar from API-shaped input, reporting every problem at once.

    `windows` items look like {"weekday": 0, "start": "08:00", "end": "17:00"}; holidays are
    dates or ISO "YYYY-MM-DD" strings (duplicates are fine). The time zone must be an IANA name
    ("localtime" and tzdata's internal files are refused although ZoneInfo can load them).
    """
    errors = _timezone_errors(timezone, strict=True)
    parsed: dict[int, WeeklyWindow] = {}
    window_list = list(windows)
    for index, raw in enumerate(window_list):
        where = f"windows[{index}]"
        weekday = raw.get("weekday")
        if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
            errors.append(
                {
                    "field": f"{where}.weekday",
                    "message": f"weekday must be 0 (Monday) to 6 (Sunday), got {weekday!r}",
                }
            )
            weekday = None
        times: dict[str, int] = {}
        for name, is_end in (("start", False), ("end", True)):
            value = raw.get(name)
            minute = _parse_hhmm(value, is_end=is_end) if isinstance(value, str) else None
            if minute is None:
                upper = "24:00" if is_end else "23:59"
                errors.append(
                    {
                        "field": f"{where}.{name}",
                        "message": f"{name} {value!r} is not a time of day; use HH:MM from 00:00 to {upper}",
                    }
                )
            else:
                times[name] = minute
        if weekday is not None and len(times) == 2:
            parsed[index] = WeeklyWindow(weekday, times["start"], times["end"])
    # Windows that failed to parse are already reported; still check the rest so the
    # caller sees every problem in one response.
    errors.extend(_window_errors(parsed, any_given=bool(window_list)))
    holiday_dates: set[date] = set()
    for index, raw_day in enumerate(holidays):
        day: date | None
        if isinstance(raw_day, date) and not isinstance(raw_day, datetime):
            day = raw_day
        else:
            try:
                day = date.fromisoformat(raw_day) if isinstance(raw_day, str) else None
            except ValueError:
                day = None
        if day is not None and _MIN_YEAR <= day.year <= _MAX_YEAR:
            holiday_dates.add(day)
        else:
            errors.append(
                {"field": f"holidays[{index}]", "message": f"{raw_day!r} is not a date; use YYYY-MM-DD"}
            )
    if errors:
        raise CalendarError(errors)
    return BusinessCalendar(timezone, tuple(parsed.values()), frozenset(holiday_dates))
