from datetime import UTC, datetime, timedelta

import pytest

from msp_platform.kit.calendar import BusinessCalendar, parse_calendar
from msp_platform.sla.clock import (
    ClockResult,
    MissedUpdate,
    Segment,
    TargetSpec,
    Timeline,
    WarningThreshold,
    compute_clock,
    compute_update_cadence,
)

# Mon-Fri 09:00-17:00 UTC; 2025-03-03 is a Monday.
OFFICE = parse_calendar("UTC", [{"weekday": d, "start": "09:00", "end": "17:00"} for d in range(5)])
STOP = frozenset({"resolved", "closed", "cancelled"})
RESOLUTION = TargetSpec(
    name="resolution",
    duration=timedelta(hours=8),
    kind="resolution",
    pause_states=frozenset({"on_hold"}),
    stop_states=STOP,
)
RESPONSE = TargetSpec(name="response", duration=timedelta(hours=1), kind="response")
H = timedelta(hours=1)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


def timeline(*states: tuple[datetime, str], responded_at: datetime | None = None) -> Timeline:
    return Timeline(states[0][0], states, responded_at)


def check_segments(result: ClockResult, started_at: datetime) -> None:
    assert sum((s.duration for s in result.segments), timedelta(0)) == result.as_of - started_at
    counted = sum((s.duration for s in result.segments if s.kind == "counted"), timedelta(0))
    assert counted == result.elapsed


class TestPauses:
    def test_on_hold_during_hours(self) -> None:
        events = timeline((at(3, 9), "new"), (at(3, 10), "on_hold"), (at(3, 12), "in_progress"))
        result = compute_clock(events, RESOLUTION, OFFICE, at(3, 14))
        assert (result.status, result.elapsed, result.paused, result.outside_hours) == (
            "running",
            3 * H,
            2 * H,
            0 * H,
        )
        assert result.remaining == 5 * H
        assert result.due_at == at(4, 11)  # 3h left on Monday, 2h on Tuesday
        assert result.segments == (
            Segment(at(3, 9), at(3, 10), "counted", "new"),
            Segment(at(3, 10), at(3, 12), "paused", "on_hold"),
            Segment(at(3, 12), at(3, 14), "counted", "in_progress"),
        )

    def test_pause_spanning_a_closed_night(self) -> None:
        events = timeline((at(3, 9), "in_progress"), (at(3, 16), "on_hold"), (at(4, 10), "in_progress"))
        result = compute_clock(events, RESOLUTION, OFFICE, at(4, 12))
        assert result.elapsed == 9 * H
        assert result.paused == 2 * H  # 16-17 Monday and 09-10 Tuesday
        assert result.outside_hours == 16 * H
        assert result.status == "breached"
        assert result.breached_at == result.due_at == at(4, 11)
        assert result.segments == (
            Segment(at(3, 9), at(3, 16), "counted", "in_progress"),
            Segment(at(3, 16), at(3, 17), "paused", "on_hold"),
            Segment(at(3, 17), at(4, 9), "outside_hours", "on_hold"),
            Segment(at(4, 9), at(4, 10), "paused", "on_hold"),
            Segment(at(4, 10), at(4, 12), "counted", "in_progress"),
        )

    def test_paused_at_as_of_has_no_due_date(self) -> None:
        events = timeline((at(3, 9), "new"), (at(3, 10), "on_hold"))
        result = compute_clock(events, RESOLUTION, OFFICE, at(3, 11))
        assert (result.status, result.due_at, result.elapsed) == ("paused", None, 1 * H)


class TestStopAndReopen:
    events = timeline(
        (at(3, 9), "new"),
        (at(3, 12), "resolved"),
        (at(3, 15), "in_progress"),
        (at(4, 10), "resolved"),
        (at(4, 11), "closed"),
    )

    def test_final_outcome_uses_last_stop(self) -> None:
        result = compute_clock(self.events, RESOLUTION, OFFICE, at(4, 12))
        assert (result.status, result.elapsed, result.stopped_at, result.due_at) == (
            "met",
            6 * H,
            at(4, 10),
            None,
        )
        check_segments(result, at(3, 9))

    def test_met_while_resolved_then_running_after_reopen(self) -> None:
        resolved = compute_clock(self.events, RESOLUTION, OFFICE, at(3, 13))
        assert (resolved.status, resolved.stopped_at, resolved.elapsed) == ("met", at(3, 12), 3 * H)
        reopened = compute_clock(self.events, RESOLUTION, OFFICE, at(3, 16))
        assert (reopened.status, reopened.stopped_at, reopened.elapsed) == ("running", None, 4 * H)
        assert reopened.due_at == at(4, 12)

    def test_stopped_exactly_at_duration_is_met(self) -> None:
        events = timeline((at(3, 9), "new"), (at(3, 17), "resolved"))
        result = compute_clock(events, RESOLUTION, OFFICE, at(3, 18))
        assert (result.status, result.remaining, result.breached_at) == ("met", 0 * H, None)

    def test_due_at_closing_time_is_not_breached_until_counting_resumes(self) -> None:
        events = timeline((at(3, 9), "new"))
        evening = compute_clock(events, RESOLUTION, OFFICE, at(3, 20))
        assert (evening.status, evening.remaining, evening.due_at, evening.breached_at) == (
            "running",
            0 * H,
            at(3, 17),
            None,
        )
        morning = compute_clock(events, RESOLUTION, OFFICE, at(4, 9, 30))
        assert (morning.status, morning.breached_at) == ("breached", at(3, 17))
        resolved_before_opening = timeline((at(3, 9), "new"), (at(4, 8), "resolved"))
        assert compute_clock(resolved_before_opening, RESOLUTION, OFFICE, at(4, 12)).status == "met"


