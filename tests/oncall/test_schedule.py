from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msp_platform.oncall.schedule import (
    OVERRIDE_SOURCE,
    FieldError,
    FinalSchedule,
    Gap,
    Layer,
    Override,
    Restriction,
    ScheduleError,
    Shift,
    TurnLength,
    compute_schedule,
    find_gaps,
    on_call_at,
    validate_layers,
    validate_overrides,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def layer(
    name: str,
    participants: tuple[str, ...] | str,
    start: datetime,
    count: int = 1,
    unit: Any = "weeks",
    timezone: str = "UTC",
    restrictions: tuple[Restriction, ...] = (),
    end: datetime | None = None,
) -> Layer:
    people = tuple(participants) if isinstance(participants, str) else participants
    return Layer(name, people, start, TurnLength(count, unit), timezone, restrictions, end)


def who(schedule: FinalSchedule, at: datetime) -> str | None:
    hits = [s for s in schedule.shifts if s.start <= at < s.end]
    assert len(hits) <= 1
    return hits[0].person if hits else None


def triples(shifts: tuple[Shift, ...]) -> list[tuple[datetime, datetime, str]]:
    return [(s.start, s.end, s.person) for s in shifts]


def assert_well_formed(schedule: FinalSchedule) -> None:
    shifts = schedule.shifts
    for s in shifts:
        assert schedule.start <= s.start < s.end <= schedule.end
        assert s.start.tzinfo is UTC
        assert s.end.tzinfo is UTC
    for a, b in pairwise(shifts):
        assert a.end <= b.start
        assert not (a.end == b.start and a.person == b.person and a.source == b.source), "unmerged"


# --------------------------------------------------------------------------------------------------
# Weekly rotation across DST


@pytest.mark.parametrize(
    ("zone", "short_turn_start", "long_turn_start"),
    [
        # Europe: clocks go forward Sun 31 Mar 2024 and back Sun 27 Oct 2024.
        ("Europe/London", datetime(2024, 3, 25, 9), datetime(2024, 10, 21, 9)),
        # US: clocks go forward Sun 10 Mar 2024 and back Sun 3 Nov 2024.
        ("America/New_York", datetime(2024, 3, 4, 9), datetime(2024, 10, 28, 9)),
    ],
)
def test_twelve_person_weekly_rotation_over_a_year(
    zone: str, short_turn_start: datetime, long_turn_start: datetime
) -> None:
    tz = ZoneInfo(zone)
    people = tuple(f"person-{i:02d}" for i in range(12))
    first = datetime(2024, 1, 1, 9, tzinfo=tz)  # a Monday
    rotation = layer("Primary", people, first, 1, "weeks", zone)
    window_end = datetime(2024, 12, 30, 9, tzinfo=tz)  # exactly 52 local weeks later

    schedule = compute_schedule([rotation], [], first, window_end)
    shifts = schedule.shifts
    assert_well_formed(schedule)
    assert len(shifts) == 52
    assert shifts[0].start == first
    assert shifts[-1].end == window_end

    for s in shifts:
        local_start = s.start.astimezone(tz)
        assert (local_start.weekday(), local_start.hour, local_start.minute) == (0, 9, 0)

    turns_by_person: dict[str, list[Shift]] = defaultdict(list)
    for s in shifts:
        turns_by_person[s.person].append(s)
    assert set(turns_by_person) == set(people)
    # 52 = 4 * 12 + 4: the first four people in rotation order get a fifth turn.
    assert [len(turns_by_person[p]) for p in people] == [5] * 4 + [4] * 8
    for turns in turns_by_person.values():
        for a, b in pairwise(turns):
            # Twelve weeks apart in local wall-clock terms, whatever DST did in between.
            gap = b.start.astimezone(tz).replace(tzinfo=None) - a.start.astimezone(tz).replace(tzinfo=None)
            assert gap == 12 * WEEK

    lengths = {s.start.astimezone(tz).replace(tzinfo=None): s.end - s.start for s in shifts}
    assert lengths[short_turn_start] == timedelta(hours=167)
    assert lengths[long_turn_start] == timedelta(hours=169)
    assert sorted(set(lengths.values())) == [timedelta(hours=h) for h in (167, 168, 169)]


def test_handoff_in_dst_gap_happens_when_clocks_jump_and_ambiguous_uses_first_occurrence() -> None:
    gap_layer = layer(
        "Gap", "AB", datetime(2024, 3, 8, 2, 30, tzinfo=NEW_YORK), 1, "days", "America/New_York"
    )
    schedule = compute_schedule([gap_layer], [], utc(2024, 3, 8), utc(2024, 3, 13))
    starts = [s.start.astimezone(NEW_YORK).replace(tzinfo=None) for s in schedule.shifts]
    # 02:30 does not exist on 10 March; the handoff happens at the jump, 03:00 EDT (07:00 UTC).
    assert starts == [
        datetime(2024, 3, 8, 2, 30),
        datetime(2024, 3, 9, 2, 30),
        datetime(2024, 3, 10, 3, 0),
        datetime(2024, 3, 11, 2, 30),
        datetime(2024, 3, 12, 2, 30),
    ]
    assert schedule.shifts[2].start == utc(2024, 3, 10, 7)
    assert schedule.shifts[1].end - schedule.shifts[1].start == timedelta(hours=23, minutes=30)
    assert schedule.shifts[2].end - schedule.shifts[2].start == timedelta(hours=23, minutes=30)

    fold_layer = layer(
        "Fold", "AB", datetime(2024, 11, 1, 1, 30, tzinfo=NEW_YORK), 1, "days", "America/New_York"
    )
    schedule = compute_schedule([fold_layer], [], utc(2024, 11, 1, 12), utc(2024, 11, 4, 12))
    # 01:30 happens twice on 3 November; the handoff is at the first one (EDT, 05:30 UTC).
    assert [s.start for s in schedule.shifts] == [
        utc(2024, 11, 1, 12),
        utc(2024, 11, 2, 5, 30),
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 4, 6, 30),
    ]


