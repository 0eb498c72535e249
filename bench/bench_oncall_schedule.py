"""How long computing a year of an on-call schedule takes (3 layers, overrides).

Run: .venv/bin/python bench/bench_oncall_schedule.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock

from msp_platform.oncall.schedule import (
    Layer,
    Override,
    Restriction,
    TurnLength,
    compute_schedule,
    on_call_at,
)

TZ = "America/New_York"
START = datetime(2026, 1, 5, 14, tzinfo=UTC)
LAYERS = (
    Layer("Primary", tuple(f"p{i}" for i in range(12)), START, TurnLength(1, "weeks"), TZ),
    Layer(
        "Nights",
        tuple(f"n{i}" for i in range(5)),
        START,
        TurnLength(1, "days"),
        TZ,
        restrictions=(Restriction.daily(clock(18), clock(8)),),
    ),
    Layer(
        "Weekend",
        ("w1", "w2", "w3"),
        START,
        TurnLength(12, "hours"),
        TZ,
        restrictions=(Restriction.weekly(5, clock(0), 0, clock(0)),),
    ),
)
OVERRIDES = (
    Override("p3", START + timedelta(days=40), START + timedelta(days=47)),
    Override("n1", START + timedelta(days=100, hours=3), START + timedelta(days=101)),
    Override("w2", START + timedelta(days=200), START + timedelta(days=202)),
)


def main() -> None:
    end = START + timedelta(days=365)
    runs = []
    for _ in range(20):
        t0 = time.perf_counter()
        final = compute_schedule(LAYERS, OVERRIDES, START, end)
        runs.append(time.perf_counter() - t0)
    print(f"1 year, 3 layers, 3 overrides: {len(final.shifts)} shifts")
    print(
        f"  compute_schedule: median {statistics.median(runs) * 1000:.1f} ms, best {min(runs) * 1000:.1f} ms"
    )
    t0 = time.perf_counter()
    n = 2000
    for i in range(n):
        on_call_at(LAYERS, OVERRIDES, START + timedelta(hours=i * 4.3))
    print(f"  on_call_at: {(time.perf_counter() - t0) / n * 1000:.2f} ms per call")


if __name__ == "__main__":
    main()