class TestResponse:
    def test_met(self) -> None:
        result = compute_clock(
            timeline((at(3, 9), "new"), responded_at=at(3, 9, 30)), RESPONSE, OFFICE, at(3, 12)
        )
        assert (result.status, result.elapsed, result.stopped_at) == (
            "met",
            timedelta(minutes=30),
            at(3, 9, 30),
        )
        assert result.segments[-1] == Segment(at(3, 9, 30), at(3, 12), "stopped", "new")

    def test_responded_exactly_at_duration(self) -> None:
        result = compute_clock(
            timeline((at(3, 9), "new"), responded_at=at(3, 10)), RESPONSE, OFFICE, at(3, 12)
        )
        assert result.status == "met"

    def test_breached(self) -> None:
        result = compute_clock(
            timeline((at(3, 9), "new"), responded_at=at(3, 10, 30)), RESPONSE, OFFICE, at(3, 12)
        )
        assert (result.status, result.breached_at, result.remaining) == (
            "breached",
            at(3, 10),
            -timedelta(minutes=30),
        )

    def test_running_then_breached_over_a_weekend(self) -> None:
        events = timeline((at(7, 16, 30), "new"))  # Friday afternoon
        running = compute_clock(events, RESPONSE, OFFICE, at(8, 12))
        assert (running.status, running.due_at) == ("running", at(10, 9, 30))
        breached = compute_clock(events, RESPONSE, OFFICE, at(10, 9, 45))
        assert (breached.status, breached.breached_at, breached.outside_hours) == (
            "breached",
            at(10, 9, 30),
            64 * H,
        )

    def test_pause_states_apply_to_response(self) -> None:
        target = TargetSpec("response", H, "response", pause_states=frozenset({"on_hold"}))
        events = timeline((at(3, 9), "new"), (at(3, 9, 10), "on_hold"), (at(3, 11), "assigned"))
        result = compute_clock(events, target, OFFICE, at(3, 11, 30))
        assert (result.elapsed, result.paused, result.status) == (
            timedelta(minutes=40),
            timedelta(minutes=110),
            "running",
        )

    def test_response_after_as_of_is_ignored(self) -> None:
        result = compute_clock(
            timeline((at(3, 9), "new"), responded_at=at(3, 9, 50)), RESPONSE, OFFICE, at(3, 9, 20)
        )
        assert (result.status, result.stopped_at, result.due_at) == ("running", None, at(3, 10))


class TestWarnings:
    def test_50_75_90(self) -> None:
        target = TargetSpec(
            "resolution", 4 * H, "resolution", stop_states=STOP, warning_percents=(50, 75, 90)
        )
        result = compute_clock(timeline((at(3, 9), "new")), target, OFFICE, at(3, 12))
        assert result.warnings == (
            WarningThreshold(50, at(3, 11), at(3, 11)),
            WarningThreshold(75, at(3, 12), at(3, 12)),  # reached exactly at as_of
            WarningThreshold(90, None, at(3, 12, 36)),
        )

    def test_future_warnings_are_not_projected_while_paused(self) -> None:
        target = TargetSpec(
            "resolution", 4 * H, "resolution", frozenset({"on_hold"}), STOP, warning_percents=(50, 90)
        )
        events = timeline((at(3, 9), "new"), (at(3, 11, 30), "on_hold"))
        result = compute_clock(events, target, OFFICE, at(3, 12))
        assert result.warnings == (
            WarningThreshold(50, at(3, 11), at(3, 11)),
            WarningThreshold(90, None, None),
        )

    def test_warning_projected_across_the_night(self) -> None:
        target = TargetSpec("resolution", 8 * H, "resolution", stop_states=STOP, warning_percents=(75,))
        result = compute_clock(timeline((at(3, 14), "new")), target, OFFICE, at(3, 15))
        assert result.warnings == (WarningThreshold(75, None, at(4, 12)),)


