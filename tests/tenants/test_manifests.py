from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from httpx import AsyncClient
from sqlalchemy import func, select
from tests.conftest import Backend, base_settings, serving
from tests.support.echo import Captured

from msp_platform import cli
from msp_platform.app import create_app
from msp_platform.auth.passwords import verify_password
from msp_platform.config import PROJECT_ROOT
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.demo import DEMO_TENANT, DEMO_TENANT_ADMIN, prepare_demo
from msp_platform.models.audit import AuditEvent
from msp_platform.models.site import Site
from msp_platform.models.sla import SlaPolicy
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User
from msp_platform.tenants.manifest import (
    ApplyReport,
    ManifestError,
    apply_directory,
    check_files,
    load_path,
)

TENANTS_DIR = PROJECT_ROOT / "tenants"


# --- the shipped manifests ---------------------------------------------------------------------------------


def test_every_manifest_in_tenants_is_valid() -> None:
    files = sorted(TENANTS_DIR.glob("*.y*ml"))
    assert len(files) >= 2
    items, problems = check_files(TENANTS_DIR)
    assert problems == [], "\n".join(str(p) for p in problems)
    assert len(items) == len(files), "every file in tenants/ is a manifest"
    by_slug = {item.slug: item.manifest for item in items}
    assert "st-marys" in by_slug, "the demo and the docs rely on st-marys"
    parent = by_slug["st-marys"].tenant.parent
    assert parent in by_slug, "st-marys' parent is shipped too"
    for slug, manifest in by_slug.items():
        assert manifest.sites, slug
        assert any(u.role == "tenant_admin" for u in manifest.users), slug
    assert any(m.tenant.business_hours and m.tenant.holidays for m in by_slug.values())
    # The demo's incidents get SLA clocks: every shipped tenant has a policy, the hospitals around the clock.
    assert all(m.sla_policy is not None for m in by_slug.values())
    hospital = by_slug["st-marys"].sla_policy
    assert hospital is not None
    assert hospital.calendar == "24x7"
    assert hospital.targets["1"].update_minutes is not None
    assert any(m.sla_policy and m.sla_policy.calendar == "business_hours" for m in by_slug.values())
    assert len({m.tenant.timezone for m in by_slug.values()}) >= 2
    for file in files:
        text = file.read_text().lower()
        assert "password" not in text
        assert "secret" not in text


# --- applying ----------------------------------------------------------------------------------------------


def _slug(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _prefix() -> str:
    return "M" + uuid.uuid4().hex[:8].upper()


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def _system(slug: str, prefix: str, *, name: str = "Lakeview Health System") -> str:
    return f"""\
        version: 1
        tenant:
          slug: {slug}
          name: {name}
          ticket_prefix: {prefix}
          timezone: America/New_York
          business_hours:
            - {{days: [mon-fri], start: 08:00, end: 17:00}}
            - {{days: sat, start: "09:00", end: "12:00"}}
          holidays:
            - {{date: 2026-12-25, name: Christmas Day}}
            - {{date: 2026-11-26, name: Thanksgiving}}
        sites:
          - {{code: hq, name: System Office, kind: office, address: 1 Main St}}
        users:
          - {{email: CIO@Lakeview.example, name: Casey Cio, role: tenant_admin, site: HQ, vip: true}}
        """


def _hospital(slug: str, prefix: str, parent: str, *, ed_name: str = "Emergency Department") -> str:
    return f"""\
        version: 1
        tenant:
          slug: {slug}
          name: Lakeview General
          ticket_prefix: {prefix}
          timezone: America/Chicago
          parent: {parent}
        sites:
          - {{code: LG-ED, name: {ed_name}, kind: department, parent: LG}}
          - {{code: LG, name: Lakeview General Hospital, kind: hospital}}
          - {{code: MAIN, name: Main Entrance, parent: LG}}
        users:
          - email: er.doc@lakeview.example
            name: Dr. Erin Doc
            title: ED Physician
            department: Emergency Medicine
            site: LG-ED
            clinical: true
        """


async def _apply(db: Database, path: Path, *, dry_run: bool = False) -> tuple[ApplyReport, Captured]:
    out = Captured()
    report = await apply_directory(db, path, echo=out, dry_run=dry_run)
    return report, out


async def _tenant(db: Database, slug: str) -> Tenant | None:
    async with db.dangerously_unscoped_session() as session:
        found: Tenant | None = await session.scalar(select(Tenant).where(Tenant.slug == slug))
        return found


async def _rows(db: Database, model: Any, tenant_id: uuid.UUID) -> list[Any]:
    async with db.dangerously_unscoped_session() as session:
        rows = await session.scalars(select(model).where(model.tenant_id == tenant_id))
        return list(rows.all())


async def _audit_count(db: Database, tenant_id: uuid.UUID) -> int:
    async with db.dangerously_unscoped_session() as session:
        count = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        )
        return int(count or 0)