def test_hour_turns_are_real_elapsed_hours_across_dst() -> None:
    rotation = layer("Hourly", "AB", datetime(2024, 3, 30, 8, tzinfo=LONDON), 12, "hours", "Europe/London")
    schedule = compute_schedule([rotation], [], utc(2024, 3, 30, 8), utc(2024, 4, 1, 8))
    assert triples(schedule.shifts) == [
        (utc(2024, 3, 30, 8), utc(2024, 3, 30, 20), "A"),
        (utc(2024, 3, 30, 20), utc(2024, 3, 31, 8), "B"),
        (utc(2024, 3, 31, 8), utc(2024, 3, 31, 20), "A"),  # 09:00 local now: real hours, not wall clock
        (utc(2024, 3, 31, 20), utc(2024, 4, 1, 8), "B"),
    ]


def test_layer_is_empty_before_start_and_after_end_and_window_clips() -> None:
    rotation = layer("L", "AB", utc(2024, 1, 1, 9), 1, "days", end=utc(2024, 1, 3, 12))
    schedule = compute_schedule([rotation], [], utc(2024, 1, 1, 6), utc(2024, 1, 5))
    assert triples(schedule.shifts) == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 2, 9), "A"),
        (utc(2024, 1, 2, 9), utc(2024, 1, 3, 9), "B"),
        (utc(2024, 1, 3, 9), utc(2024, 1, 3, 12), "A"),
    ]
    # A window starting mid-rotation picks up whoever's turn it is (turn 1 -> B), clipped to the window.
    clipped = compute_schedule([rotation], [], utc(2024, 1, 2, 18), utc(2024, 1, 3, 10))
    assert triples(clipped.shifts) == [
        (utc(2024, 1, 2, 18), utc(2024, 1, 3, 9), "B"),
        (utc(2024, 1, 3, 9), utc(2024, 1, 3, 10), "A"),
    ]
    assert compute_schedule([rotation], [], utc(2024, 1, 2), utc(2024, 1, 2)).shifts == ()


def test_single_participant_turns_merge_into_one_shift() -> None:
    schedule = compute_schedule(
        [layer("Solo", ("A",), utc(2024, 1, 1), 1, "days")], [], utc(2024, 1, 1), utc(2024, 2, 1)
    )
    assert triples(schedule.shifts) == [(utc(2024, 1, 1), utc(2024, 2, 1), "A")]
    assert triples(schedule.rendered_layers[0].shifts) == [(utc(2024, 1, 1), utc(2024, 2, 1), "A")]


# --------------------------------------------------------------------------------------------------
# Restrictions and layer precedence

NIGHTS = Restriction.daily(time(18), time(8))
WEEKEND = Restriction.weekly(5, time(0), 0, time(0))  # Saturday 00:00 -> Monday 00:00


def nights_and_weekends() -> list[Layer]:
    return [
        layer(
            "Nights", "ABC", datetime(2024, 1, 1, 18, tzinfo=LONDON), 1, "days", "Europe/London", (NIGHTS,)
        ),
        layer(
            "Weekend",
            ("W1", "W2"),
            datetime(2024, 1, 6, 0, tzinfo=LONDON),
            1,
            "weeks",
            "Europe/London",
            (WEEKEND,),
        ),
    ]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 1, 1, 10), None),  # before the Nights layer starts
        (utc(2024, 1, 1, 20), "A"),
        (utc(2024, 1, 2, 7, 59), "A"),
        (utc(2024, 1, 2, 8), None),  # daytime is masked
        (utc(2024, 1, 2, 12), None),
        (utc(2024, 1, 2, 18), "B"),
        (utc(2024, 1, 3, 23), "C"),
        (utc(2024, 1, 4, 3), "C"),
        (utc(2024, 1, 4, 22), "A"),
        (utc(2024, 1, 5, 23, 59), "B"),
        (utc(2024, 1, 6, 0), "W1"),  # weekend layer is on top of Friday night's B
        (utc(2024, 1, 6, 12), "W1"),
        (utc(2024, 1, 7, 20), "W1"),  # Sunday night: Nights has A, but Weekend wins
        (utc(2024, 1, 8, 0), "A"),  # Sunday 18:00 was turn 6 -> A, visible once the weekend ends
        (utc(2024, 1, 8, 7), "A"),
        (utc(2024, 1, 8, 8), None),
        (utc(2024, 1, 13, 10), "W2"),
    ],
)
def test_nights_with_weekend_layer_on_top(at: datetime, expected: str | None) -> None:
    layers = nights_and_weekends()
    schedule = compute_schedule(layers, [], utc(2024, 1, 1), utc(2024, 1, 20))
    assert who(schedule, at) == expected
    found = on_call_at(layers, [], at)
    assert (found.person if found else None) == expected


