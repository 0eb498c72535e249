"""Property tests: calendar and SLA clock against a minute-by-minute reference.

The reference applies the definitions literally: every UTC minute of the span is converted
with zoneinfo and checked against the raw windows and holidays, and the incident state is
looked up per minute. Windows, events and zone offsets in these zones are all on whole
minutes, so each UTC minute is entirely open or entirely closed.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msp_platform.kit.calendar import BusinessCalendar, WeeklyWindow
from msp_platform.sla.clock import TargetKind, TargetSpec, Timeline, compute_clock

ZONES = (
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Asia/Kolkata",
    "UTC",
)
STATES = ("new", "assigned", "in_progress", "on_hold", "resolved", "closed", "cancelled")
MINUTE = timedelta(minutes=1)
WEEK_MINUTES = 7 * 1440
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """UTC instants in 2024-2026 where the zone's offset changes (found hourly)."""
    zone = ZoneInfo(zone_name)
    found = []
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    previous = moment.astimezone(zone).utcoffset()
    while moment.year < 2027:
        moment += timedelta(hours=1)
        offset = moment.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(moment)
            previous = offset
    return tuple(found)


@dataclass(frozen=True)
class Reference:
    """The calendar definition, applied literally to one instant."""

    zone: ZoneInfo
    windows: tuple[WeeklyWindow, ...]
    holidays: frozenset[date]

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        for window in self.windows:
            if window.end > window.start:
                if window.weekday == weekday and window.start <= minute < window.end:
                    return True
            else:
                if window.weekday == weekday and minute >= window.start:
                    return True
                if (window.weekday + 1) % 7 == weekday and minute < window.end:
                    return True
        return False


@st.composite
def week_windows(draw: st.DrawFn) -> tuple[WeeklyWindow, ...]:
    """Non-overlapping windows: pairs of sorted points on the week, rotated at random.

    Repeated points make windows that touch; rotation makes some wrap from Sunday night
    into Monday; lengths up to a full day make overnight windows.
    """
    point = st.one_of(
        st.integers(0, WEEK_MINUTES // 30 - 1).map(lambda x: x * 30), st.integers(0, WEEK_MINUTES - 1)
    )
    points = sorted(draw(st.lists(point, min_size=2, max_size=12)))
    rotation = draw(st.integers(0, WEEK_MINUTES - 1))
    windows = []
    for begin, finish in zip(points[::2], points[1::2], strict=False):
        if finish == begin:
            continue
        start = (begin + rotation) % WEEK_MINUTES
        of_day = start % 1440
        length = min(finish - begin, 1440 if of_day == 0 else 1439)
        end = of_day + length
        windows.append(WeeklyWindow(start // 1440, of_day, end if end <= 1440 else end - 1440))
    if not windows:
        windows.append(WeeklyWindow(draw(st.integers(0, 6)), 0, 1440))
    return tuple(windows)


@dataclass(frozen=True)
class Scenario:
    calendar: BusinessCalendar
    reference: Reference
    start: datetime
    minutes: int

    @property
    def end(self) -> datetime:
        return self.start + self.minutes * MINUTE


@st.composite
def scenarios(draw: st.DrawFn, max_minutes: int = 4 * 1440) -> Scenario:
    zone_name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    candidates = transitions(zone_name)
    if candidates:
        anchor = draw(st.sampled_from(candidates))
    else:
        anchor = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 1000)))
    start = anchor + draw(st.integers(-3 * 1440, 1440)) * MINUTE
    minutes = draw(st.integers(1, max_minutes))
    if draw(st.integers(0, 9)) == 0:
        calendar = BusinessCalendar.always_open(zone_name)
        windows, holidays = calendar.windows, frozenset[date]()
    else:
        windows = draw(week_windows())
        first_day = start.astimezone(zone).date() - timedelta(days=1)
        last_day = (start + minutes * MINUTE).astimezone(zone).date() + timedelta(days=1)
        days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
        holidays = frozenset(draw(st.lists(st.sampled_from(days), max_size=3)))
        calendar = BusinessCalendar(zone_name, windows, holidays)
    return Scenario(calendar, Reference(zone, windows, holidays), start, minutes)


def reference_open_minutes(scenario: Scenario) -> list[bool]:
    return [scenario.reference.is_open(scenario.start + n * MINUTE) for n in range(scenario.minutes)]