async def test_apply_creates_parents_first_then_changes_nothing(owner_db: Database, tmp_path: Path) -> None:
    system, hospital = _slug("sys"), _slug("hosp")
    # "a-..." sorts before "z-...": the child's file is read first, its parent still goes first.
    _write(tmp_path, "a-hospital.yaml", _hospital(hospital, _prefix(), system))
    _write(tmp_path, "z-system.yaml", _system(system, _prefix().lower()))

    report, out = await _apply(owner_db, tmp_path)
    assert [(c.op, c.kind, c.key) for c in report.changes if c.kind == "tenant"] == [
        ("+", "tenant", system),
        ("+", "tenant", hospital),
    ]
    assert report.count("site", "+") == 4
    assert report.count("user", "+") == 2
    assert f"+ tenant {system}" in out.text
    assert "+ site LG-ED" in out.text
    assert out.lines[-1].startswith("applied:")

    parent = await _tenant(owner_db, system)
    child = await _tenant(owner_db, hospital)
    assert parent is not None
    assert child is not None
    assert child.parent_id == parent.id
    assert (parent.manifest_version, parent.status, parent.timezone) == (1, "active", "America/New_York")
    assert parent.ticket_prefix.isupper()
    assert parent.business_calendar["hours"][0] == {"weekday": 0, "start": "08:00", "end": "17:00"}
    assert len(parent.business_calendar["hours"]) == 6
    assert [h["date"] for h in parent.business_calendar["holidays"]] == ["2026-11-26", "2026-12-25"]

    sites = {s.code: s for s in await _rows(owner_db, Site, child.id)}
    assert set(sites) == {"LG", "LG-ED", "MAIN"}
    assert sites["LG-ED"].parent_id == sites["LG"].id
    users = await _rows(owner_db, User, child.id)
    assert [(u.email, u.site_id, u.clinical, u.password_hash) for u in users] == [
        ("er.doc@lakeview.example", sites["LG-ED"].id, True, None)
    ]
    (cio,) = await _rows(owner_db, User, parent.id)
    assert (cio.email, cio.role, cio.vip) == ("cio@lakeview.example", "tenant_admin", True)

    events_before = await _audit_count(owner_db, child.id)
    assert events_before >= 5, "the tenant, its sites and its users are audited in its own chain"
    async with owner_db.dangerously_unscoped_session() as session:
        actors = set(
            (await session.scalars(select(AuditEvent.actor).where(AuditEvent.tenant_id == child.id))).all()
        )
    assert actors == {"cli:tenants-apply"}

    again, out = await _apply(owner_db, tmp_path)
    assert not again.changed
    assert [(c.op, c.key) for c in again.changes] == [("=", system), ("=", hospital)]
    assert f"= tenant {system}: unchanged" in out.text
    assert await _audit_count(owner_db, child.id) == events_before