def test_nights_with_weekend_exact_shifts_around_first_weekend() -> None:
    schedule = compute_schedule(nights_and_weekends(), [], utc(2024, 1, 5, 12), utc(2024, 1, 8, 12))
    assert [(s.start, s.end, s.person, s.source) for s in schedule.shifts] == [
        (utc(2024, 1, 5, 18), utc(2024, 1, 6), "B", "Nights"),
        (utc(2024, 1, 6), utc(2024, 1, 8), "W1", "Weekend"),
        (utc(2024, 1, 8), utc(2024, 1, 8, 8), "A", "Nights"),
    ]
    nights, weekend = schedule.rendered_layers
    assert nights.name == "Nights"
    assert triples(nights.shifts) == [
        (utc(2024, 1, 5, 18), utc(2024, 1, 6, 8), "B"),
        (utc(2024, 1, 6, 18), utc(2024, 1, 7, 8), "C"),
        (utc(2024, 1, 7, 18), utc(2024, 1, 8, 8), "A"),
    ]
    assert triples(weekend.shifts) == [(utc(2024, 1, 6), utc(2024, 1, 8), "W1")]


def test_restriction_windows_follow_local_time_across_dst() -> None:
    nights = nights_and_weekends()[0]
    schedule = compute_schedule([nights], [], utc(2024, 3, 30, 12), utc(2024, 4, 1, 12))
    # Saturday night 18:00 GMT -> Sunday 08:00 BST is 13 real hours; Sunday night is a normal 14.
    assert [(s.start, s.end) for s in schedule.shifts] == [
        (utc(2024, 3, 30, 18), utc(2024, 3, 31, 7)),
        (utc(2024, 3, 31, 17), utc(2024, 4, 1, 7)),
    ]


def test_restrictions_are_a_union_and_do_not_change_whose_turn_it_is() -> None:
    mornings = Restriction.daily(time(6), time(9))
    evenings = Restriction.daily(time(8), time(12))  # overlaps mornings: union is 06:00-12:00
    rotation = layer("L", "AB", utc(2024, 1, 1, 10), 1, "days", restrictions=(mornings, evenings))
    schedule = compute_schedule([rotation], [], utc(2024, 1, 1), utc(2024, 1, 3))
    assert triples(schedule.shifts) == [
        (utc(2024, 1, 1, 10), utc(2024, 1, 1, 12), "A"),
        (utc(2024, 1, 2, 6), utc(2024, 1, 2, 10), "A"),  # A's turn runs until the 10:00 handoff
        (utc(2024, 1, 2, 10), utc(2024, 1, 2, 12), "B"),
    ]


def test_top_layer_wins_only_where_it_has_someone() -> None:
    base = layer("Base", ("A",), utc(2024, 1, 1), 1, "weeks")
    top = layer(
        "Top", ("T",), utc(2024, 1, 1), 1, "weeks", restrictions=(Restriction.daily(time(9), time(17)),)
    )
    schedule = compute_schedule([base, top], [], utc(2024, 1, 1), utc(2024, 1, 2, 12))
    assert [(s.start, s.end, s.person, s.source) for s in schedule.shifts] == [
        (utc(2024, 1, 1), utc(2024, 1, 1, 9), "A", "Base"),
        (utc(2024, 1, 1, 9), utc(2024, 1, 1, 17), "T", "Top"),
        (utc(2024, 1, 1, 17), utc(2024, 1, 2, 9), "A", "Base"),
        (utc(2024, 1, 2, 9), utc(2024, 1, 2, 12), "T", "Top"),
    ]
    # Same layers, other order: the 24x7 layer on top hides the other completely.
    reordered = compute_schedule([top, base], [], utc(2024, 1, 1), utc(2024, 1, 2, 12))
    assert triples(reordered.shifts) == [(utc(2024, 1, 1), utc(2024, 1, 2, 12), "A")]


# --------------------------------------------------------------------------------------------------
# Overrides

WEEKLY_AB = layer("Primary", "AB", utc(2024, 1, 1, 9), 1, "weeks")  # Mondays 09:00 UTC