@SETTINGS
@given(scenarios(max_minutes=2 * 1440), st.integers(0, 59), st.integers(0, 59))
def test_calendar_matches_reference(scenario: Scenario, head_seconds: int, tail_seconds: int) -> None:
    calendar = scenario.calendar
    opened = reference_open_minutes(scenario)
    for n, expected in enumerate(opened):
        moment = scenario.start + n * MINUTE
        assert calendar.is_open(moment) is expected, moment
        assert calendar.is_open(moment + timedelta(seconds=59, microseconds=999_999)) is expected

    intervals = list(calendar.open_intervals(scenario.start, scenario.end))
    covered = [False] * scenario.minutes
    for a, b in intervals:
        assert a.tzinfo is UTC
        assert scenario.start <= a < b <= scenario.end
        for n in range((a - scenario.start) // MINUTE, (b - scenario.start) // MINUTE):
            covered[n] = True
    assert covered == opened
    for (_, first_end), (second_start, _) in pairwise(intervals):
        assert first_end < second_start  # maximal: touching intervals would have been merged

    # Clip to a span that does not start or end on a minute boundary.
    lo = scenario.start + timedelta(seconds=head_seconds)
    hi = max(scenario.end - timedelta(seconds=tail_seconds), lo)
    expected_time = timedelta(0)
    for n, is_open in enumerate(opened):
        if is_open:
            a = max(scenario.start + n * MINUTE, lo)
            b = min(scenario.start + (n + 1) * MINUTE, hi)
            expected_time += max(b - a, timedelta(0))
    assert calendar.business_time_between(lo, hi) == expected_time
    assert calendar.business_time_between(hi, lo) == -expected_time


@SETTINGS
@given(scenarios(max_minutes=7 * 1440), st.data())
def test_add_business_time_matches_reference(scenario: Scenario, data: st.DataObject) -> None:
    calendar = scenario.calendar
    opened = reference_open_minutes(scenario)
    start = scenario.start + timedelta(seconds=data.draw(st.integers(0, 59)))
    available = sum(
        (
            scenario.start + (n + 1) * MINUTE - max(scenario.start + n * MINUTE, start)
            for n, o in enumerate(opened)
            if o
        ),
        timedelta(0),
    )
    amount = data.draw(st.integers(0, int(available.total_seconds())))

    # Walk minute by minute from `start` until `amount` seconds of open time are used up.
    remaining = timedelta(seconds=amount)
    expected = None
    for n, is_open in enumerate(opened):
        minute_start = max(scenario.start + n * MINUTE, start)
        minute_end = scenario.start + (n + 1) * MINUTE
        if not is_open or minute_end <= start:
            continue
        if remaining == timedelta(0):
            expected = minute_start
            break
        if minute_end - minute_start >= remaining:
            expected = minute_start + remaining
            break
        remaining -= minute_end - minute_start
    if expected is None:
        return  # ran past the generated span; the span-local cases are the interesting ones
    result = calendar.add_business_time(start, timedelta(seconds=amount))
    assert result == expected
    assert calendar.business_time_between(start, result) == timedelta(seconds=amount)


@st.composite
def clock_cases(draw: st.DrawFn) -> tuple[Scenario, Timeline, TargetSpec, datetime]:
    scenario = draw(scenarios(max_minutes=4 * 1440))
    kind: TargetKind = draw(st.sampled_from(["response", "resolution"]))
    pause_states = frozenset(draw(st.sets(st.sampled_from(["new", "assigned", "on_hold"]))))
    if kind == "resolution":
        stop_states = frozenset(
            draw(st.sets(st.sampled_from(["resolved", "closed", "cancelled"]), min_size=1))
        )
    else:
        stop_states = frozenset(draw(st.sets(st.sampled_from(["cancelled"]))))

    def duration() -> timedelta:
        return timedelta(
            minutes=draw(st.integers(1, 3 * 1440)),
            seconds=draw(st.sampled_from([0, 0, 20])),
            microseconds=draw(st.sampled_from([0, 0, 7])),  # thresholds that need rounding
        )

    # Priority changes: a new duration (or none: no such target) from a minute on, some after as_of.
    change_minutes = sorted(draw(st.lists(st.integers(-30, scenario.minutes + 60), max_size=3)))
    changes = tuple(
        (scenario.start + n * MINUTE, duration() if draw(st.integers(0, 4)) else None) for n in change_minutes
    )
    target = TargetSpec(
        name="t",
        duration=duration(),
        kind=kind,
        pause_states=pause_states,
        stop_states=stop_states,
        warning_percents=tuple(draw(st.lists(st.integers(1, 100), unique=True, max_size=3))),
        changes=changes,
    )
    # Events may land after as_of; those must be ignored.
    offsets = sorted(draw(st.lists(st.integers(0, scenario.minutes + 600), max_size=8)))
    states = [(scenario.start, draw(st.sampled_from(STATES)))]
    states += [(scenario.start + n * MINUTE, draw(st.sampled_from(STATES))) for n in offsets]
    responded_at = None
    if draw(st.booleans()):
        responded_at = scenario.start + draw(st.integers(0, scenario.minutes + 600)) * MINUTE
    timeline = Timeline(scenario.start, tuple(states), responded_at)
    return scenario, timeline, target, scenario.end


def state_at(timeline: Timeline, moment: datetime) -> str:
    current = timeline.states[0][1]
    for entered, state in timeline.states:
        if entered <= moment:
            current = state
    return current


US = timedelta(microseconds=1)
MINUTE_US = 60_000_000
# How far past as_of the reference looks for a running clock's due times.
PROJECTION_MINUTES = 21 * 1440


@SETTINGS
@given(clock_cases())
def test_clock_matches_reference(case: tuple[Scenario, Timeline, TargetSpec, datetime]) -> None:
    """Minute by minute, the definitions of sla.clock: counted, paused, outside hours and stopped time; the
    duration in force at each minute (priority changes: counted from the start, reached at the change when
    already exceeded, a breach never erased); then the due times of a running clock, walked on past as_of."""
    scenario, timeline, target, as_of = case
    result = compute_clock(timeline, target, scenario.calendar, as_of)

    def stopped(moment: datetime) -> bool:
        if state_at(timeline, moment) in target.stop_states:
            return True
        return (
            target.kind == "response"
            and timeline.responded_at is not None
            and timeline.responded_at <= moment
        )

    def period(moment: datetime) -> tuple[int, int | None]:
        """(index of the change in force, its duration in microseconds or None)."""
        index, value = -1, target.duration // US
        for i, (at, d) in enumerate(target.changes):
            if at <= moment and at <= as_of:
                index, value = i, (None if d is None else d // US)
        return index, value

    def threshold(d: int, percent: int) -> int:
        return -(-d * percent // 100)

    percents = target.warning_percents
    reached: dict[int, datetime] = {}
    breached_at: datetime | None = None
    period_reach: datetime | None = None
    current_period: int | None = None
    elapsed = paused = outside = 0  # minutes

    def check(moment: datetime, d: int | None) -> None:
        """The clock runs at ``moment``: what counted time already covers is reached."""
        nonlocal period_reach, breached_at
        if d is None:
            return
        for p in percents:
            if p not in reached and elapsed * MINUTE_US >= threshold(d, p):
                reached[p] = moment
        if period_reach is None and elapsed * MINUTE_US >= d:
            period_reach = moment
        if breached_at is None and elapsed * MINUTE_US > d:
            breached_at = period_reach

    def enter(moment: datetime) -> int | None:
        nonlocal current_period, period_reach
        index, d = period(moment)
        if index != current_period:
            current_period, period_reach = index, None
        return d

    for n in range(scenario.minutes):
        moment = scenario.start + n * MINUTE
        state = state_at(timeline, moment)
        d = enter(moment)
        if stopped(moment):
            continue
        check(moment, d)
        if not scenario.reference.is_open(moment):
            outside += 1
        elif state in target.pause_states:
            paused += 1
        else:
            if d is not None:
                before = elapsed * MINUTE_US
                for p in percents:
                    if p not in reached and before < threshold(d, p) <= before + MINUTE_US:
                        reached[p] = moment + (threshold(d, p) - before) * US
                if period_reach is None and before < d <= before + MINUTE_US:
                    period_reach = moment + (d - before) * US
                if breached_at is None and before + MINUTE_US > d:
                    breached_at = period_reach
            elapsed += 1
    final_d = enter(as_of)
    if not stopped(as_of):
        check(as_of, final_d)

    elapsed_td = elapsed * MINUTE
    stopped_at = None
    if stopped(as_of):
        stopped_at = as_of
        while stopped_at > timeline.started_at and stopped(stopped_at - MINUTE):
            stopped_at -= MINUTE
    if breached_at is not None:
        status = "breached"
    elif stopped(as_of):
        status = "met"
    elif state_at(timeline, as_of) in target.pause_states:
        status = "paused"
    else:
        status = "running"
    known = [target.duration // US] + [d // US for at, d in target.changes if d is not None and at <= as_of]
    shown = final_d if final_d is not None else known[-1]

    assert result.elapsed == elapsed_td
    assert result.paused == paused * MINUTE
    assert result.outside_hours == outside * MINUTE
    assert result.status == status
    assert result.applies is (final_d is not None)
    assert result.duration == shown * US
    assert result.remaining == shown * US - elapsed_td
    assert result.stopped_at == stopped_at
    assert result.breached_at == breached_at
    for warning in result.warnings:
        assert warning.reached_at == reached.get(warning.percent)

    # Due times: reached ones as reached; a running clock's walked on past as_of in its final state.
    expected_due: dict[int, datetime | None] = {p: reached.get(p) for p in percents}
    expected_breach_due: datetime | None = breached_at if status == "breached" else None
    walked = True
    if status == "running" and final_d is not None:
        goals = {p: threshold(final_d, p) for p in percents if p not in reached}
        if period_reach is not None:
            expected_breach_due = period_reach
        else:
            goals[100_000] = final_d
        count = elapsed * MINUTE_US
        for n in range(PROJECTION_MINUTES):
            if not goals:
                break
            moment = as_of + n * MINUTE
            if not scenario.reference.is_open(moment):
                continue
            for key, goal in list(goals.items()):
                if count < goal <= count + MINUTE_US:
                    due = moment + (goal - count) * US
                    if key == 100_000:
                        expected_breach_due = due
                    else:
                        expected_due[key] = due
                    del goals[key]
            count += MINUTE_US
        walked = not goals
    if walked:
        assert result.due_at == expected_breach_due
        for warning in result.warnings:
            assert warning.due_at == expected_due[warning.percent]
    assert sum((s.duration for s in result.segments), timedelta(0)) == as_of - timeline.started_at
    for first, second in pairwise(result.segments):
        assert first.end == second.start
        assert (first.kind, first.state) != (second.kind, second.state)
