"""Tenant manifests: versioned YAML in ``tenants/`` describing a tenant, its sites and (optionally) its people,
applied idempotently by ``msp tenants apply`` (and by ``msp serve --demo``).

One file per tenant::

    version: 1
    tenant:
      slug: st-marys                 # the key: applying again updates this tenant
      name: St. Mary's Hospital
      ticket_prefix: SMH
      timezone: America/Chicago
      parent: riverbend-health       # slug of a tenant in another manifest or already stored
      business_hours:                # omitted or empty: 24x7
        - {days: [mon-fri], start: "07:00", end: "19:00"}
      holidays:
        - {date: 2026-12-25, name: Christmas Day}
    sites:                           # keyed by code (stored upper-case)
      - {code: SMH, name: St. Mary's Hospital, kind: hospital, address: ..., timezone: America/Chicago}
      - {code: SMH-ED, name: Emergency Department, kind: department, parent: SMH}
    users:                           # keyed by email; never passwords or other secrets
      - {email: jdoe@stmarys.example, name: Jane Doe, role: tenant_admin, site: SMH, clinical: false}
    sla_policy:                      # optional; the body of POST /api/v1/sla/policies, checked the same way
      name: Hospital clinical 24x7
      calendar: 24x7                 # or business_hours (the tenant's, above), or custom (custom_calendar)
      pause_states: [on_hold]
      pause_hold_reasons: [awaiting_caller]
      warning_percents: [50, 75, 90]
      targets:                       # priority 1..5 -> minutes of (calendar) time; no entry: no SLA
        1: {response_minutes: 15, resolution_minutes: 240, update_minutes: 30}

Applying is an upsert: nothing is ever deleted, and fields a manifest does not describe (a tenant's status,
a site's ``active`` flag, a user's password) are left alone. SLA policies are versioned: a manifest whose
``sla_policy`` differs from the tenant's current version publishes a new version (incidents keep the version
they opened under); a manifest without one leaves the tenant's policies alone. Every file is validated first (schema, then the
rules the API applies, then against the stored data); any problem means nothing is applied. Then everything
is applied in one transaction, parents before children (across files), printing a diff.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.audit.service import ACTOR as ACTOR_KEY
from msp_platform.audit.service import set_actor
from msp_platform.authz.service import system_tenant_context
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.kit.errors import FieldError, PlatformError
from msp_platform.kit.ids import new_id
from msp_platform.kit.patch import assign
from msp_platform.kit.validation import code_errors, email_errors, text_errors, timezone_errors
from msp_platform.models.site import Site, SiteKind
from msp_platform.models.tenant import Tenant, TenantStatus
from msp_platform.models.user import User, UserRole
from msp_platform.sites import service as sites_service
from msp_platform.sites.schemas import SiteCreate
from msp_platform.sla import service as sla_service
from msp_platform.sla.repository import SlaRepository
from msp_platform.sla.schemas import PolicyIn, TargetIn
from msp_platform.tenants import service as tenants_service
from msp_platform.tenants.repository import TenantContentsRepository, TenantRepository

ACTOR = "cli:tenants-apply"
MANIFEST_SUFFIXES = (".yaml", ".yml")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SECRET_KEYS = frozenset({"password", "password_hash", "secret", "token", "api_key", "client_secret"})

Echo = Callable[[str], None]


# --- YAML ----------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML with fixes for hand-written data: ``17:00`` stays the text "17:00" (YAML 1.1 would read it
    as the base-60 number 1020), ``no`` stays "no" (not false), and a key given twice in one mapping is an
    error, not a silent override.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} appears twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Dates stay text too: the schema parses them, so a bad one is reported with its path, not as a YAML crash.
# Only true/false are booleans (YAML 1.2): ``no``, ``on``, ``y`` stay text (a slug, a site code...).
_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag not in {"tag:yaml.org,2002:timestamp", _BOOL}]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )
for _digit in "0123456789":
    _Loader.yaml_implicit_resolvers.setdefault(_digit, []).insert(
        0, ("tag:yaml.org,2002:str", re.compile(r"^[0-9]{1,2}:[0-9]{2}$"))
    )


# --- schema --------------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


def _no_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        found = sorted(str(k) for k in value if str(k).lower() in _SECRET_KEYS)
        if found:
            raise ValueError(
                f"manifests never hold secrets ({', '.join(found)}); people set their password by invitation"
            )
    return value


def _day_numbers(item: str) -> list[int]:
    first, _, last = item.strip().lower().partition("-")
    if first not in DAYS or (last and last not in DAYS):
        raise ValueError(f"{item!r} is not a day or range of days (mon, tue, ..., sun; e.g. mon-fri)")
    start = DAYS.index(first)
    if not last:
        return [start]
    length = (DAYS.index(last) - start) % 7 + 1
    return [(start + i) % 7 for i in range(length)]


class HoursSpec(_Spec):
    """Opening hours on the given days in the tenant's time zone (an end before the start runs overnight)."""

    days: list[str] = Field(min_length=1)
    start: str
    end: str

    @field_validator("days", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("days")
    @classmethod
    def _known_days(cls, value: list[str]) -> list[str]:
        for item in value:
            _day_numbers(item)
        return value

    def weekdays(self) -> list[int]:
        return [day for item in self.days for day in _day_numbers(item)]


class HolidaySpec(_Spec):
    date: date
    name: str = ""


class TenantSpec(_Spec):
    slug: str
    name: str
    ticket_prefix: str
    timezone: str
    parent: str | None = None
    business_hours: list[HoursSpec] = Field(default_factory=list)
    holidays: list[HolidaySpec] = Field(default_factory=list)


class SiteSpec(_Spec):
    code: str
    name: str
    kind: SiteKind = SiteKind.other
    parent: str | None = None
    address: str | None = None
    timezone: str | None = None


class UserSpec(_Spec):
    email: str
    name: str
    role: UserRole = UserRole.tenant_user
    title: str | None = None
    department: str | None = None
    site: str | None = None
    vip: bool = False
    clinical: bool = False

    _reject_secrets = model_validator(mode="before")(_no_secrets)


_MSGSPEC_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _policy_error(raw: Mapping[str, Any], exc: msgspec.ValidationError) -> tuple[str, str]:
    """(path, message) of the API schema's error; the path names the priority where the API's says
    ``targets[...]`` (msgspec does not show mapping keys)."""
    match = _MSGSPEC_AT.match(str(exc))
    message, path = (match.group("message"), match.group("path") or "") if match else (str(exc), "")
    if path.startswith(".targets[...]") and isinstance(raw.get("targets"), Mapping):
        for key, value in raw["targets"].items():
            try:
                msgspec.convert(value, TargetIn, strict=False, str_keys=True)
            except msgspec.ValidationError as inner:
                inner_match = _MSGSPEC_AT.match(str(inner))
                rest = (inner_match.group("path") or "") if inner_match else ""
                return f"targets.{key}{rest}", message
    path = re.sub(r"\['([^']*)'\]", r".\1", path).lstrip(".")
    return path, message


def _sla_policy(value: Any) -> PolicyIn | None:
    """The API's own body type and decoding (``POST /api/v1/sla/policies``), so a manifest gets its messages."""
    if value is None or isinstance(value, PolicyIn):
        return value
    if not isinstance(value, Mapping):
        raise PydanticCustomError(
            "sla_policy", "must be a mapping like the body of POST /api/v1/sla/policies"
        )
    raw = dict(value)
    targets = raw.get("targets")
    if isinstance(targets, Mapping):
        # YAML reads ``1:`` as a number; the API's priorities are the keys "1".."5".
        raw["targets"] = {
            str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in targets.items()
        }
    try:
        return msgspec.convert(raw, PolicyIn, strict=False, str_keys=True)
    except msgspec.ValidationError as exc:
        path, message = _policy_error(raw, exc)
        raise PydanticCustomError("sla_policy", "{message}", {"message": message, "path": path}) from exc


class Manifest(_Spec):
    version: Literal[1]
    tenant: TenantSpec
    sites: list[SiteSpec] = Field(default_factory=list)
    users: list[UserSpec] = Field(default_factory=list)
    # The tenant's SLA policy: published as a new version whenever it differs from the current one.
    sla_policy: Annotated[PolicyIn | None, PlainValidator(_sla_policy)] = None

    _reject_secrets = model_validator(mode="before")(_no_secrets)


# --- loading and problems ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """The manifests are invalid; ``problems`` lists every problem found (nothing was applied)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class LoadedManifest:
    file: str
    manifest: Manifest

    @property
    def slug(self) -> str:
        return self.manifest.tenant.slug


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def manifest_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    return [path]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_file(path: Path) -> tuple[LoadedManifest | None, list[Problem]]:
    name = _display(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        return None, [Problem(name, "", f"cannot be read ({exc.strerror or exc})")]
    except UnicodeDecodeError:
        return None, [Problem(name, "", "is not UTF-8 text")]
    except (yaml.YAMLError, ValueError) as exc:
        return None, [Problem(name, "", f"is not valid YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [Problem(name, "", "must be a mapping with version, tenant, sites and users")]
    try:
        return LoadedManifest(name, Manifest.model_validate(raw)), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            where = _loc(error["loc"])
            inner = (error.get("ctx") or {}).get("path")
            if inner:  # a path inside the SLA policy body
                where = f"{where}.{inner}"
            problems.append(Problem(name, where, message))
        return None, problems


def load_path(path: Path) -> tuple[list[LoadedManifest], list[Problem]]:
    """Every manifest at ``path`` (a file, or the ``*.yaml`` files of a directory) and the problems found."""
    if not path.exists():
        return [], [Problem(_display(path), "", "no such file or directory")]
    loaded: list[LoadedManifest] = []
    problems: list[Problem] = []
    for file in manifest_files(path):
        manifest, found = load_file(file)
        problems += found
        if manifest is not None:
            loaded.append(manifest)
    return loaded, problems


# --- normalized form -----------------------------------------------------------------------------------------


def _windows(spec: TenantSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """The API's hours windows, and for each the manifest path it came from."""
    windows: list[dict[str, Any]] = []
    origins: list[str] = []
    for index, hours in enumerate(spec.business_hours):
        for day in hours.weekdays():
            windows.append({"weekday": day, "start": hours.start, "end": hours.end})
            origins.append(f"tenant.business_hours[{index}] ({DAYS[day]})")
    return windows, origins


def _holidays(spec: TenantSpec) -> list[dict[str, Any]]:
    return [{"date": h.date.isoformat(), "name": h.name} for h in spec.holidays]


def tenant_values(spec: TenantSpec) -> dict[str, Any]:
    """The stored values a manifest asks for (``parent`` stays a slug)."""
    windows, _ = _windows(spec)
    return {
        "name": spec.name,
        "ticket_prefix": tenants_service.normalize_prefix(spec.ticket_prefix),
        "timezone": spec.timezone,
        "business_calendar": tenants_service.calendar_dict(windows, _holidays(spec)),
    }


def _calendar_path(field_name: str, origins: Sequence[str]) -> str:
    match = re.match(r"business_calendar\.hours\[(\d+)\](.*)", field_name)
    if match and int(match.group(1)) < len(origins):
        return origins[int(match.group(1))] + match.group(2)
    if field_name.startswith("business_calendar.holidays"):
        return "tenant." + field_name.removeprefix("business_calendar.")
    return "tenant.business_hours"


def _calendar_message(message: str, origins: Sequence[str]) -> str:
    return re.sub(
        r"windows\[(\d+)\]",
        lambda m: origins[int(m.group(1))] if int(m.group(1)) < len(origins) else m.group(0),
        message,
    )


# --- validation ----------------------------------------------------------------------------------------------


def _field_problems(file: str, prefix: str, errors: Iterable[FieldError]) -> list[Problem]:
    return [Problem(file, f"{prefix}.{e.field}" if prefix else e.field, e.message) for e in errors]


def check_manifest(item: LoadedManifest) -> list[Problem]:
    """The rules one manifest must follow on its own (the API's rules for tenants, sites and users)."""
    file, spec = item.file, item.manifest.tenant
    problems = _field_problems(file, "tenant", tenants_service.slug_errors("slug", spec.slug))
    problems += _field_problems(file, "tenant", text_errors("name", spec.name, max_length=200, required=True))
    prefix = tenants_service.normalize_prefix(spec.ticket_prefix)
    problems += _field_problems(file, "tenant", tenants_service.prefix_errors("ticket_prefix", prefix))
    problems += _field_problems(file, "tenant", timezone_errors("timezone", spec.timezone))
    if spec.parent is not None and spec.parent == spec.slug:
        problems.append(Problem(file, "tenant.parent", "a tenant cannot be its own parent"))
    windows, origins = _windows(spec)
    for error in tenants_service.calendar_errors(spec.timezone, windows, _holidays(spec)):
        problems.append(
            Problem(file, _calendar_path(error.field, origins), _calendar_message(error.message, origins))
        )

    codes: dict[str, int] = {}
    for index, site in enumerate(item.manifest.sites):
        where = f"sites[{index}]"
        problems += _field_problems(file, where, code_errors("code", site.code))
        problems += _field_problems(
            file, where, text_errors("name", site.name, max_length=200, required=True)
        )
        problems += _field_problems(file, where, text_errors("address", site.address, max_length=2000))
        problems += _field_problems(file, where, timezone_errors("timezone", site.timezone))
        code = site.code.upper()
        if code in codes:
            problems.append(
                Problem(file, f"{where}.code", f"site {code} is already listed at sites[{codes[code]}]")
            )
        else:
            codes[code] = index
        if site.parent is not None and site.parent.upper() == code:
            problems.append(Problem(file, f"{where}.parent", "a site cannot be its own parent"))

    emails: dict[str, int] = {}
    for index, user in enumerate(item.manifest.users):
        where = f"users[{index}]"
        problems += _field_problems(file, where, email_errors("email", user.email))
        problems += _field_problems(
            file, where, text_errors("name", user.name, max_length=200, required=True)
        )
        problems += _field_problems(file, where, text_errors("title", user.title, max_length=120))
        problems += _field_problems(file, where, text_errors("department", user.department, max_length=120))
        email = user.email.lower()
        if email in emails:
            problems.append(
                Problem(file, f"{where}.email", f"{email} is already listed at users[{emails[email]}]")
            )
        else:
            emails[email] = index

    policy = item.manifest.sla_policy
    if policy is not None:
        # The tenant as this manifest describes it: a business-hours policy is checked on its hours.
        described = Tenant(timezone=spec.timezone, business_calendar=tenant_values(spec)["business_calendar"])
        problems += _field_problems(file, "sla_policy", sla_service.policy_errors(policy, described))
    return problems


def check_files(path: Path) -> tuple[list[LoadedManifest], list[Problem]]:
    """Load and check manifests without a database: the schema, each file's rules and the rules across
    files (stored data is checked when applying)."""
    items, problems = load_path(path)
    problems += check_set(items)
    for item in items:
        problems += check_manifest(item)
    return items, problems


def _cycle_from(start: str, parent_of: Mapping[str, str | None]) -> bool:
    """Whether following parents from ``start`` comes back to it."""
    seen = {start}
    current = parent_of.get(start)
    while current is not None:
        if current == start:
            return True
        if current in seen:  # a loop further up: reported on its own members
            return False
        seen.add(current)
        current = parent_of.get(current)
    return False


def check_set(items: Sequence[LoadedManifest]) -> list[Problem]:
    """Rules across files: one manifest per slug and per ticket prefix (parents and their cycles are checked
    with the stored tenants, in ``check_against_database``)."""
    problems: list[Problem] = []
    by_slug: dict[str, str] = {}
    by_prefix: dict[str, tuple[str, str]] = {}
    for item in items:
        spec = item.manifest.tenant
        if spec.slug in by_slug:
            problems.append(
                Problem(item.file, "tenant.slug", f"{spec.slug} is also described in {by_slug[spec.slug]}")
            )
        else:
            by_slug[spec.slug] = item.file
        prefix = tenants_service.normalize_prefix(spec.ticket_prefix)
        if prefix in by_prefix:
            other_file, other_slug = by_prefix[prefix]
            problems.append(
                Problem(
                    item.file,
                    "tenant.ticket_prefix",
                    f"{prefix} is also the prefix of {other_slug} ({other_file})",
                )
            )
        else:
            by_prefix[prefix] = (item.file, spec.slug)
    return problems


def parent_order(items: Sequence[LoadedManifest]) -> list[LoadedManifest]:
    """Parents before children, across files (a parent cycle is reported by validation before this runs)."""
    by_slug = {item.slug: item for item in items}
    ordered: list[LoadedManifest] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(item: LoadedManifest) -> None:
        if item.slug in placed or item.slug in visiting:
            return
        visiting.add(item.slug)
        parent = item.manifest.tenant.parent
        if parent is not None and parent in by_slug:
            place(by_slug[parent])
        visiting.discard(item.slug)
        placed.add(item.slug)
        ordered.append(item)

    for item in items:
        place(item)
    return ordered


@dataclass
class _StoredTenant:
    tenant: Tenant
    sites: dict[str, Site] = field(default_factory=dict)  # by code
    users: dict[str, User] = field(default_factory=dict)  # by email


async def _bind(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    # Flush first: pending rows are stamped with (and checked against) the tenant bound when they flush.
    await session.flush()
    await set_tenant_context(session, system_tenant_context(tenant_id))


async def _stored(session: AsyncSession, items: Sequence[LoadedManifest]) -> dict[str, _StoredTenant]:
    repo = TenantRepository(session)
    found = await repo.by_slugs(item.slug for item in items)
    stored: dict[str, _StoredTenant] = {}
    for item in items:
        tenant = found.get(item.slug)
        if tenant is None:
            continue
        await _bind(session, tenant.id)
        contents = TenantContentsRepository(session)
        sites = {s.code: s for s in await contents.sites()}
        users = await contents.users_by_email(u.email.lower() for u in item.manifest.users)
        stored[item.slug] = _StoredTenant(tenant, sites, users)
    return stored


async def check_against_database(
    session: AsyncSession, items: Sequence[LoadedManifest], stored: Mapping[str, _StoredTenant]
) -> list[Problem]:
    """Rules that need the stored data: parents exist and make no cycle, prefixes are free, site and user
    references resolve (to the manifest or to the tenant's stored sites)."""
    repo = TenantRepository(session)
    problems: list[Problem] = []
    manifest_slugs = {item.slug for item in items}
    tree = await repo.tree()
    slug_of = {tenant_id: slug for tenant_id, slug, _, _ in tree}
    status_of = {slug: status for _, slug, _, status in tree}
    parent_of: dict[str, str | None] = {
        slug: slug_of.get(parent_id) if parent_id else None for _, slug, parent_id, _ in tree
    }
    for item in items:
        parent_of[item.slug] = item.manifest.tenant.parent
    holders = await repo.by_prefixes(
        tenants_service.normalize_prefix(i.manifest.tenant.ticket_prefix) for i in items
    )

    for item in items:
        spec, file = item.manifest.tenant, item.file
        if spec.parent is not None:
            if spec.parent not in manifest_slugs and spec.parent not in status_of:
                problems.append(
                    Problem(
                        file, "tenant.parent", f"no tenant {spec.parent!r} (in these manifests or stored)"
                    )
                )
            elif spec.parent not in manifest_slugs and status_of[spec.parent] == TenantStatus.offboarded:
                problems.append(Problem(file, "tenant.parent", f"tenant {spec.parent} is offboarded"))
            elif _cycle_from(item.slug, parent_of):
                problems.append(Problem(file, "tenant.parent", f"{item.slug} would end up inside itself"))
        holder = holders.get(tenants_service.normalize_prefix(spec.ticket_prefix))
        if holder is not None and holder.slug != item.slug:
            problems.append(
                Problem(
                    file,
                    "tenant.ticket_prefix",
                    f"{holder.ticket_prefix} is already used by tenant {holder.slug}",
                )
            )

        existing = stored.get(item.slug)
        stored_sites = existing.sites if existing else {}
        code_of = {site.id: code for code, site in stored_sites.items()}
        site_parent: dict[str, str | None] = {
            code: code_of.get(site.parent_id) if site.parent_id else None
            for code, site in stored_sites.items()
        }
        listed = {site.code.upper() for site in item.manifest.sites}
        for site in item.manifest.sites:
            site_parent[site.code.upper()] = site.parent.upper() if site.parent else None
        known_sites = listed | set(stored_sites)
        for index, site in enumerate(item.manifest.sites):
            if site.parent is None:
                continue
            if site.parent.upper() not in known_sites:
                problems.append(
                    Problem(file, f"sites[{index}].parent", f"no site {site.parent.upper()} in this tenant")
                )
            elif _cycle_from(site.code.upper(), site_parent):
                problems.append(
                    Problem(
                        file, f"sites[{index}].parent", f"site {site.code.upper()} would end up inside itself"
                    )
                )
        for index, user in enumerate(item.manifest.users):
            if user.site is not None and user.site.upper() not in known_sites:
                problems.append(
                    Problem(file, f"users[{index}].site", f"no site {user.site.upper()} in this tenant")
                )
    return problems


# --- applying ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One line of the diff: ``op`` is ``+`` (created), ``~`` (updated; for an SLA policy: a new version
    published) or ``=`` (unchanged)."""

    op: Literal["+", "~", "="]
    kind: Literal["tenant", "site", "user", "sla_policy"]
    tenant: str
    key: str
    changes: tuple[tuple[str, Any, Any], ...] = ()

    def lines(self) -> list[str]:
        if self.op == "~":
            return [
                f"~ {self.kind} {self.key} {name}: {before!r} -> {after!r}"
                for name, before, after in self.changes
            ]
        if self.op == "=":
            return [f"= {self.kind} {self.key}: unchanged"]
        return [f"+ {self.kind} {self.key}"]


@dataclass
class ApplyReport:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    def count(self, kind: str, op: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind and c.op == op)

    @property
    def changed(self) -> bool:
        return any(c.op != "=" for c in self.changes)

    def summary(self) -> str:
        parts = []
        for kind, plural in (("tenant", "tenants"), ("site", "sites"), ("user", "users")):
            created, updated = self.count(kind, "+"), self.count(kind, "~")
            unchanged = self.count(kind, "=")
            if created or updated or unchanged:
                parts.append(f"{plural}: {created} created, {updated} updated, {unchanged} unchanged")
        created, updated = self.count("sla_policy", "+"), self.count("sla_policy", "~")
        unchanged = self.count("sla_policy", "=")
        if created or updated or unchanged:
            parts.append(f"SLA policies: {created} created, {updated} new versions, {unchanged} unchanged")
        verb = "would be applied (dry run, nothing stored)" if self.dry_run else "applied"
        return f"{verb}: " + ("; ".join(parts) if parts else "no manifests")


def _hours_summary(raw: Mapping[str, Any]) -> str:
    hours = raw.get("hours") or []
    if not hours:
        text = "24x7"
    else:
        spans: dict[tuple[str, str], list[int]] = {}
        for window in hours:
            spans.setdefault((window["start"], window["end"]), []).append(int(window["weekday"]))
        text = ", ".join(
            f"{'/'.join(DAYS[d] for d in sorted(days))} {start}-{end}" for (start, end), days in spans.items()
        )
    holidays = raw.get("holidays") or []
    return f"{text}; {len(holidays)} holiday{'s' if len(holidays) != 1 else ''}"


def _shown(name: str, before: Any, after: Any, names: Mapping[uuid.UUID, str]) -> tuple[str, Any, Any]:
    if name == "business_calendar":
        return "business_calendar", _hours_summary(before or {}), _hours_summary(after or {})
    if name in ("parent_id", "site_id"):
        label = name.removesuffix("_id")
        return (
            label,
            names.get(before, before) if before else None,
            names.get(after, after) if after else None,
        )
    plain = [str(v) if isinstance(v, str) else v for v in (before, after)]  # enums as their text
    return name, plain[0], plain[1]


def _change(
    kind: Literal["tenant", "site", "user", "sla_policy"],
    tenant: str,
    key: str,
    changed: Mapping[str, tuple[Any, Any]],
    names: Mapping[uuid.UUID, str],
) -> Change:
    if not changed:
        return Change("=", kind, tenant, key)
    return Change("~", kind, tenant, key, tuple(_shown(n, b, a, names) for n, (b, a) in changed.items()))


async def _apply_one(
    session: AsyncSession,
    item: LoadedManifest,
    existing: _StoredTenant | None,
    tenant_ids: dict[str, uuid.UUID],
    tenant_names: dict[uuid.UUID, str],
) -> list[Change]:
    spec = item.manifest.tenant
    changes: list[Change] = []
    values = tenant_values(spec)
    values["manifest_version"] = item.manifest.version
    values["parent_id"] = tenant_ids[spec.parent] if spec.parent else None
    if existing is None:
        tenant = Tenant(id=new_id(), slug=spec.slug, status=TenantStatus.active, **values)
        session.add(tenant)
        await session.flush()
        changes.append(Change("+", "tenant", spec.slug, spec.slug))
    else:
        tenant = existing.tenant
        tenant_changes = assign(tenant, values)
        await session.flush()
        if tenant_changes:
            changes.append(_change("tenant", spec.slug, spec.slug, tenant_changes, tenant_names))
    tenant_ids[spec.slug] = tenant.id
    tenant_names[tenant.id] = spec.slug

    await _bind(session, tenant.id)
    sites = dict(existing.sites) if existing else {}
    site_names = {site.id: code for code, site in sites.items()}
    pending = list(item.manifest.sites)
    while pending:  # parents first (validation ruled out cycles and unknown parents)
        ready = [s for s in pending if s.parent is None or s.parent.upper() in sites]
        if not ready:
            raise AssertionError("site parents could not be ordered")
        for site_spec in ready:
            pending.remove(site_spec)
            code = site_spec.code.upper()
            wanted: dict[str, Any] = {
                "name": site_spec.name,
                "kind": site_spec.kind,
                "parent_id": sites[site_spec.parent.upper()].id if site_spec.parent else None,
                "address": site_spec.address,
                "timezone": site_spec.timezone,
            }
            site = sites.get(code)
            if site is None:
                site = await sites_service.create_site(session, SiteCreate(code=code, **wanted))
                changes.append(Change("+", "site", spec.slug, code))
            else:
                changed = await sites_service.update_site(session, site, wanted)
                if changed:
                    changes.append(_change("site", spec.slug, code, changed, site_names))
            sites[code] = site
            site_names[site.id] = code

    users = dict(existing.users) if existing else {}
    for user_spec in item.manifest.users:
        email = user_spec.email.lower()
        wanted = {
            "name": user_spec.name,
            "role": user_spec.role,
            "title": user_spec.title,
            "department": user_spec.department,
            "site_id": sites[user_spec.site.upper()].id if user_spec.site else None,
            "vip": user_spec.vip,
            "clinical": user_spec.clinical,
        }
        user = users.get(email)
        if user is None:
            # No password: the person signs in after an invitation or a reset.
            session.add(User(email=email, active=True, password_hash=None, **wanted))
            changes.append(Change("+", "user", spec.slug, f"{email} ({user_spec.role})"))
        else:
            changed = assign(user, wanted)
            if changed:
                changes.append(_change("user", spec.slug, email, changed, site_names))
    await session.flush()
    if not changes:
        changes.append(Change("=", "tenant", spec.slug, spec.slug))
    if item.manifest.sla_policy is not None:
        changes.append(await _apply_sla_policy(session, tenant, item.manifest.sla_policy))
    return changes


def _policy_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Field by field; targets per priority and target (``targets.1.response_minutes``)."""
    out: list[tuple[str, Any, Any]] = []
    for name in after:
        old, new = before.get(name), after[name]
        if old == new:
            continue
        if name == "targets":
            for priority in sorted(set(old or {}) | set(new)):
                was, now = (old or {}).get(priority), new.get(priority)
                if was is None or now is None:
                    out.append((f"targets.{priority}", was, now))
                    continue
                for field_name in now:
                    if was.get(field_name) != now[field_name]:
                        out.append((f"targets.{priority}.{field_name}", was.get(field_name), now[field_name]))
        else:
            out.append((name, old, new))
    return out


async def _apply_sla_policy(session: AsyncSession, tenant: Tenant, policy: PolicyIn) -> Change:
    """Publish the manifest's policy when the tenant has none or its current version differs (the session
    is bound to the tenant). The SLA service's own publish: the API's checks, the version numbering, the
    audit event."""
    current = await SlaRepository(session).current_policy()
    wanted = sla_service.policy_values(policy)
    if current is not None:
        differences = _policy_differences(sla_service.stored_policy_values(current), wanted)
        if not differences:
            return Change("=", "sla_policy", tenant.slug, f"{current.name!r} (version {current.version})")
    actor = session.info.get(ACTOR_KEY) or ACTOR
    published = await sla_service.publish_policy(session, str(actor), policy, tenant.id)
    key = f"{published.name!r} (version {published.version})"
    if current is None:
        return Change("+", "sla_policy", tenant.slug, key)
    return Change("~", "sla_policy", tenant.slug, key, tuple(differences))


async def apply_manifests(
    session: AsyncSession, items: Sequence[LoadedManifest], *, echo: Echo = print
) -> list[Change]:
    """Validate against the stored data, then apply (no commit here). The session must be the owner's; it
    is bound to each tenant in turn while that tenant's rows are written. Raises ManifestError."""
    problems = check_set(items)
    for item in items:
        problems += check_manifest(item)
    # Scoped while working on tenant rows: every site and user query sees the bound tenant only, and new
    # rows are stamped with it.
    session.info["unscoped"] = False
    try:
        stored = await _stored(session, items)
        problems += await check_against_database(session, items, stored)
        if problems:
            order = {item.file: index for index, item in enumerate(items)}
            raise ManifestError(sorted(problems, key=lambda p: order.get(p.file, -1)))
        tree = await TenantRepository(session).tree()
        tenant_ids = {slug: tenant_id for tenant_id, slug, _, _ in tree}
        tenant_names = {tenant_id: slug for tenant_id, slug, _, _ in tree}
        changes: list[Change] = []
        for item in parent_order(items):
            echo(f"{item.file}")
            try:
                applied = await _apply_one(session, item, stored.get(item.slug), tenant_ids, tenant_names)
            except PlatformError as exc:  # a rule the checks above missed: report it like the others
                fields = [Problem(item.file, e.field, e.message) for e in exc.errors]
                raise ManifestError(fields or [Problem(item.file, "", exc.detail)]) from exc
            for change in applied:
                for line in change.lines():
                    echo(f"  {line}")
            changes += applied
        await session.flush()
    finally:
        # The commit appends the audit events of every tenant touched (one chain each), as the owner.
        session.info["unscoped"] = True
    return changes


async def apply_directory(
    db: Database, path: Path, *, echo: Echo = print, dry_run: bool = False, actor: str = ACTOR
) -> ApplyReport:
    """Apply every manifest at ``path`` (a directory of ``*.yaml`` files, or one file) in one transaction.

    Prints the diff with ``echo``; ``dry_run`` reports what would change and stores nothing. Raises
    ``ManifestError`` listing every problem (file and path) when anything is invalid; then nothing is stored.
    """
    items, problems = load_path(path)
    if problems:
        raise ManifestError(problems)
    report = ApplyReport(dry_run=dry_run)
    async with db.dangerously_unscoped_session() as session:
        set_actor(session, actor)
        try:
            report.changes = await apply_manifests(session, items, echo=echo)
        except BaseException:
            await session.rollback()
            raise
        if dry_run:
            await session.rollback()
        else:
            await session.commit()
    echo(report.summary())
    return report


__all__ = [
    "ApplyReport",
    "Change",
    "LoadedManifest",
    "Manifest",
    "ManifestError",
    "Problem",
    "apply_directory",
    "apply_manifests",
    "load_file",
    "load_path",
]