def test_vacation_override_splits_a_turn() -> None:
    vacation = Override("X", utc(2024, 1, 3), utc(2024, 1, 5))
    schedule = compute_schedule([WEEKLY_AB], [vacation], utc(2024, 1, 1, 9), utc(2024, 1, 15, 9))
    assert [(s.start, s.end, s.person, s.source) for s in schedule.shifts] == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 3), "A", "Primary"),
        (utc(2024, 1, 3), utc(2024, 1, 5), "X", OVERRIDE_SOURCE),
        (utc(2024, 1, 5), utc(2024, 1, 8, 9), "A", "Primary"),
        (utc(2024, 1, 8, 9), utc(2024, 1, 15, 9), "B", "Primary"),
    ]
    # The layer itself is unaffected; overrides are reported separately.
    assert triples(schedule.rendered_layers[0].shifts) == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 8, 9), "A"),
        (utc(2024, 1, 8, 9), utc(2024, 1, 15, 9), "B"),
    ]
    assert triples(schedule.rendered_overrides) == [(utc(2024, 1, 3), utc(2024, 1, 5), "X")]


def test_override_crossing_a_handoff() -> None:
    swap = Override("X", utc(2024, 1, 7, 12), utc(2024, 1, 8, 12))
    schedule = compute_schedule([WEEKLY_AB], [swap], utc(2024, 1, 1, 9), utc(2024, 1, 15, 9))
    assert triples(schedule.shifts) == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 7, 12), "A"),
        (utc(2024, 1, 7, 12), utc(2024, 1, 8, 12), "X"),
        (utc(2024, 1, 8, 12), utc(2024, 1, 15, 9), "B"),
    ]


def test_override_fills_a_gap_and_beats_every_layer() -> None:
    rotation = layer(
        "Days", "AB", utc(2024, 1, 1, 9), 1, "days", restrictions=(Restriction.daily(time(9), time(17)),)
    )
    override = Override("X", utc(2024, 1, 1, 16), utc(2024, 1, 1, 20))
    schedule = compute_schedule([rotation], [override], utc(2024, 1, 1, 9), utc(2024, 1, 2))
    assert triples(schedule.shifts) == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 1, 16), "A"),
        (utc(2024, 1, 1, 16), utc(2024, 1, 1, 20), "X"),
    ]


def test_overlapping_overrides_of_different_people_last_created_wins() -> None:
    early = Override("X", utc(2024, 1, 2), utc(2024, 1, 4))
    late = Override("Y", utc(2024, 1, 3), utc(2024, 1, 3, 12))
    window = (utc(2024, 1, 1, 9), utc(2024, 1, 8, 9))

    schedule = compute_schedule([WEEKLY_AB], [early, late], *window)
    assert triples(schedule.shifts) == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 2), "A"),
        (utc(2024, 1, 2), utc(2024, 1, 3), "X"),
        (utc(2024, 1, 3), utc(2024, 1, 3, 12), "Y"),
        (utc(2024, 1, 3, 12), utc(2024, 1, 4), "X"),
        (utc(2024, 1, 4), utc(2024, 1, 8, 9), "A"),
    ]
    assert triples(schedule.rendered_overrides) == triples(schedule.shifts)[1:4]

    # Created the other way round, the long override hides the short one entirely.
    reversed_order = compute_schedule([WEEKLY_AB], [late, early], *window)
    assert triples(reversed_order.shifts) == [
        (utc(2024, 1, 1, 9), utc(2024, 1, 2), "A"),
        (utc(2024, 1, 2), utc(2024, 1, 4), "X"),
        (utc(2024, 1, 4), utc(2024, 1, 8, 9), "A"),
    ]


def test_back_to_back_overrides_of_one_person_are_allowed_and_merged() -> None:
    first = Override("X", utc(2024, 1, 2), utc(2024, 1, 3))
    second = Override("X", utc(2024, 1, 3), utc(2024, 1, 4))
    validate_overrides([first, second])
    schedule = compute_schedule([WEEKLY_AB], [first, second], utc(2024, 1, 1, 9), utc(2024, 1, 5))
    assert (utc(2024, 1, 2), utc(2024, 1, 4), "X") in triples(schedule.shifts)


def test_overlapping_overrides_for_one_person_are_rejected() -> None:
    overrides = [
        Override("X", utc(2024, 1, 2), utc(2024, 1, 4)),
        Override("Y", utc(2024, 1, 2), utc(2024, 1, 4)),
        Override("X", utc(2024, 1, 3), utc(2024, 1, 5)),
    ]
    with pytest.raises(ScheduleError) as excinfo:
        validate_overrides(overrides)
    assert excinfo.value.errors == [
        {
            "field": "overrides[2]",
            "message": "Overrides for 'X' overlap: 2024-01-03 00:00 UTC to 2024-01-05 00:00 UTC and "
            "2024-01-02 00:00 UTC to 2024-01-04 00:00 UTC. Merge them or change the times.",
        }
    ]
    with pytest.raises(ScheduleError):
        compute_schedule([WEEKLY_AB], overrides, utc(2024, 1, 1), utc(2024, 1, 8))


