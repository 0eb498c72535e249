from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from msp_platform.kit.calendar import BusinessCalendar, CalendarError, WeeklyWindow, parse_calendar

NEW_YORK = ZoneInfo("America/New_York")


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def office_hours(tz: str = "America/New_York", holidays: tuple[str, ...] = ()) -> BusinessCalendar:
    return parse_calendar(tz, [{"weekday": d, "start": "08:00", "end": "17:00"} for d in range(5)], holidays)


def errors_of(excinfo: pytest.ExceptionInfo[CalendarError]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in excinfo.value.errors}


class TestAlwaysOpen:
    def test_everything_is_open(self) -> None:
        calendar = BusinessCalendar.always_open("Europe/London")
        start, end = utc(2025, 3, 29), utc(2025, 4, 2, 7, 30)
        assert calendar.is_always_open
        assert calendar.is_open(utc(2025, 3, 30, 1, 30))
        assert list(calendar.open_intervals(start, end)) == [(start, end)]
        assert calendar.business_time_between(start, end) == end - start
        assert calendar.add_business_time(start, timedelta(days=400)) == start + timedelta(days=400)
        assert calendar.add_business_time(start, timedelta(0)) == start

    def test_returns_utc(self) -> None:
        calendar = BusinessCalendar.always_open()
        assert calendar.add_business_time(ny(2025, 1, 6, 9), timedelta(hours=1)) == utc(2025, 1, 6, 15)
        assert calendar.add_business_time(ny(2025, 1, 6, 9), timedelta(hours=1)).tzinfo is UTC

    def test_naive_datetimes_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            BusinessCalendar.always_open().is_open(datetime(2025, 1, 1))


class TestOfficeHoursAcrossDst:
    def test_march_weekend(self) -> None:
        calendar = office_hours()
        intervals = list(calendar.open_intervals(utc(2025, 3, 7), utc(2025, 3, 11)))
        # EST (-5) on Friday, EDT (-4) from Sunday 2025-03-09.
        assert intervals == [
            (utc(2025, 3, 7, 13), utc(2025, 3, 7, 22)),
            (utc(2025, 3, 10, 12), utc(2025, 3, 10, 21)),
        ]
        assert calendar.business_time_between(ny(2025, 3, 7, 12), ny(2025, 3, 10, 12)) == timedelta(hours=9)

    def test_november_weekend(self) -> None:
        calendar = office_hours()
        intervals = list(calendar.open_intervals(utc(2025, 10, 31), utc(2025, 11, 4)))
        assert intervals == [
            (utc(2025, 10, 31, 12), utc(2025, 10, 31, 21)),
            (utc(2025, 11, 3, 13), utc(2025, 11, 3, 22)),
        ]
        assert calendar.is_open(utc(2025, 11, 3, 13))
        assert not calendar.is_open(utc(2025, 11, 3, 12, 59))

    def test_spring_forward_skips_nonexistent_wall_time(self) -> None:
        # Sunday 02:30-04:00 on 2025-03-09: 02:00-03:00 does not exist, so only 03:00-04:00 EDT.
        calendar = BusinessCalendar("America/New_York", (WeeklyWindow.parse(6, "02:30", "04:00"),))
        assert list(calendar.open_intervals(utc(2025, 3, 8), utc(2025, 3, 10))) == [
            (utc(2025, 3, 9, 7), utc(2025, 3, 9, 8))
        ]

    def test_fall_back_counts_repeated_hour_twice(self) -> None:
        calendar = BusinessCalendar("America/New_York", (WeeklyWindow.parse(6, "01:00", "02:00"),))
        assert list(calendar.open_intervals(utc(2025, 11, 1), utc(2025, 11, 4))) == [
            (utc(2025, 11, 2, 5), utc(2025, 11, 2, 7))
        ]
        assert calendar.business_time_between(utc(2025, 11, 1), utc(2025, 11, 4)) == timedelta(hours=2)


