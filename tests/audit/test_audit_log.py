"""Every mutation leaves an append-only, hash-chained audit event; tampering is detected."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from httpx import AsyncClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from tests.conftest import Backend, Factory

from msp_platform.audit.service import verify_chain
from msp_platform.db.engine import Database
from msp_platform.models.audit import AuditEvent


async def _tenant_admin(factory: Factory) -> tuple[object, dict[str, str]]:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    return tenant, await factory.headers(admin)


async def test_mutations_are_recorded_with_actor_changes_and_request_id(
    factory: Factory, client: AsyncClient
) -> None:
    tenant, headers = await _tenant_admin(factory)
    created = await client.post(
        "/api/v1/sites", json={"code": "ICU", "name": "Intensive Care"}, headers=headers
    )
    site_id = created.json()["id"]
    await client.patch(
        f"/api/v1/sites/{site_id}",
        json={"name": "ICU North"},
        headers={**headers, "X-Request-ID": "req-audit-0001"},
    )
    await client.delete(f"/api/v1/sites/{site_id}", headers=headers)
    events = (
        await client.get("/api/v1/audit-events", headers=headers, params={"object_id": site_id})
    ).json()["items"]
    assert [e["action"] for e in events] == ["site.deleted", "site.updated", "site.created"]
    created_event, updated_event = events[2], events[1]
    me = (await client.get("/api/v1/me", headers=headers)).json()
    assert created_event["actor"] == f"user:{me['subject']}"
    assert created_event["changes"]["code"] == [None, "ICU"]
    assert updated_event["changes"] == {"name": ["Intensive Care", "ICU North"]}
    assert updated_event["request_id"] == "req-audit-0001"
    assert events[0]["changes"]["name"] == ["ICU North", None]
    assert updated_event["prev_hash"] == created_event["hash"]
    verified = (await client.get("/api/v1/audit-events/verify", headers=headers)).json()
    assert verified["valid"] is True
    assert verified["events"] >= 3
    assert verified["chain"] == str(tenant.id)  # type: ignore[attr-defined]


async def test_secrets_never_reach_the_log(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _tenant_admin(factory)
    created = await client.post("/api/v1/clients", json={"name": "ERP"}, headers=headers)
    secret = created.json()["client_secret"]
    events = (
        await client.get("/api/v1/audit-events", headers=headers, params={"object_type": "client"})
    ).json()
    assert events["items"][0]["action"] == "client.created"
    assert secret not in str(events)
    assert "secret_hash" not in str(events)


async def test_a_rolled_back_request_leaves_no_event(factory: Factory, client: AsyncClient) -> None:
    _, headers = await _tenant_admin(factory)
    bad = await client.post(
        "/api/v1/sites", json={"code": "X", "name": "X", "timezone": "Nowhere/Else"}, headers=headers
    )
    assert bad.status_code == 422
    events = (
        await client.get("/api/v1/audit-events", headers=headers, params={"object_type": "site"})
    ).json()
    assert events["items"] == []


async def test_visibility(factory: Factory, client: AsyncClient) -> None:
    tenant, headers = await _tenant_admin(factory)
    other, other_headers = await _tenant_admin(factory)
    await client.post("/api/v1/sites", json={"code": "A", "name": "Only A"}, headers=headers)
    await client.post("/api/v1/sites", json={"code": "B", "name": "Only B"}, headers=other_headers)
    mine = (await client.get("/api/v1/audit-events", headers=headers)).json()["items"]
    assert {e["tenant_id"] for e in mine} == {str(tenant.id)}  # type: ignore[attr-defined]
    assert "Only B" not in str(mine)
    user = await factory.user(tenant)  # type: ignore[arg-type]
    assert (await client.get("/api/v1/audit-events", headers=await factory.headers(user))).status_code == 403
    agent = await factory.staff(grants=[tenant])  # type: ignore[list-item]
    assert (
        await client.get("/api/v1/audit-events", headers=await factory.headers(agent, tenant=tenant))
    ).status_code == 403  # type: ignore[arg-type]
    admin = await factory.staff(role="msp_admin", tier=None)
    as_admin = await client.get("/api/v1/audit-events", headers=await factory.headers(admin, tenant=other))  # type: ignore[arg-type]
    assert {e["tenant_id"] for e in as_admin.json()["items"]} == {str(other.id)}  # type: ignore[attr-defined]


async def test_platform_chain_records_staff_changes(factory: Factory, client: AsyncClient) -> None:
    admin = await factory.staff(role="msp_admin", tier=None)
    headers = await factory.headers(admin)
    created = await client.post(
        "/api/v1/staff",
        json={"email": "new.agent@msp.example", "name": "New Agent", "tier": 2},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    events = (
        await client.get(
            "/api/v1/platform/audit-events", headers=headers, params={"object_id": created.json()["id"]}
        )
    ).json()
    assert events["items"][0]["action"] == "staff.created"
    assert (await client.get("/api/v1/platform/audit-events/verify", headers=headers)).json()["valid"] is True


async def test_concurrent_writers_keep_one_unbroken_chain(factory: Factory, client: AsyncClient) -> None:
    _tenant, headers = await _tenant_admin(factory)
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/sites", json={"code": f"C{i}", "name": f"Clinic {i}"}, headers=headers)
            for i in range(20)
        )
    )
    assert [r.status_code for r in responses] == [201] * 20
    report = (await client.get("/api/v1/audit-events/verify", headers=headers)).json()
    assert report["valid"] is True
    assert report["events"] >= 20


async def test_tampering_is_detected(factory: Factory, client: AsyncClient, owner_db: Database) -> None:
    tenant, headers = await _tenant_admin(factory)
    for code in ("T1", "T2", "T3"):
        await client.post("/api/v1/sites", json={"code": code, "name": code}, headers=headers)
    async with owner_db.dangerously_unscoped_session() as session:
        second = await session.scalar(
            select(AuditEvent).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == 2)  # type: ignore[attr-defined]
        )
        assert second is not None
        original_actor = second.actor
        last_seq = await session.scalar(
            select(func.max(AuditEvent.seq)).where(AuditEvent.tenant_id == tenant.id)  # type: ignore[attr-defined]
        )
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.tenant_id == second.tenant_id, AuditEvent.id == second.id)
            .values(actor="someone-else")
        )
        await session.commit()
    report = (await client.get("/api/v1/audit-events/verify", headers=headers)).json()
    assert report == {
        "chain": str(tenant.id),  # type: ignore[attr-defined]
        "events": 2,
        "valid": False,
        "first_bad_seq": 2,
        "problem": "event 2 was altered",
    }
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            delete(AuditEvent).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == last_seq)
        )  # type: ignore[attr-defined]
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == 2)  # type: ignore[attr-defined]
            .values(actor=original_actor)
        )
        await session.commit()
        truncated = await session.run_sync(verify_chain, str(tenant.id))  # type: ignore[attr-defined]
    assert truncated.valid is False
    assert "removed" in (truncated.problem or "")


@pytest.mark.postgres_only
async def test_the_application_role_cannot_rewrite_history(pg_backend: Backend) -> None:
    db = Database.create(pg_backend.settings)
    try:
        async with db.engine.connect() as conn:
            with pytest.raises(DBAPIError, match="permission denied"):
                await conn.execute(text("UPDATE audit_events SET actor = 'x'"))
            await conn.rollback()
            with pytest.raises(DBAPIError, match="permission denied"):
                await conn.execute(text("DELETE FROM platform_audit_events"))
            await conn.rollback()
    finally:
        await db.dispose()


@pytest.mark.slow
async def test_cli_verify_reports_tampering(
    backend: Backend, factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_admin(factory)
    await client.post("/api/v1/sites", json={"code": "CLI", "name": "Checked by the CLI"}, headers=headers)
    settings = backend.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MSP_")},
        "MSP_DATABASE_URL": settings.effective_database_url,
        "MSP_DATABASE_OWNER_URL": settings.effective_owner_url,
        "MSP_VAR_DIR": str(settings.var_dir),
        "MSP_SECRET_KEY": "test-secret-key",
    }
    command = [sys.executable, "-m", "msp_platform", "audit", "verify", "--tenant", tenant.slug]  # type: ignore[attr-defined]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=60)

    clean = await asyncio.to_thread(run)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("ok")
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == 1)
            .values(object_id="forged")  # type: ignore[attr-defined]
        )
        await session.commit()
    tampered = await asyncio.to_thread(run)
    assert tampered.returncode == 1
    assert "TAMPERED" in tampered.stdout
    assert "event 1 was altered" in tampered.stdout
