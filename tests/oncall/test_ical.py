from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar, Event

from msp_platform.oncall.ical import render_ical, shift_uid
from msp_platform.oncall.schedule import Layer, Override, Shift, TurnLength, compute_schedule

LONDON = ZoneInfo("Europe/London")
STAMP = datetime(2024, 1, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


SHIFTS = (
    Shift(utc(2024, 1, 1, 9), utc(2024, 1, 8, 9), "u-alice", "Primary"),
    Shift(utc(2024, 1, 8, 9), utc(2024, 1, 10), "u-bob", "Primary"),
    Shift(utc(2024, 1, 10), utc(2024, 1, 12), "u-carol", "override"),
)
NAMES = {"u-alice": "Alice", "u-bob": "Bob"}


def events(feed: bytes) -> list[Event]:
    return [e for e in Calendar.from_ical(feed).walk("VEVENT") if isinstance(e, Event)]


def test_round_trip_event_count_times_and_summaries() -> None:
    feed = render_ical(
        "Primary on-call", SHIFTS, uid_namespace="schedule:1", person_names=NAMES, dtstamp=STAMP
    )
    calendar = Calendar.from_ical(feed)
    assert calendar["VERSION"] == "2.0"
    assert calendar["PRODID"] == "-//msp-platform//oncall//EN"
    assert calendar["X-WR-CALNAME"] == "Primary on-call"
    parsed = events(feed)
    assert len(parsed) == 3
    for event, shift in zip(parsed, SHIFTS, strict=True):
        assert event.decoded("DTSTART") == shift.start
        assert event.decoded("DTSTART").utcoffset() == timedelta(0)
        assert event.decoded("DTEND") == shift.end
        assert event.decoded("DTSTAMP") == STAMP
    assert [str(e["SUMMARY"]) for e in parsed] == [
        "On call: Alice (Primary)",
        "On call: Bob (Primary)",
        "On call: u-carol (override)",  # unknown ids fall back to the id
    ]
    text = feed.decode()
    # UTC form ("Z"), no TZID parameters or VTIMEZONE needed.
    assert "DTSTART:20240101T090000Z\r\n" in text
    assert "DTEND:20240108T090000Z\r\n" in text
    assert "TZID" not in text
    assert all(line.endswith("\r") or line == "" for line in text.split("\n"))


def test_non_utc_shift_times_are_written_in_utc() -> None:
    shift = Shift(datetime(2024, 7, 1, 9, tzinfo=LONDON), datetime(2024, 7, 8, 9, tzinfo=LONDON), "u", "L")
    feed = render_ical("x", [shift], uid_namespace="n", dtstamp=STAMP)
    assert b"DTSTART:20240701T080000Z\r\n" in feed
    # The UID does not depend on which zone the caller happened to use for the same instant.
    assert events(feed)[0]["UID"] == shift_uid("n", "u", utc(2024, 7, 1, 8))


def test_uids_are_stable_across_renders_and_unique() -> None:
    first = events(render_ical("c", SHIFTS, uid_namespace="schedule:1"))
    second = events(render_ical("c", reversed(SHIFTS), uid_namespace="schedule:1", person_names=NAMES))
    uids = [str(e["UID"]) for e in first]
    assert len(set(uids)) == 3
    assert uids == [str(e["UID"]) for e in second]

    # A shift whose end moves (an override added later) keeps its UID, so clients update it in place.
    moved = (SHIFTS[0], Shift(SHIFTS[1].start, utc(2024, 1, 9), SHIFTS[1].person, SHIFTS[1].source))
    assert [str(e["UID"]) for e in events(render_ical("c", moved, uid_namespace="schedule:1"))] == uids[:2]

    # Different feeds (per-schedule vs per-person) get different UIDs for the same shift.
    other = events(render_ical("c", SHIFTS, uid_namespace="schedule:1:person:u-alice"))
    assert not set(uids) & {str(e["UID"]) for e in other}


def test_repeated_person_and_start_get_distinct_uids() -> None:
    shifts = [
        Shift(utc(2024, 1, 1), utc(2024, 1, 2), "u", "Primary"),
        Shift(utc(2024, 1, 1), utc(2024, 1, 3), "u", "Secondary"),
    ]
    uids = [str(e["UID"]) for e in events(render_ical("c", shifts, uid_namespace="n"))]
    assert len(set(uids)) == 2


def test_long_summaries_are_folded_at_75_octets() -> None:
    long_name = "Maximiliane Þórunn Ångström-Łukasiewicz von und zu Oberammergau 日本語 " * 3
    feed = render_ical(
        "c", SHIFTS[:1], uid_namespace="n", person_names={"u-alice": long_name.strip()}, dtstamp=STAMP
    )
    lines = feed.split(b"\r\n")
    assert max(len(line) for line in lines) <= 75
    assert any(line.startswith(b" ") for line in lines), "expected folded continuation lines"
    for line in lines:
        line.decode()  # folding never splits a multi-byte character
    assert str(events(feed)[0]["SUMMARY"]) == f"On call: {long_name.strip()} (Primary)"


def test_dtstamp_defaults_to_now_and_fixed_stamp_gives_identical_bytes() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = events(render_ical("c", SHIFTS, uid_namespace="n"))[0].decoded("DTSTAMP")
    assert before <= stamp <= datetime.now(UTC)
    assert render_ical("c", SHIFTS, uid_namespace="n", dtstamp=STAMP) == render_ical(
        "c", list(SHIFTS), uid_namespace="n", dtstamp=STAMP
    )


def test_empty_feed_is_still_a_valid_calendar() -> None:
    feed = render_ical("Nobody", [], uid_namespace="n", prodid="-//acme//x//EN", dtstamp=STAMP)
    calendar = Calendar.from_ical(feed)
    assert calendar["PRODID"] == "-//acme//x//EN"
    assert events(feed) == []


def test_naive_shift_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render_ical("c", [Shift(datetime(2024, 1, 1), datetime(2024, 1, 2), "u", "L")], uid_namespace="n")


def test_feeds_from_a_computed_schedule() -> None:
    layer = Layer(
        "Primary",
        ("u-alice", "u-bob"),
        datetime(2024, 3, 4, 9, tzinfo=LONDON),
        TurnLength(1, "weeks"),
        "Europe/London",
    )
    vacation = Override("u-carol", utc(2024, 3, 20), utc(2024, 3, 22))
    schedule = compute_schedule([layer], [vacation], utc(2024, 3, 4), utc(2024, 4, 15))
    feed = render_ical(
        "Primary", schedule.shifts, uid_namespace="schedule:7", person_names=NAMES, dtstamp=STAMP
    )
    assert len(events(feed)) == len(schedule.shifts) == 8
    # Per-person feed: the caller filters.
    bob = render_ical(
        "Bob",
        [s for s in schedule.shifts if s.person == "u-bob"],
        uid_namespace="schedule:7:u-bob",
        dtstamp=STAMP,
    )
    assert [e.decoded("DTSTART") for e in events(bob)] == [
        utc(2024, 3, 11, 9),
        utc(2024, 3, 25, 9),
        utc(2024, 4, 8, 8),
    ]