def test_override_nested_inside_an_earlier_long_one_is_rejected() -> None:
    overrides = [
        Override("X", utc(2024, 1, 1), utc(2024, 1, 10)),
        Override("X", utc(2024, 1, 2), utc(2024, 1, 3)),
        Override("X", utc(2024, 1, 5), utc(2024, 1, 6)),
    ]
    with pytest.raises(ScheduleError) as excinfo:
        validate_overrides(overrides)
    assert [e["field"] for e in excinfo.value.errors] == ["overrides[1]", "overrides[2]"]


# --------------------------------------------------------------------------------------------------
# Gaps


def test_business_hours_layer_leaves_nights_as_gaps() -> None:
    business = layer(
        "Business hours",
        "AB",
        datetime(2024, 1, 8, 9, tzinfo=NEW_YORK),
        1,
        "days",
        "America/New_York",
        (Restriction.daily(time(9), time(17)),),
    )
    start, end = datetime(2024, 1, 8, tzinfo=NEW_YORK), datetime(2024, 1, 11, tzinfo=NEW_YORK)
    gaps = find_gaps([business], [], start, end)
    # New York is UTC-5 in January.
    assert gaps == (
        Gap(utc(2024, 1, 8, 5), utc(2024, 1, 8, 14)),
        Gap(utc(2024, 1, 8, 22), utc(2024, 1, 9, 14)),
        Gap(utc(2024, 1, 9, 22), utc(2024, 1, 10, 14)),
        Gap(utc(2024, 1, 10, 22), utc(2024, 1, 11, 5)),
    )
    schedule = compute_schedule([business], [], start, end)
    covered = sum((s.end - s.start for s in schedule.shifts), timedelta())
    uncovered = sum((g.end - g.start for g in gaps), timedelta())
    assert covered == timedelta(hours=24)
    assert covered + uncovered == end - start
    for g in gaps:
        assert on_call_at([business], [], g.start) is None
        assert on_call_at([business], [], g.end - timedelta(seconds=1)) is None


def test_full_coverage_rotation_has_no_gaps() -> None:
    layers = [
        layer(
            "Primary",
            tuple("ABCDEFGHIJKL"),
            datetime(2024, 1, 1, 9, tzinfo=LONDON),
            1,
            "weeks",
            "Europe/London",
        ),
        *nights_and_weekends(),
    ]
    assert find_gaps(layers, [], utc(2024, 1, 1, 9), utc(2025, 1, 1)) == ()
    # Without the 24x7 layer, daytimes on weekdays are uncovered.
    assert find_gaps(layers[1:], [], utc(2024, 1, 8), utc(2024, 1, 9)) == (
        Gap(utc(2024, 1, 8, 8), utc(2024, 1, 8, 18)),
    )


def test_gaps_at_the_edges_of_the_window_and_empty_input() -> None:
    assert find_gaps([], [], utc(2024, 1, 1), utc(2024, 1, 2)) == (Gap(utc(2024, 1, 1), utc(2024, 1, 2)),)
    rotation = layer("L", "A", utc(2024, 1, 1, 6), end=utc(2024, 1, 1, 18))
    assert find_gaps([rotation], [], utc(2024, 1, 1), utc(2024, 1, 2)) == (
        Gap(utc(2024, 1, 1), utc(2024, 1, 1, 6)),
        Gap(utc(2024, 1, 1, 18), utc(2024, 1, 2)),
    )


# --------------------------------------------------------------------------------------------------
# on_call_at


def test_on_call_at_reports_the_whole_merged_shift() -> None:
    found = on_call_at([WEEKLY_AB], [], utc(2024, 1, 10, 3))
    assert found == Shift(utc(2024, 1, 8, 9), utc(2024, 1, 15, 9), "B", "Primary")
    assert on_call_at([WEEKLY_AB], [], utc(2024, 1, 1, 8, 59)) is None
    # Half-open intervals: the handoff instant belongs to the incoming person.
    handoff = on_call_at([WEEKLY_AB], [], utc(2024, 1, 8, 9))
    assert handoff is not None
    assert handoff.person == "B"


def test_on_call_at_clips_unbounded_shifts_at_the_horizon() -> None:
    solo = layer("Solo", ("A",), utc(2020, 1, 1), 1, "weeks")
    at = utc(2024, 6, 1)
    found = on_call_at([solo], [], at, horizon=timedelta(days=30))
    assert found == Shift(at - timedelta(days=30), at + timedelta(days=30), "A", "Solo")
    near_start = on_call_at([solo], [], utc(2020, 1, 3), horizon=timedelta(days=30))
    assert near_start is not None
    assert near_start.start == utc(2020, 1, 1)


