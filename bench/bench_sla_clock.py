"""Throughput of SLA clock computation over realistic random incident timelines.

Run: .venv/bin/python bench/bench_sla_clock.py [incidents]
"""

import random
import sys
import time
from datetime import UTC, datetime, timedelta

from msp_platform.kit.calendar import BusinessCalendar, parse_calendar
from msp_platform.sla.clock import TargetSpec, Timeline, compute_clock

US_HOLIDAYS_2025 = (
    "2025-01-01",
    "2025-01-20",
    "2025-02-17",
    "2025-05-26",
    "2025-06-19",
    "2025-07-04",
    "2025-09-01",
    "2025-10-13",
    "2025-11-11",
    "2025-11-27",
    "2025-12-25",
)
STOP = frozenset({"resolved", "closed", "cancelled"})
TARGETS = (
    TargetSpec("response", timedelta(hours=1), "response", warning_percents=(50, 75, 90)),
    TargetSpec(
        "resolution",
        timedelta(hours=8),
        "resolution",
        pause_states=frozenset({"on_hold"}),
        stop_states=STOP,
        warning_percents=(50, 75, 90),
    ),
)


def random_timeline(rng: random.Random) -> tuple[Timeline, datetime]:
    started = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(365 * 1440))
    now = started
    states = [(now, "new")]
    responded_at = None

    def step(state: str, max_minutes: int) -> None:
        nonlocal now
        now += timedelta(minutes=rng.randrange(1, max_minutes))
        states.append((now, state))

    step("assigned", 240)
    if rng.random() < 0.8:
        responded_at = now + timedelta(minutes=rng.randrange(0, 90))
    step("in_progress", 120)
    if rng.random() < 0.3:
        step("on_hold", 600)
        step("in_progress", 3000)
    if rng.random() < 0.7:
        step("resolved", 2000)
        if rng.random() < 0.1:
            step("in_progress", 1440)
            step("resolved", 1440)
        step("closed", 4000)
    elif rng.random() < 0.1:
        step("cancelled", 600)
    as_of = started + timedelta(minutes=rng.randrange(1, 14 * 1440))
    return Timeline(started, tuple(states), responded_at), as_of


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rng = random.Random(20250301)
    office = parse_calendar(
        "America/New_York",
        [{"weekday": d, "start": "08:00", "end": "18:00"} for d in range(5)],
        US_HOLIDAYS_2025,
    )
    always = BusinessCalendar.always_open("America/New_York")
    cases = []
    for _ in range(count):
        timeline, as_of = random_timeline(rng)
        cases.append((timeline, office if rng.random() < 0.75 else always, as_of))

    # Warm the per-year time zone transition cache so it does not skew the first target.
    office.business_time_between(datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC))

    for target in TARGETS:
        statuses: dict[str, int] = {}
        began = time.perf_counter()
        for timeline, calendar, as_of in cases:
            result = compute_clock(timeline, target, calendar, as_of)
            statuses[result.status] = statuses.get(result.status, 0) + 1
        seconds = time.perf_counter() - began
        rate = count / seconds
        print(f"{target.name:<10} {count} incidents in {seconds:.2f}s = {rate:,.0f} incidents/s  {statuses}")


if __name__ == "__main__":
    main()