class TestReproducibility:
    def test_events_after_as_of_are_ignored(self) -> None:
        full = timeline((at(3, 9), "new"), (at(3, 10), "on_hold"), (at(3, 15), "resolved"))
        cut = timeline((at(3, 9), "new"), (at(3, 10), "on_hold"))
        assert compute_clock(full, RESOLUTION, OFFICE, at(3, 12)) == compute_clock(
            cut, RESOLUTION, OFFICE, at(3, 12)
        )

    def test_event_exactly_at_as_of_decides_status(self) -> None:
        events = timeline((at(3, 9), "new"), (at(3, 12), "resolved"))
        result = compute_clock(events, RESOLUTION, OFFICE, at(3, 12))
        assert (result.status, result.stopped_at, result.segments[-1].end) == ("met", at(3, 12), at(3, 12))

    def test_as_of_equal_to_start(self) -> None:
        result = compute_clock(timeline((at(3, 9), "new")), RESOLUTION, OFFICE, at(3, 9))
        assert (result.status, result.elapsed, result.segments, result.due_at) == (
            "running",
            0 * H,
            (),
            at(3, 17),
        )

    def test_segments_sum_to_span_over_weeks(self) -> None:
        events = timeline(
            (at(3, 9), "new"),
            (at(5, 3), "on_hold"),
            (at(8, 10), "in_progress"),
            (at(12, 10), "resolved"),
            (at(13, 1), "in_progress"),
        )
        result = compute_clock(events, RESOLUTION, OFFICE, at(20, 12))
        check_segments(result, at(3, 9))
        stopped = at(13, 1) - at(12, 10)
        assert result.elapsed + result.paused + result.outside_hours + stopped == at(20, 12) - at(3, 9)

    def test_always_open_calendar(self) -> None:
        events = timeline((at(8, 9), "new"), (at(8, 13), "resolved"))
        result = compute_clock(events, RESOLUTION, BusinessCalendar.always_open("Europe/London"), at(9, 9))
        assert (result.status, result.elapsed, result.outside_hours) == ("met", 4 * H, 0 * H)


class TestInputValidation:
    def test_unsorted_states(self) -> None:
        with pytest.raises(ValueError, match="sorted"):
            Timeline(at(3, 9), ((at(3, 9), "new"), (at(3, 11), "assigned"), (at(3, 10), "resolved")))

    def test_first_state_after_start(self) -> None:
        with pytest.raises(ValueError, match="first state"):
            Timeline(at(3, 9), ((at(3, 10), "new"),))

    def test_as_of_before_start(self) -> None:
        with pytest.raises(ValueError, match="as_of"):
            compute_clock(timeline((at(3, 9), "new")), RESOLUTION, OFFICE, at(3, 8))

    @pytest.mark.parametrize(
        ("duration", "percents"),
        [(timedelta(0), ()), (H, (0,)), (H, (101,))],
    )
    def test_bad_target(self, duration: timedelta, percents: tuple[int, ...]) -> None:
        with pytest.raises(ValueError, match=r"duration|percents"):
            TargetSpec("t", duration, "resolution", warning_percents=percents)


ALWAYS = BusinessCalendar.always_open("UTC")


def changed(target: TargetSpec, *changes: tuple[datetime, timedelta | None]) -> TargetSpec:
    return TargetSpec(
        target.name,
        target.duration,
        target.kind,
        target.pause_states,
        target.stop_states,
        target.warning_percents,
        tuple(changes),
    )