LAYERS_3 = [
    layer(
        "Primary",
        tuple(f"p{i}" for i in range(12)),
        datetime(2024, 1, 1, 9, tzinfo=LONDON),
        1,
        "weeks",
        "Europe/London",
    ),
    layer(
        "Nights",
        tuple(f"n{i}" for i in range(5)),
        datetime(2024, 1, 1, 18, tzinfo=LONDON),
        1,
        "days",
        "Europe/London",
        (NIGHTS,),
    ),
    layer(
        "Weekend",
        ("w0", "w1", "w2"),
        datetime(2024, 1, 6, 0, tzinfo=NEW_YORK),
        12,
        "hours",
        "America/New_York",
        (WEEKEND,),
        end=utc(2024, 11, 1),
    ),
]
OVERRIDES_3 = [
    Override("vacation-cover", utc(2024, 3, 3), utc(2024, 3, 10)),
    Override("swap", utc(2024, 3, 8, 12), utc(2024, 3, 12, 7, 30)),
    Override("vacation-cover", utc(2024, 10, 26, 22), utc(2024, 10, 28, 3)),
]
YEAR = (utc(2024, 1, 1), utc(2025, 1, 1))
YEAR_SCHEDULE = compute_schedule(LAYERS_3, OVERRIDES_3, *YEAR)
YEAR_SECONDS = int((YEAR[1] - YEAR[0]).total_seconds())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(min_value=0, max_value=YEAR_SECONDS - 1))
def test_on_call_at_agrees_with_compute_schedule(offset: int) -> None:
    at = YEAR[0] + timedelta(seconds=offset)
    expected = [s for s in YEAR_SCHEDULE.shifts if s.start <= at < s.end]
    found = on_call_at(LAYERS_3, OVERRIDES_3, at)
    if not expected:
        assert found is None
        return
    assert found is not None
    clipped = Shift(max(found.start, YEAR[0]), min(found.end, YEAR[1]), found.person, found.source)
    assert clipped == expected[0]


def test_on_call_at_agrees_at_every_boundary() -> None:
    for s in YEAR_SCHEDULE.shifts[:200]:
        for at in (s.start, s.end - timedelta(microseconds=1)):
            found = on_call_at(LAYERS_3, OVERRIDES_3, at)
            assert found is not None
            assert (found.person, found.source) == (s.person, s.source)


ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]


@st.composite
def random_layers(draw: st.DrawFn) -> list[Layer]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        zone = draw(st.sampled_from(ZONES))
        tz = ZoneInfo(zone)
        start = datetime(2024, 1, 15, tzinfo=tz) + timedelta(minutes=draw(st.integers(0, 60 * 24 * 60)))
        restrictions: list[Restriction] = []
        if draw(st.booleans()):
            restrictions.append(
                Restriction.daily(time(draw(st.integers(0, 23))), time(draw(st.integers(0, 23))))
            )
        if draw(st.booleans()):
            restrictions.append(
                Restriction.weekly(
                    draw(st.integers(0, 6)), time(draw(st.integers(0, 23))), draw(st.integers(0, 6)), time(1)
                )
            )
        restrictions = [
            r for r in restrictions if (r.start_time, r.start_weekday) != (r.end_time, r.end_weekday)
        ]
        out.append(
            layer(
                f"L{i}",
                tuple(f"u{k}" for k in range(draw(st.integers(1, 4)))),
                start,
                draw(st.integers(1, 3)),
                draw(st.sampled_from(["hours", "days", "weeks"])),
                zone,
                tuple(restrictions),
            )
        )
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=random_layers(),
    cut=st.integers(1, 60 * 24 * 100),
    probes=st.lists(st.integers(0, 60 * 24 * 105), max_size=5),
)
def test_schedules_do_not_depend_on_the_window(layers: list[Layer], cut: int, probes: list[int]) -> None:
    # Spans the northern spring-forward and Sydney's autumn fall-back.
    start, end = utc(2024, 2, 1), utc(2024, 5, 15)
    whole = compute_schedule(layers, [], start, end)
    assert_well_formed(whole)
    middle = start + timedelta(minutes=cut)
    halves = (
        compute_schedule(layers, [], start, middle).shifts + compute_schedule(layers, [], middle, end).shifts
    )
    # Computing in two pieces and gluing at the cut gives the same schedule.
    glued: list[Shift] = []
    for s in halves:
        if (
            glued
            and glued[-1].end == s.start
            and (glued[-1].person, glued[-1].source) == (s.person, s.source)
        ):
            glued[-1] = Shift(glued[-1].start, s.end, s.person, s.source)
        else:
            glued.append(s)
    assert tuple(glued) == whole.shifts
    for minutes in probes:
        at = start + timedelta(minutes=minutes)
        if at >= end:
            continue
        expected = [(s.person, s.source) for s in whole.shifts if s.start <= at < s.end]
        found = on_call_at(layers, [], at)
        assert ([(found.person, found.source)] if found else []) == expected


# --------------------------------------------------------------------------------------------------
# Validation


def layer_errors(candidate: Layer) -> list[FieldError]:
    with pytest.raises(ScheduleError) as excinfo:
        validate_layers([candidate])
    return excinfo.value.errors


def test_valid_layers_and_overrides_pass() -> None:
    validate_layers(LAYERS_3)
    validate_overrides(OVERRIDES_3)


