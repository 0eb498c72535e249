"""/api/v1/devices: create, read, change, retire, list/search; permissions and tenant isolation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from tests.conftest import Factory
from tests.devices.helpers import (
    DEVICES,
    IMPORT,
    admin_of_new_tenant,
    make_device,
    make_site,
    post_csv,
    to_csv,
    walk,
)
from tests.support.isolation import assert_isolated

from msp_platform.models.audit import AuditEvent


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _errors(response: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = response.json().get("errors", [])
    return errors


class TestCrud:
    async def test_create_get_update_retire(self, factory: Factory, client: AsyncClient) -> None:
        setup = await admin_of_new_tenant(factory)
        headers = setup.headers
        site = await make_site(client, headers, "SMH")
        nurse = await factory.user(setup.tenant)
        seen = datetime.now(UTC) - timedelta(hours=2)
        created = await client.post(
            DEVICES,
            json={
                "kind": "clinical_device",
                "hostname": " Infusion-Pump-07.SMH.Example. ",
                "serial": "  ab-123-x ",
                "asset_tag": "smh-0007",
                "manufacturer": "Baxter",
                "model": "Sigma Spectrum",
                "os": "embedded",
                "os_version": "8.1",
                "site_id": site["id"],
                "assigned_user_id": str(nurse.id),
                "last_seen_at": seen.astimezone(timezone(timedelta(hours=2))).isoformat(),
                "notes": "ICU bay 4",
            },
            headers=headers,
        )
        assert created.status_code == 201, created.text
        device = created.json()
        assert device["hostname"] == "infusion-pump-07.smh.example"
        assert (device["serial"], device["asset_tag"]) == ("AB-123-X", "SMH-0007")
        assert device["status"] == "active", "status defaults to active"
        assert device["tenant_id"] == str(setup.tenant.id)
        assert datetime.fromisoformat(device["last_seen_at"]) == seen
        assert device["last_seen_at"].endswith(("Z", "+00:00")), "timestamps are returned in UTC"

        fetched = await client.get(f"{DEVICES}/{device['id']}", headers=headers)
        assert fetched.status_code == 200
        assert fetched.json() == device

        patched = await client.patch(
            f"{DEVICES}/{device['id']}", json={"notes": "moved to bay 5", "site_id": None}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        after = patched.json()
        assert (after["notes"], after["site_id"]) == ("moved to bay 5", None)
        unchanged = {k: v for k, v in device.items() if k not in {"notes", "site_id", "updated_at"}}
        assert {k: after[k] for k in unchanged} == unchanged, "fields not sent must not change"

        retired = await client.delete(f"{DEVICES}/{device['id']}", headers=headers)
        assert retired.status_code == 204
        again = await client.delete(f"{DEVICES}/{device['id']}", headers=headers)
        assert again.status_code == 204, "retiring a retired device is a no-op"
        kept = (await client.get(f"{DEVICES}/{device['id']}", headers=headers)).json()
        assert kept["status"] == "retired"
        assert kept["serial"] == "AB-123-X", "a retired device keeps its record"
        listed = await walk(client, headers, {"status": "retired"})
        assert [d["id"] for d in listed] == [device["id"]]
        # Its serial stays reserved.
        reuse = await client.post(DEVICES, json={"kind": "laptop", "serial": "AB-123-X"}, headers=headers)
        assert reuse.status_code == 422
        # PATCH brings it back.
        back = await client.patch(f"{DEVICES}/{device['id']}", json={"status": "in_stock"}, headers=headers)
        assert back.json()["status"] == "in_stock"

    async def test_retirement_is_audited_as_such(
        self, factory: Factory, client: AsyncClient, owner_db: Any
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        device = await make_device(client, setup.headers, serial="AUDIT-1")
        assert (await client.delete(f"{DEVICES}/{device['id']}", headers=setup.headers)).status_code == 204
        async with owner_db.dangerously_unscoped_session() as session:
            actions = list(
                await session.scalars(
                    select(AuditEvent.action)
                    .where(AuditEvent.tenant_id == setup.tenant.id, AuditEvent.object_id == device["id"])
                    .order_by(AuditEvent.seq)
                )
            )
        assert actions == ["device.created", "device.retired"]

    async def test_hostname_only_and_asset_tag_only_devices(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        by_host = await make_device(client, setup.headers, hostname="printer1")
        by_tag = await make_device(client, setup.headers, asset_tag="tag-1")
        assert (by_host["serial"], by_host["asset_tag"]) == (None, None)
        assert by_tag["asset_tag"] == "TAG-1"
        # Hostnames are not unique (a re-imaged machine reuses its name).
        assert (await make_device(client, setup.headers, hostname="PRINTER1"))["hostname"] == "printer1"

    async def test_unknown_device_is_404(self, factory: Factory, client: AsyncClient) -> None:
        setup = await admin_of_new_tenant(factory)
        path = f"{DEVICES}/{uuid.uuid4()}"
        for response in (
            await client.get(path, headers=setup.headers),
            await client.patch(path, json={"notes": "x"}, headers=setup.headers),
            await client.delete(path, headers=setup.headers),
        ):
            assert response.status_code == 404
            assert response.json()["type"] == "/problems/not-found"


class TestValidation:
    async def test_bad_input_names_the_field(self, factory: Factory, client: AsyncClient) -> None:
        setup = await admin_of_new_tenant(factory)
        headers = setup.headers
        await make_device(client, headers, serial="TAKEN-1", asset_tag="TAKEN-TAG")
        gone = await factory.user(setup.tenant, active=False)
        future = _iso(datetime.now(UTC) + timedelta(hours=1))
        cases: list[tuple[dict[str, Any], str]] = [
            ({"kind": "laptop"}, "serial"),
            ({"kind": "laptop", "serial": "  ", "asset_tag": "", "hostname": " "}, "serial"),
            ({"kind": "toaster", "serial": "S1"}, "kind"),
            ({"serial": "S1"}, "kind"),
            ({"kind": "laptop", "serial": "S1", "status": "stolen"}, "status"),
            ({"kind": "laptop", "hostname": "-leading-hyphen"}, "hostname"),
            ({"kind": "laptop", "hostname": "under_score"}, "hostname"),
            ({"kind": "laptop", "hostname": "a" * 64}, "hostname"),
            ({"kind": "laptop", "hostname": "double..dot"}, "hostname"),
            ({"kind": "laptop", "hostname": ".".join(["abcdefgh"] * 29)}, "hostname"),
            ({"kind": "laptop", "serial": "X" * 101}, "serial"),
            ({"kind": "laptop", "asset_tag": "tab\there"}, "asset_tag"),
            ({"kind": "laptop", "serial": " taken-1 "}, "serial"),
            ({"kind": "laptop", "serial": "S2", "asset_tag": "taken-tag"}, "asset_tag"),
            ({"kind": "laptop", "serial": "S1", "last_seen_at": "2024-01-01T08:00:00"}, "last_seen_at"),
            ({"kind": "laptop", "serial": "S1", "last_seen_at": "yesterday"}, "last_seen_at"),
            ({"kind": "laptop", "serial": "S1", "last_seen_at": future}, "last_seen_at"),
            ({"kind": "laptop", "serial": "S1", "site_id": str(uuid.uuid4())}, "site_id"),
            ({"kind": "laptop", "serial": "S1", "site_id": "not-a-uuid"}, "site_id"),
            ({"kind": "laptop", "serial": "S1", "assigned_user_id": str(uuid.uuid4())}, "assigned_user_id"),
            ({"kind": "laptop", "serial": "S1", "assigned_user_id": str(gone.id)}, "assigned_user_id"),
            ({"kind": "laptop", "serial": "S1", "manufacturer": "m" * 101}, "manufacturer"),
            ({"kind": "laptop", "serial": "S1", "notes": "n" * 10_001}, "notes"),
            ({"kind": "laptop", "serial": "S1", "tenant_id": str(uuid.uuid4())}, "tenant_id"),
            ({"kind": "laptop", "serial": 12345}, "serial"),
        ]
        for payload, field in cases:
            response = await client.post(DEVICES, json=payload, headers=headers)
            assert response.status_code == 422, (payload, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert any(field in e["field"] or field in e["message"] for e in _errors(response)), (
                payload,
                response.json(),
            )
        assert len(await walk(client, headers)) == 1, "nothing invalid was stored"

    async def test_several_problems_are_reported_together(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        response = await client.post(
            DEVICES,
            json={
                "kind": "laptop",
                "hostname": "bad_name",
                "serial": "S" * 101,
                "site_id": str(uuid.uuid4()),
            },
            headers=setup.headers,
        )
        assert response.status_code == 422
        assert {e["field"] for e in _errors(response)} == {"hostname", "serial", "site_id"}

    async def test_small_clock_skew_is_accepted(self, factory: Factory, client: AsyncClient) -> None:
        setup = await admin_of_new_tenant(factory)
        ahead = datetime.now(UTC) + timedelta(minutes=1)
        device = await make_device(client, setup.headers, last_seen_at=_iso(ahead))
        assert datetime.fromisoformat(device["last_seen_at"]) == ahead

    async def test_a_deactivated_user_keeps_devices_already_assigned(
        self, factory: Factory, client: AsyncClient, owner_db: Any
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        user = await factory.user(setup.tenant)
        device = await make_device(client, setup.headers, assigned_user_id=str(user.id))
        from msp_platform.models.user import User

        async with owner_db.dangerously_unscoped_session() as session:
            row = await session.get(User, (setup.tenant.id, user.id))
            row.active = False
            await session.commit()
        path = f"{DEVICES}/{device['id']}"
        same = await client.patch(
            path, json={"assigned_user_id": str(user.id), "notes": "x"}, headers=setup.headers
        )
        assert same.status_code == 200, "re-sending the current assignment is not a new assignment"
        other = await make_device(client, setup.headers)
        refused = await client.patch(
            f"{DEVICES}/{other['id']}", json={"assigned_user_id": str(user.id)}, headers=setup.headers
        )
        assert refused.status_code == 422
        assert "deactivated" in refused.text


class TestPatch:
    async def test_only_sent_fields_change_and_uniqueness_is_rechecked(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        headers = setup.headers
        first = await make_device(
            client, headers, serial="P-1", asset_tag="T-1", hostname="ws1", model="OptiPlex", notes="n"
        )
        second = await make_device(client, headers, serial="P-2", asset_tag="T-2")
        path = f"{DEVICES}/{first['id']}"

        same_serial = await client.patch(path, json={"serial": " p-1 "}, headers=headers)
        assert same_serial.status_code == 200, "re-sending its own serial (any case) is fine"
        assert same_serial.json()["serial"] == "P-1"
        for payload, field in (
            ({"serial": "p-2"}, "serial"),
            ({"asset_tag": " t-2"}, "asset_tag"),
            ({"kind": None}, "kind"),
            ({"status": None}, "status"),
            ({"kind": "toaster"}, "kind"),
            ({"hostname": "no way"}, "hostname"),
            ({"id": str(uuid.uuid4())}, "id"),
            ({"tenant_id": str(uuid.uuid4())}, "tenant_id"),
        ):
            response = await client.patch(path, json=payload, headers=headers)
            assert response.status_code == 422, (payload, response.text)
            assert any(field in e["field"] or field in e["message"] for e in _errors(response)), payload

        # Clearing every identifier is refused; clearing some is fine.
        cleared = await client.patch(path, json={"serial": None, "asset_tag": None}, headers=headers)
        assert cleared.status_code == 200
        assert (cleared.json()["serial"], cleared.json()["hostname"]) == (None, "ws1")
        none_left = await client.patch(path, json={"hostname": None}, headers=headers)
        assert none_left.status_code == 422

        # The freed serial can be taken by another device now.
        moved = await client.patch(f"{DEVICES}/{second['id']}", json={"serial": "P-1"}, headers=headers)
        assert moved.status_code == 200
        assert moved.json()["serial"] == "P-1"

        empty = await client.patch(path, json={}, headers=headers)
        assert empty.status_code == 200
        body = empty.json()
        assert (body["model"], body["notes"], body["kind"]) == ("OptiPlex", "n", "workstation")

    async def test_patch_status_to_retired_equals_retire(self, factory: Factory, client: AsyncClient) -> None:
        setup = await admin_of_new_tenant(factory)
        device = await make_device(client, setup.headers)
        response = await client.patch(
            f"{DEVICES}/{device['id']}", json={"status": "retired"}, headers=setup.headers
        )
        assert response.json()["status"] == "retired"


# --- listing -------------------------------------------------------------------------------------------------


async def _inventory(
    factory: Factory, client: AsyncClient
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """A tenant with 30 varied devices (some without hostname / last seen / assignee)."""
    setup = await admin_of_new_tenant(factory)
    headers = setup.headers
    north, south = await make_site(client, headers, "NORTH"), await make_site(client, headers, "SOUTH")
    alice, bob = await factory.user(setup.tenant), await factory.user(setup.tenant)
    kinds = ["workstation", "laptop", "mobile", "printer", "server", "network", "clinical_device"]
    statuses = ["active", "in_stock", "in_repair", "lost", "retired"]
    models = ["OptiPlex 7090", "Latitude 5440", "iPhone 15", "LaserJet M404", "PowerEdge R750"]
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
    devices = []
    for n in range(30):
        fields: dict[str, Any] = {
            "kind": kinds[n % len(kinds)],
            "status": statuses[n % len(statuses)],
            "serial": f"SER{(n * 7) % 30:04d}",
            "model": models[n % len(models)],
        }
        if n % 4:
            # Deliberate ties (n // 2) so the id breaks them.
            fields["hostname"] = f"host{(n * 11) % 30 // 2:03d}"
        if n % 3:
            fields["asset_tag"] = f"TAG{(n * 13) % 30:04d}"
        if n % 5:
            fields["last_seen_at"] = _iso(base + timedelta(days=(n * 3) % 17))
        if n % 2:
            fields["site_id"] = (north if n % 3 else south)["id"]
        if n % 3 == 1:
            fields["assigned_user_id"] = str(alice.id)
        elif n % 3 == 2 and n % 2:
            fields["assigned_user_id"] = str(bob.id)
        devices.append(await make_device(client, headers, **fields))
    refs = {"north": north, "south": south, "alice": alice, "bob": bob, "base": base}
    return setup, devices, refs


def _expected_order(devices: list[dict[str, Any]], sort: str) -> list[str]:
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name == "created":
        ordered = sorted(devices, key=lambda d: (d["created_at"], uuid.UUID(d["id"])), reverse=descending)
        return [d["id"] for d in ordered]

    def value(d: dict[str, Any]) -> Any:
        raw = d[name]
        return datetime.fromisoformat(raw) if raw is not None and name == "last_seen_at" else raw

    present = [d for d in devices if d[name] is not None]
    missing = [d for d in devices if d[name] is None]
    present.sort(key=lambda d: (value(d), uuid.UUID(d["id"])), reverse=descending)
    missing.sort(key=lambda d: uuid.UUID(d["id"]), reverse=descending)
    return [d["id"] for d in present + missing]


SORTS = [
    "created",
    "-created",
    "hostname",
    "-hostname",
    "last_seen_at",
    "-last_seen_at",
    "serial",
    "asset_tag",
]


class TestList:
    async def test_every_sort_pages_without_duplicates_or_omissions(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup, devices, _ = await _inventory(factory, client)
        for sort in SORTS:
            for limit in (2, 7, 200):
                seen = [d["id"] for d in await walk(client, setup.headers, {"sort": sort}, limit=limit)]
                assert len(seen) == len(set(seen)) == len(devices), (sort, limit)
                assert seen == _expected_order(devices, sort), (sort, limit)
        default = [d["id"] for d in await walk(client, setup.headers, limit=5)]
        assert default == _expected_order(devices, "created"), "the default order is creation"

    async def test_filters(self, factory: Factory, client: AsyncClient) -> None:
        setup, devices, refs = await _inventory(factory, client)
        base: datetime = refs["base"]
        cutoff = base + timedelta(days=8)

        def seen(d: dict[str, Any]) -> datetime | None:
            return datetime.fromisoformat(d["last_seen_at"]) if d["last_seen_at"] else None

        cases: list[tuple[dict[str, Any], Any]] = [
            ({"kind": "laptop"}, lambda d: d["kind"] == "laptop"),
            ({"kind": ["laptop", "printer"]}, lambda d: d["kind"] in {"laptop", "printer"}),
            ({"status": "in_repair"}, lambda d: d["status"] == "in_repair"),
            ({"status": ["active", "lost"]}, lambda d: d["status"] in {"active", "lost"}),
            ({"site_id": refs["north"]["id"]}, lambda d: d["site_id"] == refs["north"]["id"]),
            (
                {"assigned_user_id": str(refs["alice"].id)},
                lambda d: d["assigned_user_id"] == str(refs["alice"].id),
            ),
            ({"unassigned": "true"}, lambda d: d["assigned_user_id"] is None),
            ({"unassigned": "false"}, lambda d: d["assigned_user_id"] is not None),
            ({"seen_before": _iso(cutoff)}, lambda d: seen(d) is not None and seen(d) < cutoff),
            ({"seen_after": _iso(cutoff)}, lambda d: seen(d) is not None and seen(d) >= cutoff),
            ({"never_seen": "true"}, lambda d: seen(d) is None),
            ({"never_seen": "false"}, lambda d: seen(d) is not None),
            (
                {"seen_after": _iso(base + timedelta(days=3)), "seen_before": _iso(cutoff)},
                lambda d: seen(d) is not None and base + timedelta(days=3) <= seen(d) < cutoff,
            ),
            (
                {"kind": "workstation", "site_id": refs["south"]["id"]},
                lambda d: d["kind"] == "workstation" and d["site_id"] == refs["south"]["id"],
            ),
            # q: case-insensitive substring of hostname, serial, asset tag or model.
            ({"q": "HOST00"}, lambda d: "host00" in (d["hostname"] or "")),
            ({"q": "ser001"}, lambda d: "SER001" in d["serial"]),
            ({"q": "tag002"}, lambda d: "TAG002" in (d["asset_tag"] or "")),
            ({"q": "latitude"}, lambda d: "Latitude" in d["model"]),
            ({"q": "0001"}, lambda d: any("0001" in (d[k] or "") for k in ("serial", "asset_tag"))),
            ({"q": "%"}, lambda d: False),
            ({"q": "_"}, lambda d: False),
        ]
        for params, wanted in cases:
            expected = _expected_order([d for d in devices if wanted(d)], "created")
            assert expected or params.get("q") in {"%", "_"}, params
            got = [d["id"] for d in await walk(client, setup.headers, params, limit=3)]
            assert got == expected, params
        stale = await walk(client, setup.headers, {"seen_before": _iso(cutoff), "sort": "-last_seen_at"})
        times = [datetime.fromisoformat(d["last_seen_at"]) for d in stale]
        assert times == sorted(times, reverse=True)

    async def test_bad_list_parameters(self, factory: Factory, client: AsyncClient) -> None:
        setup, _, _ = await _inventory(factory, client)
        headers = setup.headers
        first = (await client.get(DEVICES, params={"limit": 2, "sort": "hostname"}, headers=headers)).json()
        other_sort = await client.get(
            DEVICES, params={"cursor": first["next_cursor"], "sort": "serial"}, headers=headers
        )
        assert other_sort.status_code == 400
        for params in (
            {"sort": "color"},
            {"kind": "toaster"},
            {"status": "stolen"},
            {"seen_before": "2024-01-01T00:00:00"},
            {"seen_after": "last week"},
            {"site_id": "nope"},
            {"unassigned": "maybe"},
            {"limit": 0},
            {"limit": 201},
            {"q": "x" * 101},
        ):
            response = await client.get(DEVICES, params=params, headers=headers)
            assert response.status_code in {400, 422}, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        tampered = await client.get(DEVICES, params={"cursor": "garbage!"}, headers=headers)
        assert tampered.status_code == 400


# --- permissions, idempotency, isolation ------------------------------------------------------------------


class TestCallers:
    async def test_tenant_users_read_but_cannot_write(self, factory: Factory, client: AsyncClient) -> None:
        setup = await admin_of_new_tenant(factory)
        user = await factory.user(setup.tenant)
        device = await make_device(client, setup.headers, serial="R-1", assigned_user_id=str(user.id))
        user_headers = await factory.headers(user)
        assert [d["id"] for d in await walk(client, user_headers)] == [device["id"]]
        assert (await client.get(f"{DEVICES}/{device['id']}", headers=user_headers)).status_code == 200
        for response in (
            await client.post(DEVICES, json={"kind": "laptop", "serial": "X"}, headers=user_headers),
            await client.patch(f"{DEVICES}/{device['id']}", json={"notes": "x"}, headers=user_headers),
            await client.delete(f"{DEVICES}/{device['id']}", headers=user_headers),
            await post_csv(client, user_headers, to_csv([["laptop", "Y"]], ["kind", "serial"])),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["type"] == "/problems/insufficient-scope"

    async def test_tenant_users_see_only_the_devices_assigned_to_them(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        """Like ServiceNow's "my assets": a plain user sees their own devices, not the tenant's inventory."""
        setup = await admin_of_new_tenant(factory)
        mine, colleague = await factory.user(setup.tenant), await factory.user(setup.tenant)
        laptop = await make_device(client, setup.headers, serial="MY-LAPTOP", assigned_user_id=str(mine.id))
        phone = await make_device(client, setup.headers, serial="MY-PHONE", assigned_user_id=str(mine.id))
        other = await make_device(
            client, setup.headers, serial="THEIR-PC", hostname="ward3-pc", assigned_user_id=str(colleague.id)
        )
        spare = await make_device(client, setup.headers, serial="SPARE-1")
        as_me = await factory.headers(mine)
        assert {d["id"] for d in await walk(client, as_me)} == {laptop["id"], phone["id"]}
        for params in (
            {"assigned_user_id": str(colleague.id)},
            {"unassigned": "true"},
            {"q": "ward3"},
            {"sort": "hostname"},
        ):
            seen = {d["id"] for d in await walk(client, as_me, params)}
            assert seen <= {laptop["id"], phone["id"]}, params
        for hidden in (other, spare):
            response = await client.get(f"{DEVICES}/{hidden['id']}", headers=as_me)
            assert response.status_code == 404, response.text
            assert hidden["serial"] not in response.text
        assert (await client.get(f"{DEVICES}/{laptop['id']}", headers=as_me)).status_code == 200
        # Tenant administrators and MSP staff see the whole inventory.
        assert len(await walk(client, setup.headers)) == 4
        agent = await factory.staff(grants=[setup.tenant])
        assert len(await walk(client, await factory.headers(agent, tenant=setup.tenant))) == 4

    async def test_integration_clients_need_devices_write(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        writer = await factory.integration_client(setup.tenant, scopes="devices:read devices:write")
        reader = await factory.integration_client(setup.tenant, scopes="devices:read")
        write_headers = {"Authorization": f"Bearer {await factory.client_token(*writer)}"}
        read_headers = {"Authorization": f"Bearer {await factory.client_token(*reader)}"}
        created = await client.post(
            DEVICES, json={"kind": "server", "serial": "RMM-1"}, headers=write_headers
        )
        assert created.status_code == 201, created.text
        assert created.json()["tenant_id"] == str(setup.tenant.id)
        imported = await post_csv(client, write_headers, to_csv([["server", "RMM-2"]], ["kind", "serial"]))
        assert imported.status_code == 200, imported.text
        assert len(await walk(client, read_headers)) == 2
        refused = await client.post(DEVICES, json={"kind": "server", "serial": "RMM-3"}, headers=read_headers)
        assert refused.status_code == 403

    async def test_staff_act_through_msp_tenant(self, factory: Factory, client: AsyncClient) -> None:
        a, b = await factory.tenant(), await factory.tenant()
        admin = await factory.staff(role="msp_admin", tier=None)
        for tenant in (a, b):
            response = await client.post(
                DEVICES,
                json={"kind": "laptop", "serial": "SAME-SERIAL", "notes": f"of {tenant.slug}"},
                headers=await factory.headers(admin, tenant=tenant),
            )
            assert response.status_code == 201, "serials are unique per tenant, not globally"
            assert response.json()["tenant_id"] == str(tenant.id)
        no_tenant = await client.post(
            DEVICES, json={"kind": "laptop", "serial": "Z"}, headers=await factory.headers(admin)
        )
        assert no_tenant.status_code == 400
        assert "MSP-Tenant" in no_tenant.json()["detail"]
        agent = await factory.staff(role="msp_agent", grants=[a])
        agent_a = await factory.headers(agent, tenant=a)
        only_a = await walk(client, agent_a)
        assert {d["tenant_id"] for d in only_a} == {str(a.id)}
        refused = await client.post(DEVICES, json={"kind": "laptop", "serial": "Q"}, headers=agent_a)
        assert refused.status_code == 403, "agents read devices but do not change the inventory"
        assert (await client.get(DEVICES, headers=await factory.headers(agent, tenant=b))).status_code == 404

    async def test_fifty_concurrent_creates_with_one_idempotency_key(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        headers = {**setup.headers, "Idempotency-Key": f"device-{uuid.uuid4()}"}
        payload = {"kind": "laptop", "serial": "BURST-1", "hostname": "burst"}
        responses = await asyncio.gather(
            *(client.post(DEVICES, json=payload, headers=headers) for _ in range(50))
        )
        assert [r.status_code for r in responses] == [201] * 50, [
            r.text for r in responses if r.status_code != 201
        ]
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
        assert len(await walk(client, setup.headers)) == 1
        other_body = await client.post(DEVICES, json={**payload, "serial": "BURST-2"}, headers=headers)
        assert other_body.status_code == 422
        assert other_body.json()["type"] == "/problems/idempotency-key-reused"

    async def test_concurrent_creates_of_one_serial_store_one_device(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        setup = await admin_of_new_tenant(factory)
        responses = await asyncio.gather(
            *(
                client.post(DEVICES, json={"kind": "laptop", "serial": "RACE-1"}, headers=setup.headers)
                for _ in range(10)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(201) == 1, statuses
        assert set(statuses) <= {201, 409, 422}, "a lost race is a conflict, never a 500"
        assert len(await walk(client, setup.headers)) == 1


@pytest.mark.parametrize("via", ["tenant_admin", "integration_client"])
async def test_cross_tenant_matrix(factory: Factory, client: AsyncClient, via: str) -> None:
    a = await admin_of_new_tenant(factory)
    b = await admin_of_new_tenant(factory)
    if via == "integration_client":
        creds = await factory.integration_client(a.tenant, scopes="devices:read devices:write")
        headers_a = {"Authorization": f"Bearer {await factory.client_token(*creds)}"}
    else:
        headers_a = a.headers
    b_site = await make_site(client, b.headers, "ONCOLOGY-B", "Tenant B Cancer Center")
    b_user = await factory.user(b.tenant, email=f"oncologist@{b.tenant.slug}.example")
    b_device = await make_device(
        client,
        b.headers,
        kind="clinical_device",
        hostname="secret-linac-b",
        serial="SECRETSERIALB",
        asset_tag="SECRETTAGB",
        model="Secret LINAC",
        notes="Tenant B private note",
        site_id=b_site["id"],
        assigned_user_id=str(b_user.id),
    )
    own = await make_device(client, headers_a, serial="A-OWN-1")
    path_b = f"{DEVICES}/{b_device['id']}"
    secrets = [
        "SECRETSERIALB",
        "secret-linac-b",
        "Tenant B private note",
        "Tenant B Cancer Center",
        "ONCOLOGY-B",
    ]

    await assert_isolated(
        client,
        headers_a,
        foreign_paths=[path_b],
        patch_body={"notes": "hijacked"},
        lists=[DEVICES],
        foreign_ids=[b_device["id"]],
        secrets=secrets,
    )
    # Never in search or filters either.
    for params in (
        {"q": "secret"},
        {"q": "SECRETTAGB"},
        {"site_id": b_site["id"]},
        {"assigned_user_id": str(b_user.id)},
        {"kind": "clinical_device"},
    ):
        response = await client.get(DEVICES, params=params, headers=headers_a)
        assert response.status_code == 200
        assert response.json()["items"] == [], params
    # B's site and user cannot be referenced: they read as unknown.
    for payload, field, message in (
        ({"kind": "laptop", "serial": "A-2", "site_id": b_site["id"]}, "site_id", "no such site"),
        (
            {"kind": "laptop", "serial": "A-2", "assigned_user_id": str(b_user.id)},
            "assigned_user_id",
            "no such user",
        ),
    ):
        for response in (
            await client.post(DEVICES, json=payload, headers=headers_a),
            await client.patch(f"{DEVICES}/{own['id']}", json={field: payload[field]}, headers=headers_a),
        ):
            assert response.status_code == 422, response.text
            assert {"field": field, "message": message} in _errors(response)
            for secret in secrets:
                assert secret not in response.text
    # B's identifiers are free in A (uniqueness is per tenant and says nothing about B).
    same_serial = await client.post(
        DEVICES,
        json={"kind": "laptop", "serial": "secretserialb", "asset_tag": "secrettagb"},
        headers=headers_a,
    )
    assert same_serial.status_code == 201
    assert same_serial.json()["id"] != b_device["id"]
    # An import in A naming B's site code or user email: unknown, and B's device is not upserted.
    body = to_csv(
        [
            ["laptop", "A-IMP-1", "ONCOLOGY-B", ""],
            ["laptop", "A-IMP-2", "", b_user.email],
            ["server", "SECRETSERIALB", "", ""],
        ],
        ["kind", "serial", "site", "assigned_user"],
    )
    report = await post_csv(client, headers_a, body, mode="partial")
    assert report.status_code == 200, report.text
    rows = report.json()["rows"]
    assert rows[0]["status"] == "error"
    assert rows[0]["errors"] == [{"field": "site", "message": "unknown site code ONCOLOGY-B"}]
    assert rows[1]["status"] == "error"
    assert rows[1]["errors"] == [{"field": "assigned_user", "message": f"unknown user email {b_user.email}"}]
    assert rows[2]["status"] == "updated", "A's own SECRETSERIALB device, made above"
    assert rows[2]["id"] == same_serial.json()["id"]
    atomic = await client.post(IMPORT, content=body, headers={**headers_a, "content-type": "text/csv"})
    assert atomic.status_code == 422
    assert b_device["id"] not in atomic.text
    # B's device is untouched.
    still = (await client.get(path_b, headers=b.headers)).json()
    assert still == b_device