class TestPriorityChanges:
    """Durations change with the priority; the new one counts from the start (see sla.clock)."""

    P5 = TargetSpec("response", 8 * H, "response", stop_states=STOP, warning_percents=(50,))

    def test_a_raise_that_leaves_the_target_exceeded_breaches_at_the_raise(self) -> None:
        raised = changed(self.P5, (at(3, 10, 40), timedelta(minutes=15)))
        result = compute_clock(timeline((at(3, 9), "new")), raised, ALWAYS, at(3, 11))
        assert (result.status, result.breached_at, result.duration) == (
            "breached",
            at(3, 10, 40),
            timedelta(minutes=15),
        )
        assert result.warnings[0].reached_at == at(3, 10, 40)  # 50 % of 15 minutes: passed at the raise too
        before = compute_clock(timeline((at(3, 9), "new")), raised, ALWAYS, at(3, 10, 30))
        assert (before.status, before.due_at) == ("running", at(3, 17))  # as of then: P5, due 8 h in

    def test_a_raise_with_time_left_moves_the_due_time(self) -> None:
        raised = changed(self.P5, (at(3, 9, 10), timedelta(minutes=15)))
        result = compute_clock(timeline((at(3, 9), "new")), raised, ALWAYS, at(3, 9, 12))
        assert (result.status, result.due_at, result.remaining) == (
            "running",
            at(3, 9, 15),
            timedelta(minutes=3),
        )

    def test_a_lowering_never_erases_a_breach(self) -> None:
        p1 = TargetSpec("response", timedelta(minutes=15), "response", stop_states=STOP)
        lowered = changed(p1, (at(3, 9, 30), 8 * H))
        result = compute_clock(timeline((at(3, 9), "new")), lowered, ALWAYS, at(3, 10))
        assert (result.status, result.breached_at, result.duration) == ("breached", at(3, 9, 15), 8 * H)
        responded = timeline((at(3, 9), "new"), responded_at=at(3, 9, 45))
        assert compute_clock(responded, lowered, ALWAYS, at(3, 10)).status == "breached"

    def test_a_change_after_the_first_response_changes_nothing(self) -> None:
        raised = changed(self.P5, (at(3, 11), timedelta(minutes=15)))
        responded = timeline((at(3, 9), "new"), responded_at=at(3, 10))
        assert compute_clock(responded, raised, ALWAYS, at(3, 12)).status == "met"

    def test_a_change_while_resolved_applies_when_reopened(self) -> None:
        target = TargetSpec("resolution", 4 * H, "resolution", stop_states=STOP)
        raised = changed(target, (at(3, 12), H))
        events = timeline((at(3, 9), "new"), (at(3, 11), "resolved"), (at(3, 13), "in_progress"))
        assert compute_clock(events, raised, ALWAYS, at(3, 12, 30)).status == "met"
        reopened = compute_clock(events, raised, ALWAYS, at(3, 14))
        assert (reopened.status, reopened.breached_at) == ("breached", at(3, 13))

    def test_used_up_exactly_then_lowered_is_measured_against_the_new_target(self) -> None:
        eight = TargetSpec("resolution", 8 * H, "resolution", stop_states=STOP)
        lowered = changed(eight, (at(3, 20), 10 * H))  # after closing, with exactly 8 h counted
        result = compute_clock(timeline((at(3, 9), "new")), lowered, OFFICE, at(4, 10))
        assert (result.status, result.due_at, result.breached_at) == ("running", at(4, 11), None)
        later = compute_clock(timeline((at(3, 9), "new")), lowered, OFFICE, at(4, 12))
        assert (later.status, later.breached_at) == ("breached", at(4, 11))

    def test_no_target_while_the_priority_has_none(self) -> None:
        none_then_p1 = changed(self.P5, (at(3, 9), None), (at(3, 10), timedelta(minutes=15)))
        early = compute_clock(timeline((at(3, 9), "new")), none_then_p1, ALWAYS, at(3, 9, 50))
        assert (early.applies, early.status, early.due_at) == (False, "running", None)
        late = compute_clock(timeline((at(3, 9), "new")), none_then_p1, ALWAYS, at(3, 10, 5))
        assert (late.applies, late.status, late.breached_at) == (True, "breached", at(3, 10))

    def test_unreachable_due_is_none_not_a_search_to_the_year_9999(self) -> None:
        thin = parse_calendar("UTC", [{"weekday": 0, "start": "00:00", "end": "00:01"}])
        target = TargetSpec("resolution", timedelta(days=365), "resolution", stop_states=STOP)
        result = compute_clock(timeline((at(3, 9), "new")), target, thin, at(3, 10))
        assert (result.status, result.due_at, result.wake_at) == ("running", None, None)


class TestUpdateCadence:
    def test_late_and_missing_updates(self) -> None:
        misses = compute_update_cadence(at(3, 9), [at(3, 9, 30), at(3, 11)], H, OFFICE, None, at(3, 13))
        assert misses == [MissedUpdate(at(3, 10, 30), at(3, 11)), MissedUpdate(at(3, 12), None)]

    def test_stop_ends_the_obligation(self) -> None:
        misses = compute_update_cadence(
            at(3, 9), [at(3, 9, 30), at(3, 11)], H, OFFICE, at(3, 12, 30), at(3, 13)
        )
        assert misses == [MissedUpdate(at(3, 10, 30), at(3, 11)), MissedUpdate(at(3, 12), at(3, 12, 30))]

    def test_update_exactly_at_due_is_on_time(self) -> None:
        assert compute_update_cadence(at(3, 9), [at(3, 10), at(3, 11)], H, OFFICE, None, at(3, 11, 30)) == []

    def test_closed_hours_do_not_count(self) -> None:
        updates = [at(3, 16, 30), at(4, 9, 20)]
        assert compute_update_cadence(at(3, 16), updates, H, OFFICE, None, at(4, 10)) == []

    def test_updates_after_as_of_are_ignored(self) -> None:
        misses = compute_update_cadence(at(3, 9), [at(3, 14)], H, OFFICE, None, at(3, 12))
        assert misses == [MissedUpdate(at(3, 10), None)]
