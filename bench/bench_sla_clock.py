"""Throughput of SLA clock computation, and of recalculation through the service layer.

    .venv/bin/python bench/bench_sla_clock.py [incidents]            # pure clocks (compute_clock), per target
    .venv/bin/python bench/bench_sla_clock.py --recalc 2000 [--sqlite]  # POST /sla/recalculate's work

The first mode times ``compute_clock`` per target over realistic random timelines, then the whole evaluation of
an incident (``evaluate_log``: response, resolution and the update cadence under a priority history).

``--recalc N`` creates a database (PostgreSQL at MSP_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/
postgres, as the application role with row-level security; or a temporary SQLite file with ``--sqlite``),
migrates it, stores N incidents with their event logs and SLA results under policy version 1, then times one
recalculation preview and one apply to version 2 over them, in pages of 2000 (as the API does), and drops the
database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

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
POLICY_TARGETS = {
    "1": {"response_minutes": 15, "resolution_minutes": 240, "update_minutes": 60},
    "2": {"response_minutes": 30, "resolution_minutes": 480, "update_minutes": 120},
    "3": {"response_minutes": 60, "resolution_minutes": 1440, "update_minutes": None},
    "4": {"response_minutes": 240, "resolution_minutes": 4320, "update_minutes": None},
    "5": {"response_minutes": 480, "resolution_minutes": 7200, "update_minutes": None},
}


def random_history(
    rng: random.Random, started: datetime
) -> tuple[list[tuple[str, datetime, dict[str, Any]]], datetime]:
    """(type, at, data) events of one incident, like the event log has them, and an as_of."""
    now = started
    priority = rng.choices([1, 2, 3, 4, 5], [2, 8, 40, 40, 10])[0]
    events: list[tuple[str, datetime, dict[str, Any]]] = [
        ("created", now, {"state": "new", "priority": priority})
    ]

    def step(kind: str, max_minutes: int, data: dict[str, Any]) -> None:
        nonlocal now
        now += timedelta(minutes=rng.randrange(1, max_minutes))
        events.append((kind, now, data))

    step("state_changed", 240, {"to": "assigned"})
    if rng.random() < 0.8:
        step("responded", 90, {"via": "comment"})
        events.append(("commented", now, {"visibility": "public"}))
    if rng.random() < 0.15:
        new = max(1, priority - rng.randrange(1, 3))
        step("priority_changed", 600, {"from": priority, "to": new})
        priority = new
    step("state_changed", 120, {"to": "in_progress"})
    for _ in range(rng.randrange(0, 4)):
        step("commented", 300, {"visibility": "public"})
    if rng.random() < 0.3:
        step("state_changed", 600, {"to": "on_hold", "on_hold_reason": "awaiting_caller"})
        step("state_changed", 3000, {"to": "in_progress"})
    if rng.random() < 0.7:
        step("state_changed", 2000, {"to": "resolved"})
        if rng.random() < 0.1:
            step("state_changed", 1440, {"to": "in_progress"})
            step("state_changed", 1440, {"to": "resolved"})
        step("state_changed", 4000, {"to": "closed"})
    elif rng.random() < 0.1:
        step("state_changed", 600, {"to": "cancelled"})
    return events, started + timedelta(minutes=rng.randrange(1, 14 * 1440))


def random_timeline(rng: random.Random) -> tuple[Timeline, datetime]:
    started = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(365 * 1440))
    events, as_of = random_history(rng, started)
    states = [
        (at, str(d.get("to", d.get("state"))))
        for kind, at, d in events
        if kind in ("created", "state_changed")
    ]
    responded = next((at for kind, at, _ in events if kind == "responded"), None)
    return Timeline(started, tuple(states), responded), as_of


def office_calendar() -> BusinessCalendar:
    return parse_calendar(
        "America/New_York",
        [{"weekday": d, "start": "08:00", "end": "18:00"} for d in range(5)],
        US_HOLIDAYS_2025,
    )


def clocks(count: int) -> None:
    from msp_platform.sla import service

    rng = random.Random(20250301)
    office = office_calendar()
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
        print(
            f"{target.name:<10} {count} incidents in {seconds:.2f}s = {count / seconds:,.0f} incidents/s  {statuses}"
        )

    # The whole evaluation of an incident: both targets and the update cadence, priority history included.
    policy = SimpleNamespace(
        version=1,
        targets=POLICY_TARGETS,
        warning_percents=[50, 75, 90],
        pause_states=["on_hold"],
        pause_hold_reasons=["awaiting_caller"],
    )
    office_def = {
        "source": "business_hours",
        "timezone": "America/New_York",
        "hours": [{"weekday": d, "start": "08:00", "end": "18:00"} for d in range(5)],
        "holidays": list(US_HOLIDAYS_2025),
    }
    logs = []
    for _ in range(count):
        started = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(365 * 1440))
        history, as_of = random_history(rng, started)
        incident = SimpleNamespace(id=uuid.uuid4(), opened_at=started, priority=3)
        events = [
            SimpleNamespace(type=kind, occurred_at=at, data=data, visibility="public", actor="staff:x")
            for kind, at, data in history
        ]
        logs.append((incident, service.read_log(incident, events), as_of))  # type: ignore[arg-type]
    began = time.perf_counter()
    for incident, log, as_of in logs:
        service.evaluate_log(incident, log, policy, office_def, as_of)  # type: ignore[arg-type]
    seconds = time.perf_counter() - began
    print(
        f"{'evaluate':<10} {count} incidents in {seconds:.2f}s = {count / seconds:,.0f} incidents/s  (all targets)"
    )


async def recalc(count: int, sqlite: bool) -> None:
    import asyncpg

    from msp_platform.authz.service import system_tenant_context
    from msp_platform.config import Settings
    from msp_platform.db import migrate
    from msp_platform.db.engine import Database
    from msp_platform.db.session import set_tenant_context
    from msp_platform.kit.ids import new_id
    from msp_platform.models.incident import Channel, Incident, IncidentEvent, IncidentState, Visibility
    from msp_platform.models.sla import SlaPolicy
    from msp_platform.models.tenant import Tenant
    from msp_platform.sla import service

    admin_dsn = os.environ.get("MSP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"msp_bench_sla_{uuid.uuid4().hex[:8]}"
    var_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    if sqlite:
        url = owner = f"sqlite+aiosqlite:///{var_dir / 'bench.db'}"
    else:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = f"postgresql+asyncpg://msp_app@127.0.0.1:5432/{name}"
        owner = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    settings = Settings(
        database_url=url, database_owner_url=owner, var_dir=var_dir, secret_key=uuid.uuid4().hex
    )
    db: Database | None = None
    try:
        await migrate.upgrade(settings)
        db = Database.create(settings)
        rng = random.Random(7)
        now = datetime.now(UTC).replace(microsecond=0)
        tenant = Tenant(
            id=new_id(), slug="bench-sla", name="Bench SLA", ticket_prefix="BSL", timezone="America/New_York"
        )
        tenant.business_calendar = {
            "hours": [{"weekday": d, "start": "07:00", "end": "19:00"} for d in range(5)],
            "holidays": [{"date": d, "name": ""} for d in US_HOLIDAYS_2025],
        }
        async with db.dangerously_unscoped_session() as session:
            session.add(tenant)
            await session.flush()
            for version, factor in ((1, 1), (2, 2)):
                session.add(
                    SlaPolicy(
                        tenant_id=tenant.id,
                        version=version,
                        name=f"v{version}",
                        calendar="business_hours",
                        custom_calendar=None,
                        pause_states=["on_hold"],
                        pause_hold_reasons=["awaiting_caller"],
                        warning_percents=[50, 75, 90],
                        targets={
                            k: {f: (v // factor if v else v) for f, v in t.items()}
                            for k, t in POLICY_TARGETS.items()
                        },
                        created_by="bench",
                    )
                )
            incidents = []
            for number in range(1, count + 1):
                started = now - timedelta(minutes=rng.randrange(1, 60 * 1440))
                history, _ = random_history(rng, started)
                history = [(k, at, d) for k, at, d in history if at <= now]
                last_state = next(
                    (
                        d.get("to", d.get("state"))
                        for k, _, d in reversed(history)
                        if k in ("created", "state_changed")
                    ),
                    "new",
                )
                incident = Incident(
                    tenant_id=tenant.id,
                    id=new_id(),
                    number=number,
                    key=f"BSL-{number:06d}",
                    title="Bench incident",
                    description="",
                    reported_by="bench",
                    channel=Channel.phone,
                    impact=3,
                    urgency=3,
                    patient_care_impact=False,
                    priority=history[0][2]["priority"],
                    priority_matrix_version=1,
                    tier=1,
                    state=IncidentState(last_state),
                    opened_at=started,
                    reopen_count=0,
                    first_contact_resolution=False,
                    version=1,
                    sla_policy_version=1,
                )
                session.add(incident)
                incidents.append(incident)
                for seq, (kind, at, data) in enumerate(history, start=1):
                    session.add(
                        IncidentEvent(
                            tenant_id=tenant.id,
                            incident_id=incident.id,
                            seq=seq,
                            type=kind,
                            occurred_at=at,
                            actor="staff:bench",
                            visibility=Visibility.public,
                            data=data,
                        )
                    )
            await session.commit()

        async def run(apply: bool, version: int) -> tuple[float, int, int]:
            began = time.perf_counter()
            examined = changed = 0
            after = None
            async with db.session() as session:  # type: ignore[union-attr]
                await set_tenant_context(session, system_tenant_context(tenant.id))
                while True:
                    result = await service.recalculate(
                        session,
                        opened_from=now - timedelta(days=365),
                        opened_to=now + timedelta(days=1),
                        version=version,
                        apply=apply,
                        limit=service.MAX_PAGE,
                        after=after,
                    )
                    examined += result.examined
                    changed += len(result.rows)
                    if result.next_after is None:
                        break
                    after = result.next_after
                await session.commit()
            return time.perf_counter() - began, examined, changed

        seconds, examined, _ = await run(True, 1)
        print(f"first sync (apply v1: pin calendars, store {examined:,} incidents' results): {seconds:.2f} s")
        for label, apply in (("preview", False), ("apply  ", True)):
            seconds, examined, changed = await run(apply, 2)
            print(
                f"recalculate {label} to v2: {examined:,} incidents, {changed:,} changes in {seconds:.2f} s "
                f"= {examined / seconds:,.0f} incidents/s"
            )
    finally:
        if db is not None:
            await db.dispose()
        if not sqlite:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("incidents", nargs="?", type=int, default=20_000)
    parser.add_argument("--recalc", type=int, help="time a recalculation over this many stored incidents")
    parser.add_argument("--sqlite", action="store_true", help="--recalc on SQLite instead of PostgreSQL")
    args = parser.parse_args()
    if args.recalc:
        asyncio.run(recalc(args.recalc, args.sqlite))
    else:
        clocks(args.incidents)


if __name__ == "__main__":
    main()