class TestOvernightAndHolidays:
    calendar = BusinessCalendar("UTC", (WeeklyWindow.parse(0, "22:00", "06:00"),))

    def test_overnight_window_runs_into_next_day(self) -> None:
        # 2025-03-03 is a Monday.
        assert not self.calendar.is_open(utc(2025, 3, 3, 21, 59))
        assert self.calendar.is_open(utc(2025, 3, 3, 22))
        assert self.calendar.is_open(utc(2025, 3, 4, 5, 59))
        assert not self.calendar.is_open(utc(2025, 3, 4, 6))
        assert list(self.calendar.open_intervals(utc(2025, 3, 3), utc(2025, 3, 5))) == [
            (utc(2025, 3, 3, 22), utc(2025, 3, 4, 6))
        ]

    def test_holiday_closes_its_part_of_an_overnight_window(self) -> None:
        calendar = BusinessCalendar("UTC", self.calendar.windows, frozenset({date(2025, 3, 4)}))
        assert list(calendar.open_intervals(utc(2025, 3, 3), utc(2025, 3, 5))) == [
            (utc(2025, 3, 3, 22), utc(2025, 3, 4))
        ]

    def test_holiday_closes_whole_day(self) -> None:
        calendar = office_hours(holidays=("2025-07-04",))
        assert not calendar.is_open(ny(2025, 7, 4, 10))
        assert calendar.is_open(ny(2025, 7, 3, 10))
        assert calendar.business_time_between(ny(2025, 7, 3), ny(2025, 7, 8)) == timedelta(hours=18)

    def test_windows_touching_at_midnight_merge(self) -> None:
        calendar = parse_calendar(
            "UTC",
            [
                {"weekday": 0, "start": "20:00", "end": "24:00"},
                {"weekday": 1, "start": "00:00", "end": "02:00"},
            ],
        )
        assert list(calendar.open_intervals(utc(2025, 3, 3), utc(2025, 3, 5))) == [
            (utc(2025, 3, 3, 20), utc(2025, 3, 4, 2))
        ]

    def test_end_of_00_00_means_midnight(self) -> None:
        calendar = parse_calendar("UTC", [{"weekday": 0, "start": "22:00", "end": "00:00"}])
        assert calendar.windows == (WeeklyWindow(0, 22 * 60, 1440),)


class TestAddBusinessTime:
    def test_over_a_weekend(self) -> None:
        calendar = office_hours()
        assert calendar.add_business_time(ny(2025, 3, 7, 16), timedelta(hours=2)) == ny(2025, 3, 10, 9)

    def test_over_a_weekend_and_a_holiday(self) -> None:
        calendar = office_hours(holidays=("2025-03-10",))
        assert calendar.add_business_time(ny(2025, 3, 7, 16), timedelta(hours=2)) == ny(2025, 3, 11, 9)

    def test_used_up_at_closing_time_returns_closing_time(self) -> None:
        calendar = office_hours()
        assert calendar.add_business_time(ny(2025, 3, 7, 16), timedelta(hours=1)) == ny(2025, 3, 7, 17)

    def test_zero_returns_next_open_instant(self) -> None:
        calendar = office_hours()
        assert calendar.add_business_time(ny(2025, 3, 8, 12), timedelta(0)) == ny(2025, 3, 10, 8)
        assert calendar.add_business_time(ny(2025, 3, 7, 12), timedelta(0)) == ny(2025, 3, 7, 12)

    def test_a_year_of_business_time(self) -> None:
        calendar = office_hours()
        start = ny(2025, 1, 6, 8)  # Monday
        due = calendar.add_business_time(start, timedelta(hours=9 * 5 * 52))
        assert due == ny(2026, 1, 2, 17)
        assert calendar.business_time_between(start, due) == timedelta(hours=9 * 5 * 52)

    def test_negative_duration_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            office_hours().add_business_time(ny(2025, 3, 7, 16), timedelta(minutes=-1))