def test_layer_without_participants() -> None:
    assert layer_errors(layer("Primary", (), utc(2024, 1, 1))) == [
        {
            "field": "layers[0].participants",
            "message": "Layer 'Primary' has no participants; add at least one person.",
        }
    ]


@pytest.mark.parametrize("count", [0, -2])
def test_turn_length_must_be_positive(count: int) -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), count, "days"))
    assert errors == [
        {
            "field": "layers[0].turn_length.count",
            "message": f"Layer 'Primary': turn length must be a whole number greater than zero, got {count}.",
        }
    ]


def test_turn_length_unit_must_be_known() -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), 1, "fortnights"))
    assert errors[0]["field"] == "layers[0].turn_length.unit"
    assert "hours, days or weeks" in errors[0]["message"]


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd", "localtime", "Europe/London "])
def test_unknown_time_zone(zone: str) -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), timezone=zone))
    assert errors == [
        {
            "field": "layers[0].timezone",
            "message": f"Layer 'Primary': unknown time zone {zone!r}; "
            "use an IANA name such as 'Europe/London'.",
        }
    ]


@pytest.mark.parametrize(
    ("restriction", "message"),
    [
        (
            Restriction.daily(time(9), time(9)),
            "Restriction starts and ends at 09:00, so it has no length. "
            "Remove the restriction if the layer should always be active.",
        ),
        (
            Restriction.weekly(2, time(9, 30), 2, time(9, 30)),
            "Restriction starts and ends on Wednesday at 09:30, so it has no length. "
            "Remove the restriction if the layer should always be active.",
        ),
    ],
)
def test_zero_length_restriction(restriction: Restriction, message: str) -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), restrictions=(restriction,)))
    assert errors == [{"field": "layers[0].restrictions[0]", "message": message}]


@pytest.mark.parametrize(
    ("restriction", "field"),
    [
        (Restriction.weekly(7, time(9), 1, time(9)), "start_weekday"),
        (Restriction.weekly(1, time(9), -1, time(9)), "end_weekday"),
        (Restriction("weekly", time(9), time(17)), "start_weekday"),
        (Restriction.weekly(True, time(9), 1, time(17)), "start_weekday"),
    ],
)
def test_bad_restriction_weekday(restriction: Restriction, field: str) -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), restrictions=(restriction,)))
    assert errors[0]["field"] == f"layers[0].restrictions[0].{field}"
    assert "must be a weekday from 0 (Monday) to 6 (Sunday)" in errors[0]["message"]


@pytest.mark.parametrize(
    ("restriction", "field"),
    [
        (Restriction.daily(time(18, tzinfo=UTC), time(8)), "start_time"),
        (Restriction.daily(time(18), "08:00"), "end_time"),  # type: ignore[arg-type]
        (Restriction.weekly(1, 9, 2, time(9)), "start_time"),  # type: ignore[arg-type]
    ],
)
def test_bad_restriction_time(restriction: Restriction, field: str) -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), restrictions=(restriction,)))
    assert errors == [
        {
            "field": f"layers[0].restrictions[0].{field}",
            "message": f"Restriction {field.split('_')[0]} time must be a time of day such as 18:00, "
            "without a time zone (the layer's time zone applies).",
        }
    ]


def test_bad_restriction_kind_and_daily_with_weekdays() -> None:
    bad_kind = Restriction("monthly", time(9), time(17))  # type: ignore[arg-type]
    daily_with_days = Restriction("daily", time(9), time(17), 1, 2)
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), restrictions=(bad_kind, daily_with_days)))
    assert [e["field"] for e in errors] == [
        "layers[0].restrictions[0].kind",
        "layers[0].restrictions[1].start_weekday",
        "layers[0].restrictions[1].end_weekday",
    ]


@pytest.mark.parametrize("end", [utc(2024, 1, 1), utc(2023, 12, 31)])
def test_layer_end_must_be_after_start(end: datetime) -> None:
    errors = layer_errors(layer("Primary", "AB", utc(2024, 1, 1), end=end))
    assert errors == [
        {
            "field": "layers[0].end",
            "message": f"Layer 'Primary': end ({end:%Y-%m-%d %H:%M} UTC) must be after "
            "the start (2024-01-01 00:00 UTC).",
        }
    ]


def test_naive_datetimes_are_rejected() -> None:
    errors = layer_errors(layer("Primary", "AB", datetime(2024, 1, 1)))
    assert errors[0]["field"] == "layers[0].start"
    with pytest.raises(ScheduleError) as excinfo:
        compute_schedule([], [], datetime(2024, 1, 1), utc(2024, 1, 2))
    assert excinfo.value.errors[0]["field"] == "start"
    with pytest.raises(ScheduleError):
        validate_overrides([Override("X", datetime(2024, 1, 1), utc(2024, 1, 2))])