async def test_one_changed_field_is_one_update(owner_db: Database, tmp_path: Path) -> None:
    system, hospital = _slug("sys"), _slug("hosp")
    prefix = _prefix()
    _write(tmp_path, "system.yaml", _system(system, _prefix()))
    _write(tmp_path, "hospital.yaml", _hospital(hospital, prefix, system))
    await _apply(owner_db, tmp_path)
    child = await _tenant(owner_db, hospital)
    assert child is not None
    events_before = await _audit_count(owner_db, child.id)

    _write(
        tmp_path, "hospital.yaml", _hospital(hospital, prefix, system, ed_name="Emergency & Trauma Center")
    )
    report, out = await _apply(owner_db, tmp_path)
    changed = [c for c in report.changes if c.op != "="]
    assert len(changed) == 1
    assert (changed[0].kind, changed[0].key) == ("site", "LG-ED")
    assert changed[0].changes == (("name", "Emergency Department", "Emergency & Trauma Center"),)
    assert "~ site LG-ED name: 'Emergency Department' -> 'Emergency & Trauma Center'" in out.lines[-2]
    assert await _audit_count(owner_db, child.id) == events_before + 1
    sites = {s.code: s.name for s in await _rows(owner_db, Site, child.id)}
    assert sites["LG-ED"] == "Emergency & Trauma Center"

    # Tenant settings: the calendar is summarised, the parent shown by slug.
    _write(tmp_path, "system.yaml", _system(system, _prefix(), name="Lakeview Health"))
    _write(tmp_path, "system.yaml", (tmp_path / "system.yaml").read_text().replace("17:00", "18:00"))
    report, out = await _apply(owner_db, tmp_path)
    (tenant_change,) = [c for c in report.changes if c.op == "~"]
    assert {name for name, _, _ in tenant_change.changes} == {"name", "ticket_prefix", "business_calendar"}
    assert "mon/tue/wed/thu/fri 08:00-18:00" in out.text


async def test_dry_run_stores_nothing(owner_db: Database, tmp_path: Path) -> None:
    system, hospital = _slug("sys"), _slug("hosp")
    _write(tmp_path, "system.yaml", _system(system, _prefix()))
    _write(tmp_path, "hospital.yaml", _hospital(hospital, _prefix(), system))
    report, out = await _apply(owner_db, tmp_path, dry_run=True)
    assert report.dry_run
    assert report.count("tenant", "+") == 2
    assert "dry run" in out.lines[-1]
    assert await _tenant(owner_db, system) is None
    assert await _tenant(owner_db, hospital) is None

    await _apply(owner_db, tmp_path)
    before = await _tenant(owner_db, system)
    assert before is not None
    _write(tmp_path, "system.yaml", _system(system, before.ticket_prefix, name="Renamed In Dry Run"))
    report, _ = await _apply(owner_db, tmp_path, dry_run=True)
    assert report.count("tenant", "~") == 1
    after = await _tenant(owner_db, system)
    assert after is not None
    assert after.name == before.name


async def test_invalid_manifests_apply_nothing_and_say_why(owner_db: Database, tmp_path: Path) -> None:
    good = _slug("good")
    _write(tmp_path, "good.yaml", _system(good, _prefix()))
    _write(
        tmp_path,
        "bad.yaml",
        f"""\
        version: 1
        tenant:
          slug: Bad_Slug
          name: Bad
          ticket_prefix: {_prefix()}
          timezone: Mars/Olympus
          parent: {_slug("nowhere")}
          business_hours:
            - {{days: [mon-fri], start: "08:00", end: "17:00"}}
            - {{days: fri, start: "16:00", end: "20:00"}}
        sites:
          - {{code: A, name: A, parent: B}}
          - {{code: B, name: B, parent: A}}
          - {{code: C, name: C, parent: Z}}
          - {{code: c, name: again}}
        users:
          - {{email: not-an-email, name: X, site: Q}}
        """,
    )
    with pytest.raises(ManifestError) as caught:
        await _apply(owner_db, tmp_path)
    problems = {(Path(p.file).name, p.path) for p in caught.value.problems}
    assert {
        ("bad.yaml", "tenant.slug"),
        ("bad.yaml", "tenant.timezone"),
        ("bad.yaml", "tenant.parent"),
        ("bad.yaml", "tenant.business_hours[1] (fri)"),
        ("bad.yaml", "sites[0].parent"),
        ("bad.yaml", "sites[1].parent"),
        ("bad.yaml", "sites[2].parent"),
        ("bad.yaml", "sites[3].code"),
        ("bad.yaml", "users[0].email"),
        ("bad.yaml", "users[0].site"),
    } <= problems
    assert all(p.file.endswith("bad.yaml") for p in caught.value.problems)
    assert "overlaps" in str(caught.value)
    assert await _tenant(owner_db, good) is None, "one bad file means nothing is applied"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("version: 2\ntenant: {}\n", "version", "1"),
        ("- just\n- a list\n", "", "mapping"),
        ("version: 1\ntenant: [unclosed\n", "", "YAML"),
        ("version: 1\nversion: 1\n", "", "twice"),
        (
            "version: 1\ntenant: {slug: abc, name: A, ticket_prefix: AB, timezone: UTC}\n"
            "users: [{email: a@b.example, name: A, password: hunter2}]\n",
            "users[0]",
            "secrets",
        ),
        (
            "version: 1\ntenant: {slug: abc, name: A, ticket_prefix: AB, timezone: UTC, colour: red}\n",
            "tenant.colour",
            "Extra",
        ),
        (
            "version: 1\ntenant: {slug: abc, name: A, ticket_prefix: AB, timezone: UTC,"
            " holidays: [{date: 2026-02-30}]}\n",
            "tenant.holidays[0].date",
            "date",
        ),
        (
            "version: 1\ntenant: {slug: abc, name: A, ticket_prefix: AB, timezone: UTC,"
            " business_hours: [{days: [funday], start: '08:00', end: '17:00'}]}\n",
            "tenant.business_hours[0].days",
            "funday",
        ),
        (
            "version: 1\ntenant: {slug: abc, name: A, ticket_prefix: AB, timezone: UTC}\nsites: [{code: X}]\n",
            "sites[0].name",
            "required",
        ),
    ],
)
def test_schema_problems_name_file_and_path(tmp_path: Path, text: str, path: str, message: str) -> None:
    file = _write(tmp_path, "one.yaml", text)
    _, problems = load_path(file)
    assert problems, text
    assert any(p.path == path and message.lower() in p.message.lower() for p in problems), problems
    assert all(p.file.endswith("one.yaml") for p in problems)


