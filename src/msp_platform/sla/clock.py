"""SLA clocks computed from a normalized incident timeline and a business calendar.

Pure functions over [started_at, as_of]: events after `as_of` are ignored so that a result
for a past moment can be reproduced exactly.

Every instant of the span falls in exactly one segment kind, checked in this order:
- stopped: a stop state (or, for a response target, at/after `responded_at`);
- outside_hours: the calendar is closed (this includes pause-state time outside hours);
- paused: a pause state while the calendar is open;
- counted: everything else.

Boundary conventions:
- A threshold (warning or the duration itself) is reached at the earliest instant the
  counted time equals it; if that happens exactly at a closing time, it is the closing time.
- "breached" means counted time is strictly greater than the duration. A clock stopped
  with elapsed == duration is "met", and a running clock sitting at exactly its duration
  (say, reached at 17:00 and now closed for the night) is still "running".
- `breached_at` is the instant counted time reached the duration (equal to `due_at`), set
  only when the status is "breached".
- A warning counts as reached when elapsed >= its threshold; thresholds are
  ceil(duration * percent / 100) in microseconds.
- An event exactly at `as_of` is applied (it decides the status) but covers no time.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal

from msp_platform.kit.calendar import BusinessCalendar, from_us, td_us, to_us

TargetKind = Literal["response", "resolution"]
ClockStatus = Literal["running", "paused", "met", "breached"]
SegmentKind = Literal["counted", "paused", "outside_hours", "stopped"]


@dataclass(frozen=True, slots=True)
class Timeline:
    """`states` are (entered_at, state) sorted by time; the first covers `started_at`."""

    started_at: datetime
    states: tuple[tuple[datetime, str], ...]
    responded_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.states:
            raise ValueError("a timeline needs at least the initial state")
        started = to_us(self.started_at)
        instants = [to_us(at) for at, _ in self.states]
        if instants[0] > started:
            raise ValueError("the first state must be entered at or before started_at")
        if any(later < earlier for earlier, later in pairwise(instants)):
            raise ValueError("timeline states must be sorted by entered_at")
        if self.responded_at is not None:
            to_us(self.responded_at)


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str
    duration: timedelta
    kind: TargetKind
    pause_states: frozenset[str] = frozenset()
    # Applies to both kinds; a response target is also stopped for good by responded_at.
    stop_states: frozenset[str] = frozenset()
    warning_percents: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("response", "resolution"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if self.duration <= timedelta(0):
            raise ValueError("a target duration must be positive")
        if any(not 1 <= percent <= 100 for percent in self.warning_percents):
            raise ValueError("warning percents must be between 1 and 100")


@dataclass(frozen=True, slots=True)
class WarningThreshold:
    """One warning level; `due_at` is when it was or (for a running clock) will be reached."""

    percent: int
    reached_at: datetime | None
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class Segment:
    start: datetime
    end: datetime
    kind: SegmentKind
    state: str

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ClockResult:
    target: str
    kind: TargetKind
    duration: timedelta
    as_of: datetime
    status: ClockStatus
    elapsed: timedelta
    paused: timedelta
    outside_hours: timedelta
    remaining: timedelta
    # Met or paused: None. Breached: the instant it became due. Running: projected from
    # as_of through the calendar, assuming the current state lasts.
    due_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None
    warnings: tuple[WarningThreshold, ...]
    segments: tuple[Segment, ...]


def _threshold(duration_us: int, percent: int) -> int:
    return -(-duration_us * percent // 100)


def compute_clock(
    timeline: Timeline, target: TargetSpec, calendar: BusinessCalendar, as_of: datetime
) -> ClockResult:
    begin = to_us(timeline.started_at)
    end = to_us(as_of)
    if end < begin:
        raise ValueError("as_of must not be before the timeline starts")
    duration = td_us(target.duration)
    pause_states = target.pause_states
    stop_states = target.stop_states

    responded: int | None = None
    if target.kind == "response" and timeline.responded_at is not None:
        # A response stamped before the start (clock skew between sources) counts as instant.
        responded = max(to_us(timeline.responded_at), begin)
        if responded > end:
            responded = None

    # Change points in [begin, end]: (instant, state, stopped). Several events at one
    # instant collapse to the last; the state "covering" begin is the last at or before it.
    points: list[tuple[int, str, bool]] = []
    for entered, state in timeline.states:
        at = to_us(entered)
        if at > end:
            break
        at = max(at, begin)
        if points and points[-1][0] == at:
            points.pop()
        points.append((at, state, False))
    if responded is not None:
        index = bisect_right([at for at, _, _ in points], responded)
        if points[index - 1][0] != responded:
            points.insert(index, (responded, points[index - 1][1], False))
    points = [
        (at, state, state in stop_states or (responded is not None and at >= responded))
        for at, state, _ in points
    ]

    final_at, final_state, final_stopped = points[-1]
    stopped_at: int | None = None
    if final_stopped:
        stopped_at = final_at
        for at, _, stopped in reversed(points):
            if not stopped:
                break
            stopped_at = at

    opens = list(calendar.open_intervals_us(begin, end))
    open_index = 0

    segments: list[tuple[int, int, SegmentKind, str]] = []
    totals = {"counted": 0, "paused": 0, "outside_hours": 0, "stopped": 0}
    thresholds = sorted({_threshold(duration, p) for p in target.warning_percents} | {duration})
    reached: dict[int, int] = {}
    pending = 0  # index into thresholds of the first not yet reached
    elapsed = 0

    def emit(kind: SegmentKind, state: str, a: int, b: int) -> None:
        totals[kind] += b - a
        if segments and segments[-1][1:] == (a, kind, state):
            segments[-1] = (segments[-1][0], b, kind, state)
        else:
            segments.append((a, b, kind, state))

    for number, (run_start, state, stopped) in enumerate(points):
        run_end = points[number + 1][0] if number + 1 < len(points) else end
        if run_start >= run_end:
            continue
        if stopped:
            emit("stopped", state, run_start, run_end)
            continue
        open_kind: SegmentKind = "paused" if state in pause_states else "counted"
        cursor = run_start
        while open_index < len(opens) and opens[open_index][1] <= cursor:
            open_index += 1
        while cursor < run_end:
            if open_index >= len(opens) or opens[open_index][0] >= run_end:
                emit("outside_hours", state, cursor, run_end)
                break
            open_start, open_end = opens[open_index]
            if open_start > cursor:
                emit("outside_hours", state, cursor, open_start)
                cursor = open_start
            piece_end = min(open_end, run_end)
            emit(open_kind, state, cursor, piece_end)
            if open_kind == "counted":
                gained = piece_end - cursor
                while pending < len(thresholds) and thresholds[pending] <= elapsed + gained:
                    reached[thresholds[pending]] = cursor + thresholds[pending] - elapsed
                    pending += 1
                elapsed += gained
            cursor = piece_end
            if open_end <= run_end:
                open_index += 1

    status: ClockStatus
    if final_stopped:
        status = "met" if elapsed <= duration else "breached"
    elif elapsed > duration:
        status = "breached"
    elif final_state in pause_states:
        status = "paused"
    else:
        status = "running"

    def projected(threshold: int) -> int | None:
        if threshold in reached:
            return reached[threshold]
        if status != "running":
            return None
        return calendar.add_business_us(end, threshold - elapsed)

    due_at: int | None = None
    if status in ("running", "breached"):
        due_at = projected(duration)
    breached_at = reached[duration] if status == "breached" else None

    warnings = tuple(
        WarningThreshold(
            percent=percent,
            reached_at=_maybe(reached.get(_threshold(duration, percent))),
            due_at=_maybe(projected(_threshold(duration, percent))),
        )
        for percent in target.warning_percents
    )
    return ClockResult(
        target=target.name,
        kind=target.kind,
        duration=target.duration,
        as_of=as_of,
        status=status,
        elapsed=timedelta(microseconds=elapsed),
        paused=timedelta(microseconds=totals["paused"]),
        outside_hours=timedelta(microseconds=totals["outside_hours"]),
        remaining=timedelta(microseconds=duration - elapsed),
        due_at=_maybe(due_at),
        breached_at=_maybe(breached_at),
        stopped_at=_maybe(stopped_at),
        warnings=warnings,
        segments=tuple(Segment(from_us(a), from_us(b), kind, state) for a, b, kind, state in segments),
    )


def _maybe(instant: int | None) -> datetime | None:
    return None if instant is None else from_us(instant)


@dataclass(frozen=True, slots=True)
class MissedUpdate:
    """An update was due at `due_at`; `late_until` is the late update or the stop, else None."""

    due_at: datetime
    late_until: datetime | None


def compute_update_cadence(
    started_at: datetime,
    update_times: Iterable[datetime],
    cadence: timedelta,
    calendar: BusinessCalendar,
    stop_at: datetime | None,
    as_of: datetime,
) -> list[MissedUpdate]:
    """Gaps where more than `cadence` of business time passed without a public update.

    The obligation runs from `started_at` until `stop_at` (or `as_of`). Same convention as
    breaches: a gap is missed only if business time strictly exceeds the cadence, and the
    miss is due at the instant the cadence was used up. One long gap is one miss.
    """
    step = td_us(cadence)
    if step <= 0:
        raise ValueError("update cadence must be positive")
    begin = to_us(started_at)
    limit = to_us(as_of)
    stopped = stop_at is not None and to_us(stop_at) <= limit
    if stop_at is not None:
        limit = min(limit, to_us(stop_at))
    if limit <= begin:
        return []

    # Prefix sums over open intervals give business time since `begin` by bisection.
    starts: list[int] = []
    ends: list[int] = []
    before: list[int] = []
    total = 0
    for a, b in calendar.open_intervals_us(begin, limit):
        starts.append(a)
        ends.append(b)
        before.append(total)
        total += b - a

    def business_until(instant: int) -> int:
        index = bisect_right(starts, instant) - 1
        if index < 0:
            return 0
        return before[index] + min(instant, ends[index]) - starts[index]

    def instant_at(amount: int) -> int:
        # Earliest instant with business_until(instant) == amount (amount > 0, <= total).
        index = bisect_left(before, amount) - 1
        return starts[index] + amount - before[index]

    updates = sorted(u for u in (to_us(moment) for moment in update_times) if begin < u <= limit)
    misses: list[MissedUpdate] = []
    anchor = 0
    for gap_end in [*updates, None]:
        used = business_until(limit if gap_end is None else gap_end)
        if used - anchor > step:
            if gap_end is not None:
                late_until: int | None = gap_end
            else:
                late_until = limit if stopped else None
            misses.append(MissedUpdate(from_us(instant_at(anchor + step)), _maybe(late_until)))
        anchor = used
    return misses
