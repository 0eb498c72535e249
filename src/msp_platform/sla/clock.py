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

Duration changes (the incident's priority changed; `TargetSpec.changes`):
- The duration in force at an instant applies to counted time measured from the start (like
  ServiceNow's "retroactive start"): a threshold is reached at the first instant at which counted
  time >= the threshold of the duration then in force. A change that leaves a threshold already
  exceeded reaches it at the change (or, if the clock is stopped then, when it runs again).
- A breach, once it happened (counted time strictly above the duration then in force), is never
  erased by a later change. `breached_at` is when counted time reached that duration, never before
  the change that brought the duration into force. A warning once reached stays reached.
- A change while the clock is stopped applies only if it runs again (a reopened incident); a
  response clock stopped by the first response is final.
- A duration of None means the target does not apply while it is in force (nothing is reached).

Projections (due times of a running clock) search at most `horizon` ahead and give None beyond.
"""

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal

from msp_platform.kit.calendar import SECOND_US, BeyondHorizon, BusinessCalendar, from_us, td_us, to_us

TargetKind = Literal["response", "resolution"]
ClockStatus = Literal["running", "paused", "met", "breached"]
SegmentKind = Literal["counted", "paused", "outside_hours", "stopped"]
# How far ahead a due time is searched for; publishing refuses calendars that cannot meet a target sooner.
PROJECTION_HORIZON = timedelta(days=5 * 366)


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
    # (instant, duration from then on; None: the target does not apply), sorted by instant: the
    # incident's priority changes. Before the first change, `duration` is in force.
    changes: tuple[tuple[datetime, timedelta | None], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("response", "resolution"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if self.duration <= timedelta(0):
            raise ValueError("a target duration must be positive")
        if any(not 1 <= percent <= 100 for percent in self.warning_percents):
            raise ValueError("warning percents must be between 1 and 100")
        if any(d is not None and d <= timedelta(0) for _, d in self.changes):
            raise ValueError("a target duration must be positive")
        instants = [to_us(at) for at, _ in self.changes]
        if any(later < earlier for earlier, later in pairwise(instants)):
            raise ValueError("duration changes must be sorted by instant")


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
    # False when the duration in force at as_of is None (the priority has no such target now).
    applies: bool = True
    # The next instant at which a warning or the breach can be reached (running clocks only): when to
    # look again.
    wake_at: datetime | None = None
    # (instant, duration) of the changes applied within [started_at, as_of].
    changes: tuple[tuple[datetime, timedelta | None], ...] = ()


def _threshold(duration_us: int, percent: int) -> int:
    return -(-duration_us * percent // 100)


def _schedule(target: TargetSpec, begin: int, end: int) -> list[tuple[int, int | None]]:
    """(instant, duration in microseconds or None) from `begin`; changes after `end` are ignored and the
    last change at or before `begin` gives the starting duration."""
    schedule: list[tuple[int, int | None]] = [(begin, td_us(target.duration))]
    for at, duration in target.changes:
        at_us = to_us(at)
        if at_us > end:
            break
        value = None if duration is None else td_us(duration)
        if at_us <= begin:
            schedule[0] = (begin, value)
        elif schedule[-1][0] == at_us:
            schedule[-1] = (at_us, value)
        else:
            schedule.append((at_us, value))
    return schedule


def compute_clock(
    timeline: Timeline,
    target: TargetSpec,
    calendar: BusinessCalendar,
    as_of: datetime,
    *,
    horizon: timedelta = PROJECTION_HORIZON,
    with_segments: bool = True,
) -> ClockResult:
    """The clock of one target as of `as_of`. Without `with_segments` the result's segments are empty (the
    totals are the same): for callers that store outcomes and explain nothing."""
    begin = to_us(timeline.started_at)
    end = to_us(as_of)
    if end < begin:
        raise ValueError("as_of must not be before the timeline starts")
    pause_states = target.pause_states
    stop_states = target.stop_states
    schedule = _schedule(target, begin, end)

    responded: int | None = None
    if target.kind == "response" and timeline.responded_at is not None:
        # A response stamped before the start (clock skew between sources) counts as instant.
        responded = max(to_us(timeline.responded_at), begin)
        if responded > end:
            responded = None

    # Change points in [begin, end]: (instant, state). Several events at one instant collapse to
    # the last; the state "covering" begin is the last at or before it.
    states: list[tuple[int, str]] = []
    for entered, state in timeline.states:
        at = to_us(entered)
        if at > end:
            break
        at = max(at, begin)
        if states and states[-1][0] == at:
            states.pop()
        states.append((at, state))
    # The first response and every duration change split the run they fall in (same state).
    for extra in ([responded] if responded is not None else []) + [at for at, _ in schedule[1:]]:
        index = bisect_right([at for at, _ in states], extra)
        if states[index - 1][0] != extra:
            states.insert(index, (extra, states[index - 1][1]))
    points = [
        (at, state, state in stop_states or (responded is not None and at >= responded))
        for at, state in states
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
    percents = target.warning_percents
    reached: dict[int, int] = {}  # warning percent -> instant
    elapsed = 0
    # The duration in force, the warnings still pending under it (threshold, percent), and the
    # instant counted time reached it (within this duration's period).
    duration: int | None = None
    pending: list[tuple[int, int]] = []
    period_reach: int | None = None
    breached_at: int | None = None
    schedule_index = 0

    def enter_period(value: int | None) -> None:
        nonlocal duration, pending, period_reach
        duration = value
        period_reach = None
        pending = (
            [] if value is None else sorted((_threshold(value, p), p) for p in percents if p not in reached)
        )

    def check_at(instant: int) -> None:
        """The clock runs (is not stopped) at `instant`: reach what counted time already covers."""
        nonlocal period_reach, breached_at
        if duration is None:
            return
        while pending and pending[0][0] <= elapsed:
            reached[pending.pop(0)[1]] = instant
        if period_reach is None and elapsed >= duration:
            period_reach = instant
        if breached_at is None and elapsed > duration:
            breached_at = period_reach

    def emit(kind: SegmentKind, state: str, a: int, b: int) -> None:
        totals[kind] += b - a
        if not with_segments:
            return
        if segments and segments[-1][1:] == (a, kind, state):
            segments[-1] = (segments[-1][0], b, kind, state)
        else:
            segments.append((a, b, kind, state))

    enter_period(schedule[0][1])
    for number, (run_start, state, stopped) in enumerate(points):
        while schedule_index + 1 < len(schedule) and schedule[schedule_index + 1][0] <= run_start:
            schedule_index += 1
            enter_period(schedule[schedule_index][1])
        if not stopped:
            check_at(run_start)
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
                if duration is not None:
                    while pending and pending[0][0] <= elapsed + gained:
                        threshold, percent = pending.pop(0)
                        reached[percent] = cursor + threshold - elapsed
                    if period_reach is None and elapsed + gained >= duration:
                        period_reach = cursor + duration - elapsed
                    if breached_at is None and elapsed + gained > duration:
                        breached_at = period_reach
                elapsed += gained
            cursor = piece_end
            if open_end <= run_end:
                open_index += 1

    status: ClockStatus
    if breached_at is not None:
        status = "breached"
    elif final_stopped:
        status = "met"
    elif final_state in pause_states:
        status = "paused"
    else:
        status = "running"

    within = td_us(horizon)

    def projected(amount: int) -> int | None:
        try:
            return calendar.add_business_us(end, amount, within=within)
        except BeyondHorizon:
            return None

    in_force = duration
    # Without a target in force, the result shows the last duration given (in the order of the changes).
    given = [td_us(target.duration)] + [
        td_us(d) for at, d in target.changes if d is not None and to_us(at) <= end
    ]
    shown = in_force if in_force is not None else given[-1]
    due_at: int | None = None
    wake_at: int | None = None
    if status == "breached":
        due_at = breached_at
    elif status == "running" and in_force is not None:
        if period_reach is not None:
            # Used up exactly (at a closing time): breached as soon as counting resumes.
            due_at = period_reach
            wake_at = projected(SECOND_US)
        else:
            due_at = projected(in_force - elapsed)
            wake_at = due_at

    warnings: list[WarningThreshold] = []
    for percent in percents:
        reached_at = reached.get(percent)
        due = reached_at
        if due is None and status == "running" and in_force is not None:
            due = projected(_threshold(in_force, percent) - elapsed)
            if due is not None and (wake_at is None or due < wake_at):
                wake_at = due
        warnings.append(WarningThreshold(percent=percent, reached_at=_maybe(reached_at), due_at=_maybe(due)))
    return ClockResult(
        target=target.name,
        kind=target.kind,
        duration=timedelta(microseconds=shown),
        as_of=as_of,
        status=status,
        elapsed=timedelta(microseconds=elapsed),
        paused=timedelta(microseconds=totals["paused"]),
        outside_hours=timedelta(microseconds=totals["outside_hours"]),
        remaining=timedelta(microseconds=shown - elapsed),
        due_at=_maybe(due_at),
        breached_at=_maybe(breached_at),
        stopped_at=_maybe(stopped_at),
        warnings=tuple(warnings),
        segments=tuple(Segment(from_us(a), from_us(b), kind, state) for a, b, kind, state in segments),
        applies=in_force is not None,
        wake_at=_maybe(wake_at),
        changes=tuple(
            (from_us(at), None if d is None else timedelta(microseconds=d)) for at, d in schedule[1:]
        ),
    )


def _maybe(instant: int | None) -> datetime | None:
    return None if instant is None else from_us(instant)


@dataclass(frozen=True, slots=True)
class MissedUpdate:
    """An update was due at `due_at`; `late_until` is the late update or the stop, else None."""

    due_at: datetime
    late_until: datetime | None
    cycle: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class UpdateCycle:
    """The stretch between two public updates: cycle 0 runs from the start to the first update, cycle n
    from the n-th update to the next (or to as_of). Its clock is evaluated at the cycle's end."""

    number: int
    started_at: datetime
    ended_at: datetime | None  # the update that ended it; None: the current cycle
    clock: ClockResult


@dataclass(frozen=True, slots=True)
class UpdateCadence:
    cycles: tuple[UpdateCycle, ...]
    missed: tuple[MissedUpdate, ...]
    # breached when any cycle was missed; otherwise the current cycle's status (met once stopped).
    status: ClockStatus
    # When the next update is due: the current cycle's due time (in the past when it is overdue); None
    # while paused or stopped.
    next_due_at: datetime | None
    wake_at: datetime | None

    @property
    def current(self) -> UpdateCycle:
        return self.cycles[-1]


def compute_update_clock(
    timeline: Timeline,
    target: TargetSpec,
    calendar: BusinessCalendar,
    as_of: datetime,
    updates: Iterable[datetime],
    *,
    horizon: timedelta = PROJECTION_HORIZON,
) -> UpdateCadence:
    """The update cadence as a target that restarts at every public update: each cycle is a clock of
    `target` (pauses, stops, calendar and duration changes apply as for resolution) from its update.
    A cycle is missed when its counted time strictly exceeded the cadence before the next update."""
    if target.kind != "resolution":
        raise ValueError("an update cadence runs like a resolution clock")
    begin, end = to_us(timeline.started_at), to_us(as_of)
    if end < begin:
        raise ValueError("as_of must not be before the timeline starts")
    anchors = [begin, *sorted({u for u in (to_us(m) for m in updates) if begin < u <= end})]
    cycles: list[UpdateCycle] = []
    missed: list[MissedUpdate] = []
    for number, anchor in enumerate(anchors):
        until = anchors[number + 1] if number + 1 < len(anchors) else end
        clock = compute_clock(
            Timeline(from_us(anchor), timeline.states),
            target,
            calendar,
            from_us(until),
            horizon=horizon,
            with_segments=False,
        )
        ended = from_us(until) if number + 1 < len(anchors) else None
        cycles.append(UpdateCycle(number, from_us(anchor), ended, clock))
        if clock.status == "breached" and clock.breached_at is not None:
            late_until = clock.stopped_at if clock.stopped_at is not None else ended
            missed.append(MissedUpdate(clock.breached_at, late_until, number))
    current = cycles[-1].clock
    status: ClockStatus = "breached" if missed else current.status
    next_due = (
        current.due_at if current.status in ("running", "breached") and not current.stopped_at else None
    )
    return UpdateCadence(tuple(cycles), tuple(missed), status, next_due, current.wake_at)


def compute_update_cadence(
    started_at: datetime,
    update_times: Iterable[datetime],
    cadence: timedelta,
    calendar: BusinessCalendar,
    stop_at: datetime | None,
    as_of: datetime,
) -> list[MissedUpdate]:
    """Gaps where more than `cadence` of business time passed without a public update, the obligation
    running from `started_at` until `stop_at` (or `as_of`); no pauses. See `compute_update_clock`."""
    if cadence <= timedelta(0):
        raise ValueError("update cadence must be positive")
    states: list[tuple[datetime, str]] = [(started_at, "open")]
    if stop_at is not None:
        states.append((max(stop_at, started_at), "stopped"))
    target = TargetSpec("update", cadence, "resolution", stop_states=frozenset({"stopped"}))
    result = compute_update_clock(Timeline(started_at, tuple(states)), target, calendar, as_of, update_times)
    return list(result.missed)