def test_rules_across_files(tmp_path: Path) -> None:
    a, b = _slug("a"), _slug("b")
    _write(tmp_path, "a.yaml", _hospital(a, "SAME1", b))
    _write(tmp_path, "b.yaml", _hospital(b, "same1", a))
    _write(tmp_path, "c.yaml", _hospital(a, _prefix(), b))
    _, problems = check_files(tmp_path)
    rendered = [str(p) for p in problems]
    assert any("c.yaml: tenant.slug" in r and "a.yaml" in r for r in rendered), rendered
    assert any("b.yaml: tenant.ticket_prefix" in r for r in rendered), rendered


async def test_parent_cycles_and_unknown_parents(owner_db: Database, tmp_path: Path) -> None:
    a, b = _slug("a"), _slug("b")
    _write(tmp_path, "a.yaml", _hospital(a, _prefix(), b))
    _write(tmp_path, "b.yaml", _hospital(b, _prefix(), a))
    with pytest.raises(ManifestError) as caught:
        await _apply(owner_db, tmp_path)
    assert {(Path(p.file).name, p.path) for p in caught.value.problems} == {
        ("a.yaml", "tenant.parent"),
        ("b.yaml", "tenant.parent"),
    }
    assert await _tenant(owner_db, a) is None


async def test_parent_may_already_be_stored_and_site_codes_are_per_tenant(
    owner_db: Database, tmp_path: Path
) -> None:
    system, one, two = _slug("sys"), _slug("one"), _slug("two")
    _write(tmp_path / "first", "system.yaml", _system(system, _prefix()))
    await _apply(owner_db, tmp_path / "first")
    _write(tmp_path / "second", "one.yaml", _hospital(one, _prefix(), system))
    _write(tmp_path / "second", "two.yaml", _hospital(two, _prefix(), system))
    report, _ = await _apply(owner_db, tmp_path / "second")
    assert report.count("site", "+") == 6, "both hospitals get their own LG, LG-ED and MAIN"
    parent = await _tenant(owner_db, system)
    first = await _tenant(owner_db, one)
    assert parent is not None
    assert first is not None
    assert first.parent_id == parent.id
    # Applying one file alone later still finds its stored parent.
    report, _ = await _apply(owner_db, tmp_path / "second" / "one.yaml")
    assert not report.changed