def test_layer_names_must_be_unique_and_not_reserved() -> None:
    with pytest.raises(ScheduleError) as excinfo:
        validate_layers(
            [
                WEEKLY_AB,
                WEEKLY_AB,
                layer(OVERRIDE_SOURCE, "A", utc(2024, 1, 1)),
                layer(" ", "A", utc(2024, 1, 1)),
            ]
        )
    assert [e["field"] for e in excinfo.value.errors] == [
        "layers[1].name",
        "layers[2].name",
        "layers[3].name",
    ]


def test_all_problems_are_reported_at_once() -> None:
    broken = layer("Broken", (), utc(2024, 1, 1), 0, "days", "Nowhere/Special", end=utc(2023, 1, 1))
    with pytest.raises(ScheduleError) as excinfo:
        validate_layers([WEEKLY_AB, broken])
    assert [e["field"] for e in excinfo.value.errors] == [
        "layers[1].participants",
        "layers[1].turn_length.count",
        "layers[1].timezone",
        "layers[1].end",
    ]
    assert "layers[1].participants: Layer 'Broken' has no participants" in str(excinfo.value)


@pytest.mark.parametrize("end", [utc(2024, 1, 2), utc(2024, 1, 1)])
def test_override_end_must_be_after_start(end: datetime) -> None:
    with pytest.raises(ScheduleError) as excinfo:
        validate_overrides([Override("X", utc(2024, 1, 2), end)])
    assert excinfo.value.errors == [
        {
            "field": "overrides[0].end",
            "message": f"Override end ({end:%Y-%m-%d %H:%M} UTC) must be after "
            "its start (2024-01-02 00:00 UTC).",
        }
    ]


def test_window_end_before_start_is_rejected() -> None:
    with pytest.raises(ScheduleError) as excinfo:
        compute_schedule([WEEKLY_AB], [], utc(2024, 1, 2), utc(2024, 1, 1))
    assert excinfo.value.errors[0]["field"] == "end"


# --------------------------------------------------------------------------------------------------
# Brute-force oracle. In zones without DST wall-clock and real time agree, so "whose turn" and "inside a
# restriction" can be evaluated directly per instant, independently of the interval machinery.


def _restriction_active(r: Restriction, local: datetime) -> bool:
    def minutes(weekday: int, t: time) -> int:
        return weekday * 1440 + t.hour * 60 + t.minute

    if r.kind == "daily":
        now, lo, hi, span = minutes(0, local.time()), minutes(0, r.start_time), minutes(0, r.end_time), 1440
    else:
        assert r.start_weekday is not None
        assert r.end_weekday is not None
        now = minutes(local.weekday(), local.time())
        lo, hi, span = minutes(r.start_weekday, r.start_time), minutes(r.end_weekday, r.end_time), 7 * 1440
    return (now - lo) % span < (hi - lo) % span


def _oracle(layers: list[Layer], overrides: list[Override], at: datetime) -> tuple[str, str] | None:
    for o in reversed(overrides):
        if o.start <= at < o.end:
            return (o.person, OVERRIDE_SOURCE)
    for lay in reversed(layers):
        if at < lay.start or (lay.end is not None and at >= lay.end):
            continue
        local = at.astimezone(ZoneInfo(lay.timezone)).replace(tzinfo=None)
        if lay.restrictions and not any(_restriction_active(r, local) for r in lay.restrictions):
            continue
        step = {"hours": HOUR, "days": DAY, "weeks": WEEK}[lay.turn_length.unit] * lay.turn_length.count
        k = (at - lay.start) // step
        return (lay.participants[k % len(lay.participants)], lay.name)
    return None


@st.composite
def fixed_offset_layers(draw: st.DrawFn) -> tuple[list[Layer], list[Override]]:
    layers = [
        Layer(
            lay.name,
            lay.participants,
            lay.start.replace(tzinfo=None).replace(tzinfo=UTC),
            lay.turn_length,
            draw(st.sampled_from(["UTC", "Asia/Kolkata", "Asia/Tokyo"])),
            lay.restrictions,
            draw(st.none() | st.just(utc(2024, 3, 20))),
        )
        for lay in draw(random_layers())
    ]
    overrides = []
    for i in range(draw(st.integers(0, 3))):
        s = utc(2024, 3, 1) + timedelta(minutes=draw(st.integers(0, 60 * 24 * 20)))
        overrides.append(Override(f"o{i}", s, s + timedelta(minutes=draw(st.integers(1, 60 * 24 * 3)))))
    return layers, overrides


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fixed_offset_layers())
def test_matches_brute_force_oracle(case: tuple[list[Layer], list[Override]]) -> None:
    layers, overrides = case
    start, end = utc(2024, 3, 1), utc(2024, 3, 22)
    schedule = compute_schedule(layers, overrides, start, end)
    probes = [start + timedelta(minutes=m) for m in range(0, 21 * 24 * 60, 53)]
    probes += [t for s in schedule.shifts for t in (s.start, s.end - timedelta(microseconds=1))]
    for at in probes:
        found = [(s.person, s.source) for s in schedule.shifts if s.start <= at < s.end]
        assert (found[0] if found else None) == _oracle(layers, overrides, at), at
