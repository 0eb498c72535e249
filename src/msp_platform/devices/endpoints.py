"""/api/v1/devices: a tenant's device inventory, with a bulk CSV/JSON import."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Scope
from msp_platform.devices import service
from msp_platform.devices.schemas import (
    IMPORT_COLUMNS,
    IMPORT_REQUIRED_COLUMNS,
    DeviceCreate,
    DeviceOut,
    DeviceSort,
    DeviceUpdate,
)
from msp_platform.kit.bulk import (
    MAX_ROWS,
    ImportMode,
    ImportReport,
    import_operation,
    import_post,
    read_import,
)
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.etag import IfMatch, check_if_match, headers_of
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.patch import sent_fields
from msp_platform.models.device import Device, DeviceKind, DeviceStatus

IMPORT_DESCRIPTION = f"""
Create or update up to {MAX_ROWS:,} devices from `text/csv` (or a multipart `file` part, `.csv` or `.json`)
or `application/json` (an array of row objects, or `{{"rows": [...]}}`).

**Columns** (CSV header names are case-insensitive; `kind` is required): {", ".join(IMPORT_COLUMNS)}.
`site` is a site **code** and `assigned_user` a user **email** of this tenant; `last_seen_at` is ISO 8601 with
a time zone; `kind` and `status` take the API's values (case, spaces and hyphens are forgiven).

**Upsert key**: the row's `serial` when it has one, otherwise its `asset_tag` (a row needs one of them). A
matching stored device is updated, otherwise one is created. Columns present in the file are set on the
device (a blank cell clears the field; a blank `serial`, `asset_tag` or `status` leaves it unchanged);
columns absent from the file are left alone. Changing a row's serial is not possible through the import
(use PATCH), and an asset tag held by a different stored device is an error, even if the same file moves it.

**Report**: one entry per row, `created`, `updated`, `unchanged` or `error` with the reasons (duplicate
serial or asset tag within the file, asset tag used by another device, unknown site code or user email,
invalid kind, status or date, no identifier...). Every row is validated before anything is stored.
`mode=atomic` (default) stores nothing if any row is bad (422 `import-failed` with the report);
`mode=partial` stores the good rows and reports the rest (200); `dry_run=true` only reports: rows that would
be stored say `valid`, with `would` saying what storing them does (`created`, `updated` or `unchanged`).

