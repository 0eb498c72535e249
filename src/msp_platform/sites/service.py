"""Sites: rules for creating, changing and removing a tenant's hospitals, clinics and departments."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.errors import Conflict, FieldError, NotFound
from msp_platform.kit.patch import assign
from msp_platform.kit.validation import code_errors, raise_if, text_errors, timezone_errors
from msp_platform.models.site import Site
from msp_platform.sites.repository import SiteRepository
from msp_platform.sites.schemas import SiteCreate


async def _check(
    repo: SiteRepository, values: dict[str, Any], *, site_id: uuid.UUID | None
) -> list[FieldError]:
    errors: list[FieldError] = []
    if "code" in values:
        errors += code_errors("code", values["code"])
        if not errors:
            other = await repo.by_code(values["code"])
            if other is not None and other.id != site_id:
                errors.append(FieldError("code", f"site code {values['code'].upper()} is already used"))
    if "name" in values:
        errors += text_errors("name", values["name"], max_length=200, required=True)
    if "address" in values:
        errors += text_errors("address", values["address"], max_length=2000)
    if "timezone" in values:
        errors += timezone_errors("timezone", values["timezone"])
    parent_id = values.get("parent_id")
    if parent_id is not None:
        if await repo.get(parent_id) is None:
            errors.append(FieldError("parent_id", "no such site"))
        elif site_id is not None and site_id in await repo.ancestors(parent_id):
            errors.append(FieldError("parent_id", "a site cannot be inside itself"))
    return errors


async def _flush(session: AsyncSession, values: dict[str, Any]) -> None:
    """Checked above, but a concurrent request may have taken the code (or removed the parent) since: answer
    409 with what happened, never 500."""
    try:
        await session.flush()
    except IntegrityError as exc:
        what = f"site code {values['code'].upper()}" if "code" in values else "a site this change refers to"
        raise Conflict(
            f"Another request changed the tenant's sites meanwhile ({what} is taken, or the parent site was "
            "removed). Nothing was saved; check and retry."
        ) from exc


async def create_site(session: AsyncSession, data: SiteCreate) -> Site:
    repo = SiteRepository(session)
    values: dict[str, Any] = {
        "code": data.code.strip(),
        "name": data.name.strip(),
        "kind": data.kind,
        "parent_id": data.parent_id,
        "address": data.address,
        "timezone": data.timezone,
    }
    raise_if(await _check(repo, values, site_id=None), "The site is invalid.")
    site = Site(**{**values, "code": values["code"].upper()}, active=True)
    session.add(site)
    await _flush(session, values)
    return site


async def update_site(
    session: AsyncSession, site: Site, values: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    repo = SiteRepository(session)
    if "code" in values:
        values["code"] = values["code"].strip()
    raise_if(await _check(repo, values, site_id=site.id), "The change is invalid.")
    if "code" in values:
        values["code"] = values["code"].upper()
    changed = assign(site, values)
    await _flush(session, values)
    return changed


async def delete_site(session: AsyncSession, site: Site) -> None:
    usage = await SiteRepository(session).usage(site.id)
    if usage:
        listed = ", ".join(f"{count} {what}" for what, count in usage.items())
        raise Conflict(
            f"Site {site.code} is still used by {listed}; nothing was deleted. Move them to another site, or "
            "deactivate this one (PATCH active=false) to keep its history.",
            extra={"in_use": usage},
        )
    await session.delete(site)
    try:
        await session.flush()
    except IntegrityError as exc:
        # Something started referring to the site after the check above (a concurrent request).
        raise Conflict(
            f"Site {site.code} came into use meanwhile; nothing was deleted. Deactivate it (PATCH "
            "active=false) instead."
        ) from exc


async def get_site(session: AsyncSession, site_id: uuid.UUID) -> Site:
    site = await SiteRepository(session).get(site_id)
    if site is None:
        raise NotFound(f"Site {site_id} not found.")
    return site