class TestValidation:
    def test_unknown_time_zone(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            office_hours("Mars/Olympus_Mons")
        assert errors_of(excinfo) == {"timezone": "'Mars/Olympus_Mons' is not a known IANA time zone"}

    @pytest.mark.parametrize("weekday", [-1, 7, "1", None])
    def test_weekday_out_of_range(self, weekday: object) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar("UTC", [{"weekday": weekday, "start": "08:00", "end": "17:00"}])
        assert errors_of(excinfo) == {
            "windows[0].weekday": f"weekday must be 0 (Monday) to 6 (Sunday), got {weekday!r}"
        }

    @pytest.mark.parametrize(
        ("start", "end", "field"),
        [
            ("25:00", "17:00", "start"),
            ("08:60", "17:00", "start"),
            ("8am", "17:00", "start"),
            ("24:00", "17:00", "start"),
            ("08:00", "24:01", "end"),
            ("08:00", "", "end"),
        ],
    )
    def test_bad_times(self, start: str, end: str, field: str) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar("UTC", [{"weekday": 0, "start": start, "end": end}])
        bad = start if field == "start" else end
        upper = "23:59" if field == "start" else "24:00"
        assert errors_of(excinfo) == {
            f"windows[0].{field}": f"{field} {bad!r} is not a time of day; use HH:MM from 00:00 to {upper}"
        }

    def test_out_of_range_minutes_in_direct_construction(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            BusinessCalendar("UTC", (WeeklyWindow(9, 1440, 0),))
        assert errors_of(excinfo) == {
            "windows[0].weekday": "weekday must be 0 (Monday) to 6 (Sunday), got 9",
            "windows[0].start": "start must be a time from 00:00 to 23:59",
            "windows[0].end": "end must be a time from 00:01 to 24:00",
        }

    def test_zero_length_window(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar("UTC", [{"weekday": 2, "start": "08:00", "end": "08:00"}])
        assert errors_of(excinfo) == {"windows[0]": "window starts and ends at 08:00, so it is empty"}

    def test_overlapping_windows_same_day(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar(
                "UTC",
                [
                    {"weekday": 0, "start": "08:00", "end": "12:00"},
                    {"weekday": 0, "start": "11:00", "end": "17:00"},
                ],
            )
        assert errors_of(excinfo) == {"windows[1]": "Mon 11:00-17:00 overlaps Mon 08:00-12:00 (windows[0])"}

    def test_overnight_window_overlapping_next_day(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar(
                "UTC",
                [
                    {"weekday": 0, "start": "22:00", "end": "06:00"},
                    {"weekday": 1, "start": "05:00", "end": "09:00"},
                ],
            )
        assert errors_of(excinfo) == {
            "windows[1]": "Tue 05:00-09:00 overlaps Mon 22:00-06:00 (next day) (windows[0])"
        }

    def test_sunday_overnight_overlapping_monday(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar(
                "UTC",
                [
                    {"weekday": 0, "start": "00:00", "end": "09:00"},
                    {"weekday": 6, "start": "23:00", "end": "01:00"},
                ],
            )
        assert errors_of(excinfo) == {
            "windows[1]": "Sun 23:00-01:00 (next day) overlaps Mon 00:00-09:00 (windows[0])"
        }

    def test_touching_windows_are_fine(self) -> None:
        calendar = parse_calendar(
            "UTC",
            [
                {"weekday": 0, "start": "08:00", "end": "12:00"},
                {"weekday": 0, "start": "12:00", "end": "17:00"},
            ],
        )
        assert calendar.business_time_between(utc(2025, 3, 3), utc(2025, 3, 4)) == timedelta(hours=9)

    def test_no_windows(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar("UTC", [])
        assert errors_of(excinfo) == {"windows": "a business calendar needs at least one opening window"}

    def test_bad_holiday(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            office_hours("UTC", holidays=("2025-02-30",))
        assert errors_of(excinfo) == {"holidays[0]": "'2025-02-30' is not a date; use YYYY-MM-DD"}

    def test_duplicate_holidays_are_deduplicated(self) -> None:
        calendar = office_hours(holidays=("2025-12-25", "2025-12-25"))
        assert calendar.holidays == frozenset({date(2025, 12, 25)})

    def test_every_problem_is_reported_at_once(self) -> None:
        with pytest.raises(CalendarError) as excinfo:
            parse_calendar(
                "Nowhere/Special",
                [
                    {"weekday": 8, "start": "08:00", "end": "17:00"},
                    {"weekday": 1, "start": "09:00", "end": "09:00"},
                ],
                ["tomorrow"],
            )
        assert set(errors_of(excinfo)) == {"timezone", "windows[0].weekday", "windows[1]", "holidays[0]"}
        assert "timezone: 'Nowhere/Special' is not a known IANA time zone" in str(excinfo.value)
