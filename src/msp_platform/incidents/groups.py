"""Assignment groups: the MSP's teams ("Service Desk L1", "Network L3"), with a tier and staff members,
serving every tenant or only some. Managed by MSP admins; incidents name a group by id."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.incidents.repository import IncidentRepository
from msp_platform.incidents.schemas import GroupCreate
from msp_platform.kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from msp_platform.kit.ids import new_id
from msp_platform.models.assignment_group import AssignmentGroup, AssignmentGroupMember


async def get_group(session: AsyncSession, group_id: uuid.UUID) -> AssignmentGroup:
    group = await IncidentRepository(session).group(group_id)
    if group is None:
        raise NotFound(f"Assignment group {group_id} not found.")
    return group


async def _check(
    session: AsyncSession, values: dict[str, Any], group: AssignmentGroup | None = None
) -> dict[str, Any]:
    errors: list[FieldError] = []
    if "name" in values:
        name = str(values["name"]).strip()
        if not name:
            errors.append(FieldError("name", "must not be empty"))
        else:
            values["name"] = name
            same = await IncidentRepository(session).group_by_name(name)
            if same is not None and (group is None or same.id != group.id):
                raise Conflict(
                    f"An assignment group is called {same.name} already.", extra={"id": str(same.id)}
                )
    if values.get("tenant_ids") is not None:
        wanted = list(dict.fromkeys(values["tenant_ids"]))
        found = await IncidentRepository(session).existing_tenants(wanted)
        for i, tenant_id in enumerate(values["tenant_ids"]):
            if tenant_id not in found:
                errors.append(FieldError(f"tenant_ids[{i}]", "no such tenant"))
        values["tenant_ids"] = [str(t) for t in wanted]
    if errors:
        raise ValidationFailed("The assignment group is invalid.", errors=errors)
    return values


async def create_group(session: AsyncSession, data: GroupCreate) -> AssignmentGroup:
    values = await _check(
        session,
        {
            "name": data.name,
            "tier": data.tier,
            "description": data.description,
            "active": data.active,
            "tenant_ids": data.tenant_ids,
        },
    )
    group = AssignmentGroup(id=new_id(), **values)
    session.add(group)
    await session.flush()
    return group


async def update_group(
    session: AsyncSession, group: AssignmentGroup, values: dict[str, Any]
) -> AssignmentGroup:
    for name, value in (await _check(session, dict(values), group)).items():
        setattr(group, name, value)
    await session.flush()
    return group


async def delete_group(session: AsyncSession, group: AssignmentGroup) -> None:
    """Only a group no incident names (of any tenant: the database checks it); otherwise deactivate it."""
    name = group.name
    await session.delete(group)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"Incidents name {name}; deactivate it instead (PATCH active=false).") from exc


async def add_member(session: AsyncSession, group: AssignmentGroup, staff_id: uuid.UUID) -> None:
    repo = IncidentRepository(session)
    staff = await repo.staff(staff_id)
    if staff is None or not staff.active:
        raise ValidationFailed(
            "No such staff member.", errors=[FieldError("staff_id", "no such active staff member")]
        )
    if await repo.membership(group.id, staff_id) is not None:
        raise Conflict(f"{staff.name} is a member of {group.name} already.")
    session.add(AssignmentGroupMember(id=new_id(), group_id=group.id, staff_id=staff_id))
    await session.flush()


async def remove_member(session: AsyncSession, group: AssignmentGroup, staff_id: uuid.UUID) -> None:
    """Incidents already assigned to the member keep their assignee; new assignments need membership."""
    member = await IncidentRepository(session).membership(group.id, staff_id)
    if member is None:
        raise NotFound(f"Staff member {staff_id} is not a member of {group.name}.")
    await session.delete(member)
    await session.flush()
