"""Tenants: "data kept, access closed" on offboarding, suspension and invitations, concurrent creates of one
slug, LIKE wildcards in search, and the shipped manifests applied on both backends."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from tests.conftest import (
    TEST_PASSWORD,
    Factory,
    Person,
    base_settings,
)
from tests.support.isolation import all_ids

from msp_platform.audit.service import chains, verify_chain
from msp_platform.authz.service import system_tenant_context
from msp_platform.config import PROJECT_ROOT, Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.models.tenant import Tenant
from msp_platform.tenants.manifest import apply_directory, check_files

API = "/api/v1"
TENANTS = f"{API}/tenants"
ACCEPT = f"{API}/auth/accept-invitation"
NEW_PASSWORD = "a long enough new passphrase"


async def _msp_admin(factory: Factory) -> dict[str, str]:
    return await factory.headers(await factory.staff(role="msp_admin", tier=None))


def _new_tenant(**overrides: Any) -> dict[str, Any]:
    token = uuid.uuid4().hex[:10]
    return {
        "slug": f"t-{token}",
        "name": f"Hospital {token}",
        "ticket_prefix": "P" + token[:8].upper(),
        "timezone": "America/Chicago",
        **overrides,
    }


async def _sign_in(client: AsyncClient, person: Person) -> dict[str, Any]:
    response = await client.post(
        f"{API}/auth/sign-in",
        json={"email": person.email, "password": TEST_PASSWORD, "tenant": person.tenant_slug},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _refresh(client: AsyncClient, token: str) -> int:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": "msp-console", "refresh_token": token},
    )
    return response.status_code


# --- offboarding: data kept, access closed --------------------------------------------------------------------


async def test_msp_admins_still_read_an_offboarded_tenant_but_change_nothing(
    factory: Factory, client: AsyncClient
) -> None:
    admin = await _msp_admin(factory)
    tenant = await factory.tenant()
    tenant_admin = await factory.headers(await factory.user(tenant, role="tenant_admin"))
    site = (
        await client.post(f"{API}/sites", json={"code": "KEPT", "name": "Kept"}, headers=tenant_admin)
    ).json()
    user = (
        await client.post(
            f"{API}/users", json={"email": "kept@x.example", "name": "Kept User"}, headers=tenant_admin
        )
    ).json()
    device = (
        await client.post(f"{API}/devices", json={"kind": "laptop", "serial": "KEPT-1"}, headers=tenant_admin)
    ).json()
    await factory.integration_client(tenant)
    offboarded = await client.post(
        f"{TENANTS}/{tenant.id}/offboard", json={"reason": "Contract ended"}, headers=admin
    )
    assert offboarded.status_code == 200, offboarded.text

    as_admin = {**admin, "MSP-Tenant": str(tenant.id)}
    assert user["id"] in await all_ids(client, f"{API}/users", as_admin)
    assert device["id"] in await all_ids(client, f"{API}/devices", as_admin)
    assert site["id"] in await all_ids(client, f"{API}/sites", as_admin)
    for path in (f"{API}/users/{user['id']}", f"{API}/devices/{device['id']}", f"{API}/sites/{site['id']}"):
        assert (await client.get(path, headers=as_admin)).status_code == 200, path
    log = (await client.get(f"{API}/audit-events", headers=as_admin, params={"limit": 200})).json()["items"]
    assert "tenant.offboarded" in {e["action"] for e in log}
    verified = (await client.get(f"{API}/audit-events/verify", headers=as_admin)).json()
    assert (verified["chain"], verified["valid"]) == (str(tenant.id), True)
    clients = (
        await client.get(f"{API}/clients", headers=as_admin, params={"include_revoked": "true"})
    ).json()
    assert len(clients["items"]) == 1
    # By slug too.
    assert (await client.get(f"{API}/users", headers={**admin, "MSP-Tenant": tenant.slug})).status_code == 200

    writes = [
        ("POST", f"{API}/users", {"email": "new@x.example", "name": "New"}),
        ("PATCH", f"{API}/users/{user['id']}", {"name": "Changed"}),
        ("POST", f"{API}/users/{user['id']}/deactivate", None),
        ("POST", f"{API}/sites", {"code": "NEW", "name": "New"}),
        ("PATCH", f"{API}/sites/{site['id']}", {"name": "Changed"}),
        ("DELETE", f"{API}/sites/{site['id']}", None),
        ("POST", f"{API}/devices", {"kind": "laptop", "serial": "NEW-1"}),
        ("DELETE", f"{API}/devices/{device['id']}", None),
        ("POST", f"{API}/clients", {"name": "New"}),
    ]
    for method, path, body in writes:
        response = await client.request(method, path, json=body, headers=as_admin)
        assert response.status_code == 409, (method, path, response.text)
        problem = response.json()
        assert problem["type"] == "/problems/tenant-read-only"
        assert "offboarded" in problem["detail"]
        assert tenant.slug in problem["detail"]
    imported = await client.post(
        f"{API}/users/import",
        content=b"email,name\nx@x.example,X\n",
        headers={**as_admin, "content-type": "text/csv"},
    )
    assert imported.status_code == 409
    assert (await client.get(f"{API}/users/{user['id']}", headers=as_admin)).json()["name"] == "Kept User"

    # Agents lose the tenant (day-to-day work does not see it); its own people are refused.
    agent = await factory.staff(grants=[tenant])
    refused = await client.get(f"{API}/users", headers=await factory.headers(agent, tenant=tenant))
    assert refused.status_code == 404
    assert (await client.get(f"{API}/users", headers=tenant_admin)).status_code == 403

    # Reactivated: writable again.
    assert (await client.post(f"{TENANTS}/{tenant.id}/reactivate", headers=admin)).status_code == 200
    patched = await client.patch(f"{API}/users/{user['id']}", json={"name": "Changed"}, headers=as_admin)
    assert patched.status_code == 200, patched.text


async def test_offboarding_revokes_invitations_sessions_and_clients(
    factory: Factory, client: AsyncClient
) -> None:
    admin = await _msp_admin(factory)
    tenant = await factory.tenant()
    tenant_admin = await factory.headers(await factory.user(tenant, role="tenant_admin"))
    person = await factory.user(tenant)
    invited = await factory.user(tenant)
    token = (await client.post(f"{API}/users/{invited.id}/invitations", headers=tenant_admin)).json()["token"]
    session = await _sign_in(client, person)
    client_id, secret = await factory.integration_client(tenant)
    await factory.client_token(client_id, secret)

    offboarded = await client.post(
        f"{TENANTS}/{tenant.id}/offboard", json={"reason": "Merged"}, headers=admin
    )
    assert offboarded.status_code == 200
    assert (await client.post(f"{TENANTS}/{tenant.id}/reactivate", headers=admin)).status_code == 200

    accepted = await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})
    assert accepted.status_code == 400, accepted.text
    assert accepted.json()["reason"] == "revoked"
    assert await _refresh(client, session["refresh_token"]) == 400, "the old session ended"
    credentials = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert credentials.status_code in {400, 401}, credentials.text
    listed = (
        await client.get(
            f"{API}/clients",
            headers={**admin, "MSP-Tenant": str(tenant.id)},
            params={"include_revoked": "true"},
        )
    ).json()["items"]
    assert [c["revoked_at"] is not None for c in listed] == [True]
    # People sign in again and new invitations work.
    assert await _refresh(client, (await _sign_in(client, person))["refresh_token"]) == 200
    fresh = (await client.post(f"{API}/users/{invited.id}/invitations", headers=tenant_admin)).json()["token"]
    assert (await client.post(ACCEPT, json={"token": fresh, "password": NEW_PASSWORD})).status_code == 200
    log = (await client.get(f"{API}/audit-events", headers=tenant_admin, params={"limit": 200})).json()[
        "items"
    ]
    actions = {e["action"] for e in log}
    assert {"tenant.offboarded", "user_invitation.revoked", "client.revoked"} <= actions


async def test_suspension_blocks_invitations_until_reactivated(factory: Factory, client: AsyncClient) -> None:
    admin = await _msp_admin(factory)
    tenant = await factory.tenant()
    tenant_admin = await factory.headers(await factory.user(tenant, role="tenant_admin"))
    invited = await factory.user(tenant)
    token = (await client.post(f"{API}/users/{invited.id}/invitations", headers=tenant_admin)).json()["token"]
    assert (
        await client.post(f"{TENANTS}/{tenant.id}/suspend", json={"reason": "Unpaid"}, headers=admin)
    ).status_code == 200
    refused = await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})
    assert refused.status_code == 400
    assert refused.json()["reason"] == "tenant_inactive"
    assert (await client.post(f"{TENANTS}/{tenant.id}/reactivate", headers=admin)).status_code == 200
    # Suspension pauses access, it does not revoke: the same invitation works afterwards.
    assert (await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})).status_code == 200


# --- concurrency and search -----------------------------------------------------------------------------------


async def test_concurrent_creates_of_one_slug_store_one_tenant(factory: Factory, client: AsyncClient) -> None:
    admin = await _msp_admin(factory)
    slug = f"race-{uuid.uuid4().hex[:8]}"
    responses = await asyncio.gather(
        *(client.post(TENANTS, json=_new_tenant(slug=slug), headers=admin) for _ in range(10))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409, 422}, statuses
    for response in responses:
        if response.status_code != 201:
            assert response.headers["content-type"] == "application/problem+json"
            assert slug in response.text, response.text
    found = (await client.get(TENANTS, headers=admin, params={"q": slug})).json()["items"]
    assert [t["slug"] for t in found] == [slug]


async def test_tenant_search_treats_like_wildcards_literally(factory: Factory, client: AsyncClient) -> None:
    admin = await _msp_admin(factory)
    token = uuid.uuid4().hex[:8]
    percent = await factory.tenant(name=f"Clinic {token} 100% Care")
    underscore = await factory.tenant(name=f"Clinic {token} A_B")
    await factory.tenant(name=f"Clinic {token} AxB plain")

    async def found(q: str) -> set[str]:
        response = await client.get(TENANTS, headers=admin, params={"q": q, "limit": 200})
        assert response.status_code == 200
        return {t["id"] for t in response.json()["items"]}

    assert await found(f"{token} 100%") == {str(percent.id)}
    assert await found(f"{token} a_b") == {str(underscore.id)}
    assert await found(f"{token} %") == set(), "no name has a literal '% ' after the token"
    assert len(await found(token)) == 3


# --- the shipped manifests, on both backends ------------------------------------------------------------------


@pytest.fixture
async def empty_db(fresh: Settings) -> Settings:
    """A fresh, migrated database (the shipped manifests' slugs are fixed, so not the shared one)."""
    await migrate.upgrade(fresh)
    return fresh


async def test_the_shipped_manifests_apply_and_reapply_without_changes(empty_db: Settings) -> None:
    tenants_dir = PROJECT_ROOT / "tenants"
    items, problems = check_files(tenants_dir)
    assert problems == []
    db = Database.create(empty_db)
    lines: list[str] = []
    try:
        first = await apply_directory(db, tenants_dir, echo=lines.append)
        assert first.count("tenant", "+") == len(items)
        assert first.count("site", "+") > 0
        assert first.count("user", "+") > 0
        again: list[str] = []
        second = await apply_directory(db, tenants_dir, echo=again.append)
        assert not second.changed, "\n".join(again)
        assert second.count("tenant", "=") == len(items)
        async with db.dangerously_unscoped_session() as session:
            slugs = {t.slug for t in (await session.scalars(select(Tenant))).all()}
            assert slugs == {item.slug for item in items}
            for chain in await session.run_sync(chains):
                if chain != "platform":
                    await set_tenant_context(session, system_tenant_context(uuid.UUID(chain)))
                report = await session.run_sync(verify_chain, chain)
                assert report.valid, report
    finally:
        await db.dispose()


def test_demo_onboarding_csv_writes_into_the_var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from msp_platform import cli

    var_dir, elsewhere = tmp_path / "var-dir", tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(cli, "get_settings", lambda: base_settings(var_dir))
    result = CliRunner().invoke(cli.main, ["demo", "onboarding-csv", "--users", "5", "--devices", "3"])
    assert result.exit_code == 0, result.output
    assert (var_dir / "users.csv").read_text().count("\n") == 6
    assert (var_dir / "devices.csv").exists()
    assert not (elsewhere / "var").exists(), "nothing written relative to the current directory"
    explicit = tmp_path / "explicit"
    again = CliRunner().invoke(cli.main, ["demo", "onboarding-csv", "--users", "2", "--out", str(explicit)])
    assert again.exit_code == 0, again.output
    assert (explicit / "users.csv").exists()