**Encoding**: UTF-8 unless a byte-order mark says UTF-16 or UTF-32 (Excel's "Unicode Text") or the
Content-Type names a `charset`. The body may be up to MSP_IMPORT_MAX_BODY_BYTES (25 MB by default).
"""  # noqa: S608 - API documentation, not SQL

Sort = Annotated[
    DeviceSort,
    QueryParameter(
        description="Order: `created` (default), `hostname`, `last_seen_at`, `serial`, `asset_tag`; `-` "
        "descends. Devices without the sorted value come last."
    ),
]
Kinds = Annotated[list[DeviceKind] | None, QueryParameter(description="Any of these kinds (repeatable).")]
Statuses = Annotated[
    list[DeviceStatus] | None, QueryParameter(description="Any of these statuses (repeatable).")
]
Search = Annotated[
    str | None,
    QueryParameter(description="Case-insensitive substring of hostname, serial, asset tag or model."),
]
SeenBefore = Annotated[
    datetime | None,
    QueryParameter(description="Last seen before this instant (stale devices; never-seen ones excluded)."),
]
SeenAfter = Annotated[datetime | None, QueryParameter(description="Last seen at or after this instant.")]
NeverSeen = Annotated[
    bool | None, QueryParameter(description="true: devices never seen; false: devices seen at least once.")
]
Unassigned = Annotated[
    bool | None, QueryParameter(description="true: no assigned user; false: assigned to someone.")
]


def device_out(device: Device) -> DeviceOut:
    return DeviceOut(
        id=device.id,
        tenant_id=device.tenant_id,
        kind=device.kind,
        hostname=device.hostname,
        serial=device.serial,
        asset_tag=device.asset_tag,
        manufacturer=device.manufacturer,
        model=device.model,
        os=device.os,
        os_version=device.os_version,
        site_id=device.site_id,
        assigned_user_id=device.assigned_user_id,
        status=device.status,
        last_seen_at=device.last_seen_at,
        notes=device.notes,
        created_at=device.created_at,
        updated_at=device.updated_at,
    )


class DeviceController(Controller):
    path = "/api/v1/devices"
    tags = ["Devices"]
    dependencies = DEPENDENCIES

    @post("/", summary="Create a device", **protected(Scope.devices_write))
    async def create(self, session: Session, tenant_id: TenantId, data: JSONBody[DeviceCreate]) -> DeviceOut:
        return device_out(await service.create_device(session, data))

    @get(
        "/",
        summary="List and search devices",
        description="Tenant administrators, integration clients and MSP staff see the tenant's inventory; a "
        "tenant user (role `tenant_user`) sees only the devices assigned to them.",
        **protected(Scope.devices_read),
    )
    async def list_devices(
        self,
        session: Session,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = None,
        cursor: Cursor = None,
        sort: Sort = DeviceSort.created,
        kind: Kinds = None,
        status: Statuses = None,
        site_id: FromQuery[uuid.UUID | None] = None,
        assigned_user_id: FromQuery[uuid.UUID | None] = None,
        unassigned: Unassigned = None,
        seen_before: SeenBefore = None,
        seen_after: SeenAfter = None,
        never_seen: NeverSeen = None,
        q: Search = None,
    ) -> Page[DeviceOut]:
        rows, next_cursor = await service.list_devices(
            session,
            limit=limit,
            cursor=cursor,
            sort=sort,
            kinds=kind or [],
            statuses=status or [],
            site_id=site_id,
            assigned_user_id=assigned_user_id,
            unassigned=unassigned,
            seen_before=seen_before,
            seen_after=seen_after,
            never_seen=never_seen,
            q=q,
            principal=principal,
        )
        return Page(items=[device_out(d) for d in rows], next_cursor=next_cursor)

    @get(
        "/{device_id:uuid}",
        summary="Get a device",
        description="A tenant user reaches only the devices assigned to them (others answer 404).",
        **protected(Scope.devices_read),
    )
    async def get_device(
        self, session: Session, ctx: Ctx, principal: Caller, device_id: FromPath[uuid.UUID]
    ) -> Response[DeviceOut]:
        device = await service.get_device(session, device_id, principal=principal)
        return Response(device_out(device), headers=headers_of(device))

    @patch(
        "/{device_id:uuid}",
        summary="Update a device (only the fields sent; If-Match guards against lost updates)",
        **protected(Scope.devices_write),
    )
    async def update(
        self,
        session: Session,
        tenant_id: TenantId,
        device_id: FromPath[uuid.UUID],
        data: JSONBody[DeviceUpdate],
        if_match: IfMatch = None,
    ) -> Response[DeviceOut]:
        device = await service.get_device(session, device_id)
        await check_if_match(session, device, if_match, f"Device {device.id}")
        await service.update_device(session, device, sent_fields(data))
        return Response(device_out(device), headers=headers_of(device))

    @delete(
        "/{device_id:uuid}",
        summary="Retire a device (soft delete: status=retired, the record and its history stay)",
        description="Devices are never hard-deleted: the inventory keeps where each device went (HIPAA device "
        "accountability), incidents and the audit log refer to it, and its serial stays reserved so a "
        "re-import updates it. The device stays readable and listed with `status=retired`; PATCH `status` "
        "to bring it back. Retiring a retired device does nothing.",
        **protected(Scope.devices_write),
    )
    async def retire(self, session: Session, tenant_id: TenantId, device_id: FromPath[uuid.UUID]) -> None:
        await service.retire_device(session, await service.get_device(session, device_id))

    @import_post(
        "/import",
        summary="Import devices from CSV or JSON (upsert on serial, else asset tag)",
        description=IMPORT_DESCRIPTION,
        status_code=200,
        operation_class=import_operation(IMPORT_COLUMNS, IMPORT_REQUIRED_COLUMNS),
        **protected(Scope.devices_write),
    )
    async def import_devices(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        tenant_id: TenantId,
        mode: FromQuery[ImportMode] = ImportMode.atomic,
        dry_run: FromQuery[bool] = False,
    ) -> ImportReport:
        rows = await read_import(request, columns=IMPORT_COLUMNS, required=IMPORT_REQUIRED_COLUMNS)
        return await service.import_devices(session, rows, mode=mode, dry_run=dry_run)