def test_cli_apply(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: backend.settings)
    slug = _slug("cli")
    manifests = tmp_path / "manifests"
    _write(manifests, "system.yaml", _system(slug, _prefix()))
    runner = CliRunner()
    dry = runner.invoke(cli.main, ["tenants", "apply", str(manifests), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"+ tenant {slug}" in dry.output
    applied = runner.invoke(cli.main, ["tenants", "apply", str(manifests)])
    assert applied.exit_code == 0, applied.output
    assert "1 created" in applied.output
    again = runner.invoke(cli.main, ["tenants", "apply", str(manifests / "system.yaml")])
    assert f"= tenant {slug}: unchanged" in again.output
    _write(
        manifests, "broken.yaml", "version: 1\ntenant: {slug: NO, name: x, ticket_prefix: x, timezone: UTC}\n"
    )
    broken = runner.invoke(cli.main, ["tenants", "apply", str(manifests)])
    assert broken.exit_code == 1
    assert "nothing was applied" in broken.output
    assert "broken.yaml: tenant.slug" in broken.output
    assert "broken.yaml: tenant.ticket_prefix" in broken.output
    missing = runner.invoke(cli.main, ["tenants", "apply", str(tmp_path / "nope")])
    assert missing.exit_code == 1


# --- SLA policies ------------------------------------------------------------------------------------------

_SLA = """\
    sla_policy:
      name: Hospital clinical 24x7
      calendar: 24x7
      pause_states: [on_hold]
      pause_hold_reasons: [awaiting_caller]
      warning_percents: [50, 75, 90]
      targets:
        1: {response_minutes: 15, resolution_minutes: 240, update_minutes: 30}
        2: {response_minutes: 30, resolution_minutes: 480}
        "3": {response_minutes: 240, resolution_minutes: 4320}
    """


def _with_policy(slug: str, prefix: str, parent: str, policy: str = _SLA) -> str:
    return _hospital(slug, prefix, parent).rstrip(" ") + textwrap.indent(textwrap.dedent(policy), " " * 8)


async def _policies(db: Database, slug: str) -> list[SlaPolicy]:
    tenant = await _tenant(db, slug)
    assert tenant is not None
    return sorted(await _rows(db, SlaPolicy, tenant.id), key=lambda p: p.version)


async def test_sla_policy_is_created_then_unchanged_then_versioned(
    owner_db: Database, tmp_path: Path
) -> None:
    system, hospital, prefix = _slug("sys"), _slug("hosp"), _prefix()
    _write(tmp_path, "system.yaml", _system(system, _prefix()))
    _write(tmp_path, "hospital.yaml", _with_policy(hospital, prefix, system))

    report, out = await _apply(owner_db, tmp_path)
    assert [(c.op, c.tenant) for c in report.changes if c.kind == "sla_policy"] == [("+", hospital)]
    assert "+ sla_policy 'Hospital clinical 24x7' (version 1)" in out.text
    assert "SLA policies: 1 created, 0 new versions, 0 unchanged" in out.lines[-1]
    (first,) = await _policies(owner_db, hospital)
    assert (first.version, first.calendar, first.created_by) == (1, "24x7", "cli:tenants-apply")
    assert first.targets["1"] == {"response_minutes": 15, "resolution_minutes": 240, "update_minutes": 30}
    assert set(first.targets) == {"1", "2", "3"}, "YAML's numeric keys are the API's priorities"
    assert (first.pause_hold_reasons, first.warning_percents) == (["awaiting_caller"], [50, 75, 90])
    tenant = await _tenant(owner_db, hospital)
    assert tenant is not None
    async with owner_db.dangerously_unscoped_session() as session:
        actions = set(
            (await session.scalars(select(AuditEvent.action).where(AuditEvent.tenant_id == tenant.id))).all()
        )
    assert any(a.startswith("sla_polic") for a in actions), actions
    events = await _audit_count(owner_db, tenant.id)

    again, out = await _apply(owner_db, tmp_path)
    assert not again.changed
    assert [(c.op, c.kind) for c in again.changes if c.tenant == hospital] == [
        ("=", "tenant"),
        ("=", "sla_policy"),
    ]
    assert "= sla_policy 'Hospital clinical 24x7' (version 1): unchanged" in out.text
    assert len(await _policies(owner_db, hospital)) == 1
    assert await _audit_count(owner_db, tenant.id) == events

    tighter = _SLA.replace("response_minutes: 15,", "response_minutes: 10,").replace(
        "[50, 75, 90]", "[75, 90]"
    )
    _write(tmp_path, "hospital.yaml", _with_policy(hospital, prefix, system, tighter))
    report, out = await _apply(owner_db, tmp_path)
    (changed,) = [c for c in report.changes if c.op != "="]
    assert (changed.kind, changed.key) == ("sla_policy", "'Hospital clinical 24x7' (version 2)")
    assert {name: (before, after) for name, before, after in changed.changes} == {
        "warning_percents": ([50, 75, 90], [75, 90]),
        "targets.1.response_minutes": (15, 10),
    }
    assert (
        "~ sla_policy 'Hospital clinical 24x7' (version 2) targets.1.response_minutes: 15 -> 10" in out.text
    )
    versions = await _policies(owner_db, hospital)
    assert [(p.version, p.targets["1"]["response_minutes"]) for p in versions] == [(1, 15), (2, 10)]
    assert versions[0].warning_percents == [50, 75, 90], "a published version never changes"

    # A manifest without a policy leaves the tenant's policies (from a manifest or the API) alone.
    _write(tmp_path, "hospital.yaml", _hospital(hospital, prefix, system))
    report, out = await _apply(owner_db, tmp_path)
    assert not report.changed
    assert not [line for line in out.lines if "sla_policy " in line]
    assert "SLA policies" not in out.lines[-1]
    assert len(await _policies(owner_db, hospital)) == 2


async def test_sla_policy_dry_run_stores_nothing(owner_db: Database, tmp_path: Path) -> None:
    system, hospital, prefix = _slug("sys"), _slug("hosp"), _prefix()
    _write(tmp_path, "system.yaml", _system(system, _prefix()))
    _write(tmp_path, "hospital.yaml", _with_policy(hospital, prefix, system))
    report, out = await _apply(owner_db, tmp_path, dry_run=True)
    assert report.count("sla_policy", "+") == 1
    assert "+ sla_policy 'Hospital clinical 24x7' (version 1)" in out.text
    assert await _tenant(owner_db, hospital) is None

    await _apply(owner_db, tmp_path)
    _write(
        tmp_path,
        "hospital.yaml",
        _with_policy(hospital, prefix, system, _SLA.replace("calendar: 24x7", "calendar: business_hours")),
    )
    report, out = await _apply(owner_db, tmp_path, dry_run=True)
    assert report.count("sla_policy", "~") == 1
    assert "(version 2) calendar: '24x7' -> 'business_hours'" in out.text
    assert "dry run" in out.lines[-1]
    assert [p.calendar for p in await _policies(owner_db, hospital)] == ["24x7"]


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            ("response_minutes: 15,", "response_minutes: 0,"),
            "sla_policy.targets.1.response_minutes",
            "Expected `int` >= 1",
        ),
        (
            ("resolution_minutes: 480}", "resolution_minutes: -5}"),
            "sla_policy.targets.2.resolution_minutes",
            "Expected `int` >= 1",
        ),
        (("[50, 75, 90]", "[0, 50]"), "sla_policy.warning_percents[0]", "0 is outside 1..100"),
        (("[50, 75, 90]", "[50, 101]"), "sla_policy.warning_percents[1]", "101 is outside 1..100"),
        (
            ("[on_hold]", "[on_hold, lunch_break]"),
            "sla_policy.pause_states[1]",
            "Invalid enum value 'lunch_break'",
        ),
        (("[on_hold]", "[resolved]"), "sla_policy.pause_states[0]", "resolved stops the clock"),
        (
            ("response_minutes: 240,", "response_minutes: 5000,"),
            "sla_policy.targets.3.resolution_minutes",
            "must not be shorter than the response target",
        ),
        (("calendar: 24x7", "calendar: sometimes"), "sla_policy.calendar", "Invalid enum value 'sometimes'"),
        (("pause_states:", "colour: red\n      pause_states:"), "sla_policy", "unknown field `colour`"),
    ],
)
async def test_invalid_sla_policy_is_reported_with_its_path(
    owner_db: Database, tmp_path: Path, change: tuple[str, str], path: str, message: str
) -> None:
    """The messages of POST /api/v1/sla/policies (the same schema and rules), at the manifest's path."""
    system, hospital = _slug("sys"), _slug("hosp")
    _write(tmp_path, "system.yaml", _system(system, _prefix()))
    assert change[0] in _SLA
    _write(tmp_path, "hospital.yaml", _with_policy(hospital, _prefix(), system, _SLA.replace(*change)))
    with pytest.raises(ManifestError) as caught:
        await _apply(owner_db, tmp_path)
    found = [(Path(p.file).name, p.path, p.message) for p in caught.value.problems]
    assert any(f == ("hospital.yaml", path, f[2]) and message in f[2] for f in found), found
    assert await _tenant(owner_db, system) is None, "nothing is applied"
    assert await _tenant(owner_db, hospital) is None


