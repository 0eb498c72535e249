"""Service reports: hand-computed figures on small data sets, on SQLite and on PostgreSQL (row-level security)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from tests.conftest import Factory
from tests.reports.conftest import Reports, Seeder, at, by_priority
from tests.sla.test_sla_api import drain, publish
from tests.support.desk import Desk

from msp_platform.kit.time import utcnow

JAN = {"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}
MIN = timedelta(minutes=1)


def cells(rows: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """The non-empty (weekday, hour) cells of an hour-of-week report."""
    return {(r["weekday"], r["hour"]): r["opened"] for r in rows if r["opened"]}


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


class TestSlaCompliance:
    async def test_per_priority_and_target(self, factory: Factory, seed: Seeder, reports: Reports) -> None:
        tenant = await factory.tenant()
        await seed.incident(
            tenant,
            at("2025-01-05T10:00"),
            priority=1,
            sla={"response": "met", "resolution": "breached", "update": "breached"},
        )
        await seed.incident(
            tenant,
            at("2025-01-06T10:00"),
            priority=1,
            sla={"response": "met", "resolution": "met", "update": "met"},
        )
        # A running clock past its due time is a breach the timer has not announced yet.
        await seed.incident(
            tenant,
            at("2025-01-07T10:00"),
            priority=1,
            sla={"response": "breached", "resolution": ("running", at("2025-01-08T10:00"))},
        )
        await seed.incident(
            tenant,
            at("2025-01-08T10:00"),
            priority=1,
            sla={
                "response": "met",
                "resolution": ("running", at("2099-01-01T00:00")),
                # The update cadence: the next update due in the past and not yet announced is a miss.
                "update": ("running", at("2025-01-08T10:30")),
            },
        )
        await seed.incident(
            tenant, at("2025-01-10T10:00"), priority=2, sla={"response": "paused", "resolution": "met"}
        )
        # Not counted: cancelled, opened before the period, opened at its (exclusive) end.
        await seed.incident(
            tenant,
            at("2025-01-11T10:00"),
            priority=3,
            state="cancelled",
            closed_at=at("2025-01-11T11:00"),
            sla={"response": "met", "resolution": "met"},
        )
        await seed.incident(tenant, at("2024-12-31T23:59:59"), priority=1, sla={"response": "breached"})
        await seed.incident(tenant, at("2025-02-01T00:00"), priority=1, sla={"response": "breached"})
        await seed.incident(tenant, at("2025-01-12T10:00"), priority=4)  # no policy: nothing measured

        body = await reports.json("sla-compliance", await reports.admin_of(tenant), **JAN)
        assert (body["report"], body["from"], body["to"]) == (
            "sla_compliance",
            "2025-01-01T00:00:00Z",
            "2025-02-01T00:00:00Z",
        )
        response = by_priority(body["rows"], target="response")
        resolution = by_priority(body["rows"], target="resolution")
        cadence = by_priority(body["rows"], target="update")
        pick = ("measured", "met", "breached", "pending", "compliance_percent")

        def figures(row: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(row[k] for k in pick)

        assert figures(response[1]) == (4, 3, 1, 0, 75.0)
        assert figures(resolution[1]) == (4, 1, 2, 1, 33.33)
        assert figures(response[2]) == (1, 0, 0, 1, None)
        assert figures(resolution[2]) == (1, 1, 0, 0, 100.0)
        for priority in (3, 4, 5):
            assert figures(response[priority]) == (0, 0, 0, 0, None)
        assert figures(response[None]) == (5, 3, 1, 1, 75.0)
        assert figures(resolution[None]) == (5, 2, 2, 1, 50.0)
        assert figures(cadence[1]) == (3, 1, 2, 0, 33.33)
        assert figures(cadence[None]) == (3, 1, 2, 0, 33.33)
        assert len(body["rows"]) == 18  # (5 priorities + the total) x (response, resolution, update)
        assert all(r["group"] is None for r in body["rows"])

    async def test_rows_come_from_the_sla_engine(
        self, app: Litestar, desk: Desk, factory: Factory, reports: Reports
    ) -> None:
        await publish(desk, factory)
        incident = await desk.raise_incident(impact=1, urgency=1)  # P1: response 15 min, resolution 4 h
        moved = await desk.move(incident, "in_progress")  # the first response, at once: met
        assert moved.status_code == 200, moved.text
        await drain(app)
        now = utcnow()
        period = {
            "start": (now - timedelta(days=1)).isoformat(),
            "end": (now + timedelta(days=1)).isoformat(),
        }
        body = await reports.json("service", await desk.as_admin(), **period)
        response = by_priority(body["sla_compliance"], target="response")[1]
        resolution = by_priority(body["sla_compliance"], target="resolution")[1]
        assert (response["met"], response["compliance_percent"]) == (1, 100.0)
        assert (resolution["measured"], resolution["pending"]) == (1, 1)
        times = by_priority(body["response_times"])[1]
        assert times["responded"] == 1
        assert 0 <= times["mtta_mean_seconds"] < 60
        backlog = by_priority(body["backlog"])[1]
        assert backlog["open"] == backlog["age_lt_1d"] == 1
        assert body["backlog_as_of"] == body["generated_at"], (
            "the period has not ended: the backlog is as of now"
        )


class TestTimes:
    async def test_mtta_mttr_with_percentiles(self, factory: Factory, seed: Seeder, reports: Reports) -> None:
        tenant = await factory.tenant()
        for day, seconds in ((2, 60), (3, 120), (4, 300), (5, 600)):
            await seed.incident(
                tenant,
                at(f"2025-01-0{day}T00:00"),
                priority=2,
                state="in_progress",
                responded_after=timedelta(seconds=seconds),
            )
        await seed.incident(
            tenant,
            at("2025-01-06T00:00"),
            priority=4,
            state="in_progress",
            responded_after=timedelta(seconds=30),
        )
        await seed.incident(tenant, at("2025-01-07T00:00"), priority=2)  # not responded yet
        await seed.incident(
            tenant,
            at("2025-01-08T00:00"),
            priority=2,
            state="cancelled",
            closed_at=at("2025-01-08T01:00"),
            responded_after=timedelta(seconds=10),
        )
        await seed.incident(
            tenant,
            at("2024-12-31T23:00"),
            priority=2,
            state="in_progress",
            responded_after=timedelta(hours=2),
        )
        # Resolved in the period (whenever opened); not: resolved at the end, cancelled.
        await seed.incident(
            tenant, at("2025-01-10T00:00"), priority=2, state="resolved", resolved_at=at("2025-01-10T01:00")
        )
        await seed.incident(
            tenant,
            at("2025-01-11T00:00"),
            priority=2,
            state="closed",
            resolved_at=at("2025-01-11T02:00"),
            closed_at=at("2025-01-12T00:00"),
        )
        await seed.incident(
            tenant, at("2024-12-31T23:30"), priority=3, state="resolved", resolved_at=at("2025-01-01T00:00")
        )
        await seed.incident(
            tenant, at("2025-01-20T00:00"), priority=3, state="resolved", resolved_at=at("2025-02-01T00:00")
        )
        await seed.incident(
            tenant,
            at("2025-01-14T00:00"),
            priority=3,
            state="cancelled",
            resolved_at=at("2025-01-15T00:00"),
            closed_at=at("2025-01-15T00:00"),
        )

        body = await reports.json("response-times", await reports.admin_of(tenant), **JAN)
        rows = by_priority(body["rows"])
        mtta = ("responded", "mtta_mean_seconds", "mtta_p50_seconds", "mtta_p90_seconds")
        mttr = ("resolved", "mttr_mean_seconds", "mttr_p50_seconds", "mttr_p90_seconds")

        def pick(row: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
            return tuple(row[k] for k in keys)

        assert pick(rows[2], mtta) == (4, 270.0, 210.0, 510.0)
        assert pick(rows[4], mtta) == (1, 30.0, 30.0, 30.0)
        assert pick(rows[None], mtta) == (5, 222.0, 120.0, 480.0)
        assert pick(rows[1], mtta) == (0, None, None, None)
        assert pick(rows[2], mttr) == (2, 5400.0, 5400.0, 6840.0)
        assert pick(rows[3], mttr) == (1, 1800.0, 1800.0, 1800.0)
        assert pick(rows[None], mttr) == (3, 4200.0, 3600.0, 6480.0)

    async def test_first_contact_and_reopen_rates(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        resolved = {"resolved_at": at("2025-01-20T00:00")}
        await seed.incident(
            tenant, at("2025-01-10T00:00"), priority=3, state="resolved", fcr=True, **resolved
        )
        await seed.incident(
            tenant,
            at("2025-01-10T00:00"),
            priority=3,
            state="closed",
            fcr=True,
            closed_at=at("2025-01-21T00:00"),
            **resolved,
        )
        await seed.incident(
            tenant, at("2025-01-10T00:00"), priority=3, state="resolved", reopen_count=1, **resolved
        )
        await seed.incident(
            tenant,
            at("2025-01-10T00:00"),
            priority=5,
            state="closed",
            reopen_count=2,
            closed_at=at("2025-01-22T00:00"),
            **resolved,
        )
        # Reopened and being worked again (no resolution now), resolved after the period: not counted.
        await seed.incident(tenant, at("2025-01-10T00:00"), priority=3, state="in_progress", reopen_count=1)
        await seed.incident(
            tenant,
            at("2025-01-10T00:00"),
            priority=3,
            state="resolved",
            fcr=True,
            resolved_at=at("2025-02-02T00:00"),
        )

        body = await reports.json("resolution-quality", await reports.admin_of(tenant), **JAN)
        rows = by_priority(body["rows"])
        keys = ("resolved", "first_contact_resolved", "fcr_percent", "reopened", "reopen_percent")

        def pick(row: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(row[k] for k in keys)

        assert pick(rows[3]) == (3, 2, 66.67, 1, 33.33)
        assert pick(rows[5]) == (1, 0, 0.0, 1, 100.0)
        assert pick(rows[1]) == (0, 0, None, 0, None)
        assert pick(rows[None]) == (4, 2, 50.0, 2, 50.0)


class TestBacklog:
    async def test_ageing_at_the_end_of_the_period(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        add = seed.incident
        await add(tenant, at("2025-02-28T12:00"), priority=1)  # 12 h
        await add(tenant, at("2025-02-28T00:00"), priority=1, state="assigned")  # exactly 1 d
        await add(tenant, at("2025-02-26T00:00:01"), priority=2, state="in_progress")  # just under 3 d
        await add(tenant, at("2025-02-26T00:00"), priority=2, state="on_hold")  # exactly 3 d
        await add(tenant, at("2025-02-10T00:00"), priority=3, state="in_progress")  # 19 d
        await add(tenant, at("2025-01-30T00:00"), priority=4, state="assigned")  # exactly 30 d
        await add(tenant, at("2024-06-01T00:00"), priority=4)  # opened long before the period
        # Resolved after the end: it was open then (9 d); resolved or cancelled before the end: not open.
        await add(
            tenant,
            at("2025-02-20T00:00"),
            priority=3,
            state="closed",
            resolved_at=at("2025-03-05T00:00"),
            closed_at=at("2025-03-06T00:00"),
        )
        await add(
            tenant, at("2025-02-20T00:00"), priority=3, state="resolved", resolved_at=at("2025-02-27T00:00")
        )
        await add(
            tenant, at("2025-02-27T00:00"), priority=2, state="cancelled", closed_at=at("2025-02-28T00:00")
        )
        await add(
            tenant, at("2025-02-27T00:00"), priority=5, state="cancelled", closed_at=at("2025-03-03T00:00")
        )  # 2 d
        await add(tenant, at("2025-03-02T00:00"), priority=1)  # opened after the end

        body = await reports.json(
            "backlog",
            await reports.admin_of(tenant),
            start="2025-02-01T00:00:00Z",
            end="2025-03-01T00:00:00Z",
        )
        assert body["as_of"] == "2025-03-01T00:00:00Z"
        rows = by_priority(body["rows"])
        order = ("open", "age_lt_1d", "age_1d_3d", "age_3d_7d", "age_7d_30d", "age_gt_30d")

        def pick(row: dict[str, Any]) -> tuple[int, ...]:
            return tuple(row[k] for k in order)

        assert pick(rows[1]) == (2, 1, 1, 0, 0, 0)
        assert pick(rows[2]) == (2, 0, 1, 1, 0, 0)
        assert pick(rows[3]) == (2, 0, 0, 0, 2, 0)
        assert pick(rows[4]) == (2, 0, 0, 0, 0, 2)
        assert pick(rows[5]) == (1, 0, 1, 0, 0, 0)
        assert pick(rows[None]) == (9, 1, 3, 1, 2, 2)


class TestVolume:
    async def test_by_priority_channel_and_category(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        await seed.incident(tenant, at("2025-01-02T10:00"), priority=1, channel="phone", category="network")
        await seed.incident(tenant, at("2025-01-03T10:00"), priority=1, channel="email", category="network")
        await seed.incident(tenant, at("2025-01-04T10:00"), priority=3, channel="portal")
        await seed.incident(
            tenant,
            at("2025-01-05T10:00"),
            priority=3,
            channel="phone",
            category="printing",
            state="cancelled",
            closed_at=at("2025-01-05T11:00"),
        )
        await seed.incident(tenant, at("2025-01-06T10:00"), priority=2, channel="after_hours", category="ehr")
        await seed.incident(tenant, at("2025-02-06T10:00"), priority=1, channel="phone", category="network")

        body = await reports.json("volume", await reports.admin_of(tenant), **JAN)
        table = {
            (r["dimension"], r["value"]): (r["opened"], r["cancelled"], r["percent"]) for r in body["rows"]
        }
        assert [(r["dimension"], r["value"]) for r in body["rows"]] == [
            ("all", None),
            *(("priority", str(p)) for p in range(1, 6)),
            *(("channel", c) for c in ("phone", "portal", "email", "api", "walk_up", "after_hours")),
            ("category", "ehr"),
            ("category", "network"),
            ("category", "printing"),
            ("category", None),
        ]
        assert table[("all", None)] == (5, 1, 100.0)
        assert table[("priority", "1")] == (2, 0, 40.0)
        assert table[("priority", "3")] == (2, 1, 40.0)
        assert table[("priority", "4")] == (0, 0, 0.0)
        assert table[("channel", "phone")] == (2, 1, 40.0)
        assert table[("channel", "api")] == (0, 0, 0.0)
        assert table[("category", "network")] == (2, 0, 40.0)
        assert table[("category", None)] == (1, 0, 20.0)

    async def test_hour_of_week_across_a_dst_change(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        """New York springs forward on Sunday 2025-03-09 at 07:00 UTC, Los Angeles (a site's zone) at 10:00."""
        tenant = await factory.tenant()
        await seed.set_timezone(tenant, "America/New_York")
        west = await seed.site(tenant, "WEST", timezone="America/Los_Angeles")
        for instant in (
            "2025-03-05T12:30",  # EST: Wednesday 07:30
            "2025-03-12T12:30",  # EDT: Wednesday 08:30
            "2025-03-09T06:59",  # EST: Sunday 01:59
            "2025-03-09T07:00",  # EDT: Sunday 03:00
            "2025-03-04T03:00",  # EST: Monday 22:00 (Tuesday in UTC)
            "2025-03-01T04:59",  # Friday 23:59 local: before the period (local dates)
            "2025-03-01T05:00",  # Saturday 00:00 local: the period's first instant
        ):
            await seed.incident(tenant, at(instant))
        for instant in (
            "2025-03-09T08:00",  # PST (New York has changed, Los Angeles not yet): Sunday 00:00
            "2025-03-09T10:15",  # PDT: Sunday 03:15
            "2025-03-12T16:00",  # PDT: Wednesday 09:00
        ):
            await seed.incident(tenant, at(instant), site_id=west)

        response = await reports.get(
            "volume/hour-of-week", await reports.admin_of(tenant), start="2025-03-01", end="2025-03-20"
        )
        body = response.json()
        assert (body["from"], body["to"], body["timezone"]) == (
            "2025-03-01T05:00:00Z",
            "2025-03-20T04:00:00Z",
            "America/New_York",
        )
        assert body["timezones"] == ["America/Los_Angeles", "America/New_York"]
        assert len(body["rows"]) == 168
        assert cells(body["rows"]) == {
            (2, 7): 1,
            (2, 8): 1,
            (2, 9): 1,
            (6, 0): 1,
            (6, 1): 1,
            (6, 3): 2,
            (0, 22): 1,
            (5, 0): 1,
        }
        assert body["rows"][0] == {
            "group": None,
            "weekday": 0,
            "weekday_name": "Monday",
            "hour": 0,
            "opened": 0,
        }

    async def test_hour_of_week_with_half_and_quarter_hour_offsets(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        await seed.set_timezone(tenant, "Asia/Kolkata")  # UTC+05:30
        kathmandu = await seed.site(tenant, "KTM", timezone="Asia/Kathmandu")  # UTC+05:45
        for instant in (
            "2025-01-06T18:29",  # Monday 23:59 IST
            "2025-01-06T18:30",  # Tuesday 00:00
            "2025-01-05T20:00",  # Monday 01:30
            "2025-01-05T18:00",  # Sunday 23:30 IST on the 5th: before the period
            "2025-01-12T18:15",  # Sunday 23:45
        ):
            await seed.incident(tenant, at(instant))
        await seed.incident(tenant, at("2025-01-07T18:14"), site_id=kathmandu)  # Tuesday 23:59 NPT
        await seed.incident(tenant, at("2025-01-07T18:15"), site_id=kathmandu)  # Wednesday 00:00

        body = await reports.json(
            "volume/hour-of-week", await reports.admin_of(tenant), start="2025-01-06", end="2025-01-13"
        )
        assert body["from"] == "2025-01-05T18:30:00Z"
        assert cells(body["rows"]) == {(0, 23): 1, (1, 0): 1, (0, 1): 1, (6, 23): 1, (1, 23): 1, (2, 0): 1}


class TestGrouping:
    async def test_group_by_site(self, factory: Factory, seed: Seeder, reports: Reports) -> None:
        tenant = await factory.tenant()
        north = await seed.site(tenant, "NORTH")
        south = await seed.site(tenant, "SOUTH")
        await seed.incident(
            tenant, at("2025-01-02T10:00"), priority=1, site_id=south, sla={"response": "met"}
        )
        await seed.incident(
            tenant, at("2025-01-03T10:00"), priority=2, site_id=south, sla={"response": "breached"}
        )
        await seed.incident(
            tenant, at("2025-01-04T10:00"), priority=3, site_id=north, sla={"response": "met"}
        )
        await seed.incident(tenant, at("2025-01-05T10:00"), priority=4)
        headers = await reports.admin_of(tenant)

        body = await reports.json("volume", headers, group_by="site", **JAN)
        totals = [(r["group"]["site_code"], r["opened"]) for r in body["rows"] if r["dimension"] == "all"]
        assert totals == [("NORTH", 1), ("SOUTH", 2), (None, 1)]
        south_group = next(r["group"] for r in body["rows"] if r["group"]["site_code"] == "SOUTH")
        assert south_group == {
            "tenant_id": str(tenant.id),
            "tenant_slug": tenant.slug,
            "site_id": str(south),
            "site_code": "SOUTH",
            "site_name": "SOUTH campus",
        }

        sla = await reports.json("sla-compliance", headers, group_by="site", **JAN)
        per_site = {
            r["group"]["site_code"]: (r["measured"], r["compliance_percent"])
            for r in sla["rows"]
            if r["priority"] is None and r["target"] == "response"
        }
        assert per_site == {"NORTH": (1, 100.0), "SOUTH": (2, 50.0)}

        backlog = await reports.json("backlog", headers, group_by="site", **JAN)
        assert [(r["group"]["site_code"], r["open"]) for r in backlog["rows"] if r["priority"] is None] == [
            ("NORTH", 1),
            ("SOUTH", 2),
            (None, 1),
        ]


async def _health_system(factory: Factory, seed: Seeder) -> dict[str, Any]:
    """A health system with two hospitals (one with a clinic below it) and an unrelated tenant, each with a
    distinct number of January incidents (1, 2, 3, 4 and 5)."""
    system = await factory.tenant(slug=f"hs-{factory_suffix()}")
    north = await factory.tenant(parent=system, slug=f"hs-north-{factory_suffix()}")
    south = await factory.tenant(parent=system, slug=f"hs-south-{factory_suffix()}")
    clinic = await factory.tenant(parent=north, slug=f"hs-clinic-{factory_suffix()}")
    other = await factory.tenant(slug=f"other-{factory_suffix()}")
    for count, tenant in enumerate((system, north, south, clinic, other), start=1):
        for i in range(count):
            await seed.incident(
                tenant, at(f"2025-01-1{i}T10:00"), priority=1 + i % 5, sla={"response": "met"}
            )
    return {"system": system, "north": north, "south": south, "clinic": clinic, "other": other}


def factory_suffix() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


def opened(body: dict[str, Any]) -> int:
    return int(next(r["opened"] for r in body["rows"] if r["dimension"] == "all" and r["group"] is None))


class TestRollup:
    async def test_a_health_system_over_its_hospitals(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        t = await _health_system(factory, seed)
        agent = await factory.staff(grants=[t["system"]])  # with its children
        headers = await factory.headers(agent, tenant=t["system"])

        assert opened(await reports.json("volume", headers, **JAN)) == 1
        rollup = await reports.json("volume", headers, scope="rollup", **JAN)
        assert opened(rollup) == 1 + 2 + 3 + 4
        assert rollup["scope"] == "rollup"
        assert rollup["tenants"][0]["id"] == str(t["system"].id), "the acting tenant comes first"
        assert {x["id"] for x in rollup["tenants"]} == {
            str(t[k].id) for k in ("system", "north", "south", "clinic")
        }

        per_tenant = await reports.json("volume", headers, scope="rollup", group_by="tenant", **JAN)
        totals = {r["group"]["tenant_id"]: r["opened"] for r in per_tenant["rows"] if r["dimension"] == "all"}
        assert totals == {
            str(t["system"].id): 1,
            str(t["north"].id): 2,
            str(t["south"].id): 3,
            str(t["clinic"].id): 4,
        }

        service = await reports.json("service", headers, scope="rollup", **JAN)
        response = by_priority(service["sla_compliance"], target="response")[None]
        assert (response["measured"], response["met"]) == (10, 10)

        # From a hospital, the rollup covers the hospital and its clinic only.
        north = await factory.headers(agent, tenant=t["north"])
        assert opened(await reports.json("volume", north, scope="rollup", **JAN)) == 2 + 4

    async def test_never_includes_a_tenant_the_caller_cannot_read(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        t = await _health_system(factory, seed)
        # Granted the system itself (not its children) and the clinic: the north hospital is skipped.
        agent = await seed.staff_with_grants([(t["system"], False), (t["clinic"], False)])
        body = await reports.json(
            "volume", await factory.headers(agent, tenant=t["system"]), scope="rollup", **JAN
        )
        assert opened(body) == 1 + 4
        assert {x["id"] for x in body["tenants"]} == {str(t["system"].id), str(t["clinic"].id)}

        # A tenant's own administrator is bound to that tenant: its rollup is itself.
        admin = await reports.admin_of(t["system"])
        body = await reports.json("volume", admin, scope="rollup", **JAN)
        assert opened(body) == 1
        assert [x["id"] for x in body["tenants"]] == [str(t["system"].id)]

        # MSP administrators reach every tenant below.
        msp_admin = await factory.staff(role="msp_admin", tier=None)
        body = await reports.json(
            "service", await factory.headers(msp_admin, tenant=t["system"]), scope="rollup", **JAN
        )
        assert next(r["opened"] for r in body["volume"] if r["dimension"] == "all") == 10


class TestIsolation:
    async def test_a_tenant_never_sees_another_tenants_numbers(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        a = await factory.tenant()
        b = await factory.tenant()
        await seed.incident(a, at("2025-01-02T10:00"), sla={"response": "met"})
        for _ in range(3):
            await seed.incident(b, at("2025-01-02T10:00"), sla={"response": "breached"})
        a_admin = await reports.admin_of(a)
        body = await reports.json("service", a_admin, scope="rollup", group_by="tenant", **JAN)
        assert {r["group"]["tenant_id"] for r in body["volume"]} == {str(a.id)}
        assert next(r["opened"] for r in body["volume"] if r["dimension"] == "all") == 1

        # Naming the other tenant: 404, for its administrator and for staff not granted it.
        assert (await reports.get("volume", {**a_admin, "MSP-Tenant": str(b.id)}, status=404, **JAN)).json()[
            "type"
        ] == "/problems/not-found"
        agent = await factory.staff(grants=[a])
        await reports.get("volume", await factory.headers(agent, tenant=b), status=404, scope="rollup", **JAN)

    async def test_who_may_read_reports(self, factory: Factory, reports: Reports) -> None:
        tenant = await factory.tenant()
        user = await factory.user(tenant)  # a tenant user has no reports:read
        body = (await reports.get("backlog", await factory.headers(user), status=403, **JAN)).json()
        assert body["type"] == "/problems/insufficient-scope"
        agent = await factory.staff(grants=[tenant])
        await reports.get("backlog", await factory.headers(agent), status=400, **JAN)  # no MSP-Tenant
        await reports.get("backlog", {}, status=401, **JAN)
        client_id, secret = await factory.integration_client(tenant, scopes="reports:read")
        token = await factory.client_token(client_id, secret)
        await reports.get("backlog", {"Authorization": f"Bearer {token}"}, **JAN)


class TestCsv:
    async def test_csv_by_parameter_or_accept_header(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        site = await seed.site(tenant, "MAIN")
        await seed.incident(
            tenant,
            at("2025-01-02T10:00"),
            priority=1,
            site_id=site,
            category='Lab, "STAT"',
            sla={"response": "met"},
        )
        await seed.incident(tenant, at("2025-01-03T10:00"), priority=2, sla={"response": "breached"})
        headers = await reports.admin_of(tenant)

        response = await reports.get("volume", headers, format="csv", **JAN)
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"].startswith(
            f'attachment; filename="volume_{tenant.slug}_20250101T0000_20250201T0000'
        )
        assert response.text.splitlines()[0] == "dimension,value,opened,cancelled,percent"
        lines = parse_csv(response.text)
        assert lines[0] == {
            "dimension": "all",
            "value": "",
            "opened": "2",
            "cancelled": "0",
            "percent": "100.0",
        }
        assert {
            "dimension": "category",
            "value": 'Lab, "STAT"',
            "opened": "1",
            "cancelled": "0",
            "percent": "50.0",
        } in lines

        by_site = await reports.get(
            "sla-compliance", {**headers, "Accept": "text/csv"}, group_by="site", **JAN
        )
        assert by_site.headers["content-type"].startswith("text/csv")
        header = by_site.text.splitlines()[0].split(",")
        assert header[:5] == ["tenant_id", "tenant_slug", "site_id", "site_code", "site_name"]
        assert header[5:] == [
            "priority",
            "target",
            "measured",
            "met",
            "breached",
            "pending",
            "compliance_percent",
        ]
        main = [
            r
            for r in parse_csv(by_site.text)
            if r["site_code"] == "MAIN" and r["priority"] == "1" and r["target"] == "response"
        ]
        assert main[0]["met"] == "1"
        assert main[0]["compliance_percent"] == "100.0"

        # format wins over Accept.
        as_json = await reports.get("sla-compliance", {**headers, "Accept": "text/csv"}, format="json", **JAN)
        assert as_json.headers["content-type"].startswith("application/json")

    async def test_text_cells_never_become_formulas(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        for category in ('=HYPERLINK("http://evil","x")', "+1", "-2+3", "@SUM(A1)", "\tcmd", "plain"):
            await seed.incident(tenant, at("2025-01-05T10:00"), category=category)
        headers = await reports.admin_of(tenant)
        for report, column in (("volume", "value"), ("service", "dimension_value")):
            text = (await reports.get(report, headers, format="csv", **JAN)).text
            values = {r[column] for r in parse_csv(text) if r["dimension"] == "category"}
            assert values == {
                '\'=HYPERLINK("http://evil","x")',
                "'+1",
                "'-2+3",
                "'@SUM(A1)",
                "'\tcmd",
                "plain",
            }
        # Numbers stay numbers (a negative one too: it is not text).
        lines = parse_csv((await reports.get("volume", headers, format="csv", **JAN)).text)
        assert lines[0]["opened"] == "6"

    async def test_service_report_as_one_long_table(
        self, factory: Factory, seed: Seeder, reports: Reports
    ) -> None:
        tenant = await factory.tenant()
        await seed.incident(
            tenant, at("2025-01-02T10:00"), priority=1, sla={"response": "met", "resolution": "breached"}
        )
        response = await reports.get("service", await reports.admin_of(tenant), format="csv", **JAN)
        lines = parse_csv(response.text)
        assert list(lines[0]) == [
            "section",
            "priority",
            "target",
            "dimension",
            "dimension_value",
            "weekday",
            "hour",
            "metric",
            "value",
        ]
        assert {r["section"] for r in lines} == {
            "sla_compliance",
            "response_times",
            "resolution_quality",
            "backlog",
            "volume",
            "volume_by_hour_of_week",
        }

        def value(section: str, metric: str, **dims: str) -> str:
            found = [
                r
                for r in lines
                if r["section"] == section
                and r["metric"] == metric
                and all(r[k] == v for k, v in dims.items())
            ]
            assert len(found) == 1, (section, metric, dims, found)
            return found[0]["value"]

        assert value("sla_compliance", "compliance_percent", priority="1", target="resolution") == "0.0"
        assert value("sla_compliance", "met", priority="", target="response") == "1"
        assert value("volume", "opened", dimension="all") == "1"
        assert value("volume_by_hour_of_week", "opened", weekday="3", hour="5") == "1"  # Thursday 05:00 EST
        assert value("backlog", "open", priority="1") == "1"


class TestBadInput:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"from": "2025-02-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}, "to"),
            ({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "to"),
            ({"from": "2024-01-01", "to": "2025-02-05"}, "to"),
            ({"from": "yesterday", "to": "2025-01-01"}, "from"),
            ({"from": "2025-01-01", "to": "2025-13-01"}, "to"),
            ({"from": "2025-01-01", "to": "2025-02-01", "group_by": "month"}, "group_by"),
            ({"from": "2025-01-01", "to": "2025-02-01", "scope": "everything"}, "scope"),
            ({"from": "2025-01-01", "to": "2025-02-01", "format": "xml"}, "format"),
            ({"from": "2025-01-01"}, "to"),
        ],
    )
    async def test_refused_with_a_validation_problem(
        self, factory: Factory, reports: Reports, params: dict[str, str], field: str
    ) -> None:
        tenant = await factory.tenant()
        response = await reports.client.get(
            "/api/v1/reports/service", params=params, headers=await reports.admin_of(tenant)
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["type"] == "/problems/validation-error"
        assert any(field in e["field"] for e in body["errors"]), body["errors"]

    @pytest.mark.parametrize(
        ("timezone", "params"),
        [
            ("Asia/Tokyo", {"from": "0001-01-01", "to": "0001-02-01"}),
            ("UTC", {"from": "0001-01-01T00:00:00+05:00", "to": "0001-02-01T00:00:00Z"}),
            ("America/New_York", {"from": "9999-12-01", "to": "9999-12-31"}),
            ("UTC", {"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:00:00-05:00"}),
            ("Pacific/Kiritimati", {"from": "1899-12-31", "to": "1900-01-31"}),
            ("UTC", {"from": "2025-01-01T00:00:00+24:00", "to": "2025-02-01"}),
        ],
    )
    async def test_instants_out_of_range_are_refused_not_crashed(
        self, factory: Factory, seed: Seeder, reports: Reports, timezone: str, params: dict[str, str]
    ) -> None:
        tenant = await factory.tenant()
        await seed.set_timezone(tenant, timezone)
        for name in ("service", "volume/hour-of-week", "sla-compliance"):
            response = await reports.client.get(
                f"/api/v1/reports/{name}", params=params, headers=await reports.admin_of(tenant)
            )
            assert response.status_code == 422, (name, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")

    async def test_a_400_day_period_is_accepted(self, factory: Factory, reports: Reports) -> None:
        tenant = await factory.tenant()
        body = await reports.json(
            "volume", await reports.admin_of(tenant), start="2024-01-01T00:00:00Z", end="2025-02-04T00:00:00Z"
        )
        assert opened(body) == 0


async def test_the_reports_are_documented(reports: Reports) -> None:
    schema = (await reports.client.get("/schema/openapi.json")).json()
    paths = [p for p in schema["paths"] if p.startswith("/api/v1/reports/")]
    assert sorted(paths) == [
        "/api/v1/reports/backlog",
        "/api/v1/reports/resolution-quality",
        "/api/v1/reports/response-times",
        "/api/v1/reports/service",
        "/api/v1/reports/sla-compliance",
        "/api/v1/reports/volume",
        "/api/v1/reports/volume/hour-of-week",
    ]
    for path in paths:
        operation = schema["paths"][path]["get"]
        assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
        assert "422" in operation["responses"]
        assert {p["name"] for p in operation["parameters"]} >= {"from", "to", "scope", "group_by", "format"}
        assert operation["security"] == [{"bearerAuth": ["reports:read"]}]