def test_sla_policy_on_business_hours_is_checked_on_the_manifests_hours(tmp_path: Path) -> None:
    """A business-hours policy is checked on the calendar the manifest gives the tenant (48 open hours a
    week here: a year of business time takes 182 weeks, more than the API allows)."""
    long = _SLA.replace("resolution_minutes: 4320", "resolution_minutes: 525600")
    office = _system(_slug("sys"), _prefix()).rstrip(" ") + textwrap.indent(textwrap.dedent(long), " " * 8)
    _write(tmp_path, "on-24x7.yaml", office)
    assert check_files(tmp_path)[1] == []
    _write(tmp_path, "on-24x7.yaml", office.replace("calendar: 24x7", "calendar: business_hours"))
    _, problems = check_files(tmp_path)
    assert [(p.path, "182 weeks" in p.message) for p in problems] == [
        ("sla_policy.targets.3.resolution_minutes", True)
    ]


# --- the demo ----------------------------------------------------------------------------------------------


async def test_demo_applies_the_manifests_and_creates_accounts_once(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
    assert settings.tenants_dir == TENANTS_DIR
    out = Captured()
    first = await prepare_demo(settings, echo=out)
    assert f"+ tenant {DEMO_TENANT}" in out.text
    assert first["tenant_admin_email"] == DEMO_TENANT_ADMIN
    assert first["tenant_admin_tenant"] == DEMO_TENANT
    assert {"msp_admin_password", "client_id", "client_secret", "tenant_admin_password"} <= set(first)
    assert first["tenant_admin_password"] in out.text
    saved = json.loads((tmp_path / "demo-credentials.json").read_text())
    assert saved == first

    second = await prepare_demo(settings, echo=Captured())
    assert second == first, "restarting the demo keeps the accounts and their credentials"

    db = Database.create(settings)
    try:
        tenant = await _tenant(db, DEMO_TENANT)
        assert tenant is not None
        admins = [u for u in await _rows(db, User, tenant.id) if u.email == DEMO_TENANT_ADMIN]
        assert len(admins) == 1
        assert verify_password(admins[0].password_hash, first["tenant_admin_password"])
    finally:
        await db.dispose()

    # A lost credentials file: the demo sets new passwords it can print.
    (tmp_path / "demo-credentials.json").unlink()
    third = await prepare_demo(settings, echo=Captured())
    assert third["tenant_admin_password"] != first["tenant_admin_password"]
    assert third["msp_admin_password"] != first["msp_admin_password"]

    app = create_app(settings)
    http: AsyncClient
    async with serving(app) as http:
        signed_in = await http.post(
            "/api/v1/auth/sign-in",
            json={
                "email": DEMO_TENANT_ADMIN,
                "password": third["tenant_admin_password"],
                "tenant": DEMO_TENANT,
            },
        )
        assert signed_in.status_code == 200, signed_in.text
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        listed = (await http.get("/api/v1/tenants", headers=headers)).json()["items"]
        assert [t["slug"] for t in listed] == [DEMO_TENANT]
        staff = await http.post(
            "/api/v1/auth/sign-in",
            json={"email": third["msp_admin_email"], "password": third["msp_admin_password"]},
        )
        assert staff.status_code == 200
        every = await http.get(
            "/api/v1/tenants", headers={"Authorization": f"Bearer {staff.json()['access_token']}"}
        )
        assert DEMO_TENANT in {t["slug"] for t in every.json()["items"]}
    assert await migrate.current(settings)
