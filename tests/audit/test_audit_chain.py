"""The keyed audit chain: tampering is found even when the attacker also edits or deletes the chain head, or
rewrites an event and re-hashes the rest of the chain without the key. Staff-only (internal) events."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

from click.testing import CliRunner, Result
from httpx import AsyncClient
from sqlalchemy import delete, func, select, update
from tests.conftest import Backend, Factory

from msp_platform.audit.cli import audit_cli
from msp_platform.audit.service import GENESIS, chains, record, verify_chain
from msp_platform.authz.service import system_tenant_context
from msp_platform.db.engine import Database
from msp_platform.db.session import set_tenant_context
from msp_platform.models.audit import AuditChain, AuditEvent
from msp_platform.models.tenant import Tenant
from msp_platform.models.user import User

VERIFY = "/api/v1/audit-events/verify"
EVENTS = "/api/v1/audit-events"


async def _tenant_with_events(factory: Factory, client: AsyncClient) -> tuple[Tenant, dict[str, str]]:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    headers = await factory.headers(admin)
    for code in ("C1", "C2", "C3"):
        created = await client.post("/api/v1/sites", json={"code": code, "name": code}, headers=headers)
        assert created.status_code == 201, created.text
    assert (await client.get(VERIFY, headers=headers)).json()["valid"] is True
    return tenant, headers


def _cli_env(backend: Backend) -> dict[str, str | None]:
    settings = backend.settings
    return {
        "MSP_DATABASE_URL": settings.effective_database_url,
        "MSP_DATABASE_OWNER_URL": settings.effective_owner_url,
        "MSP_VAR_DIR": str(settings.var_dir),
        "MSP_SECRET_KEY": "test-secret-key",
    }


async def _cli(backend: Backend, *args: str) -> Result:
    """``msp audit ...``, in a thread (the command runs its own event loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, audit_cli, list(args), env=_cli_env(backend))


async def _cli_verify(backend: Backend, tenant: Tenant) -> Result:
    return await _cli(backend, "verify", "--tenant", tenant.slug)


async def _tamper(
    owner_db: Database,
    tenant: Tenant,
    *,
    alter_seq: int | None = None,
    delete_log: bool = False,
    delete_head: bool = False,
) -> None:
    """What someone with write access to the database does, in one transaction: alter an event's actor,
    delete the tenant's whole log, delete its chain head."""
    async with owner_db.dangerously_unscoped_session() as session:
        if alter_seq is not None:
            await session.execute(
                update(AuditEvent)
                .where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == alter_seq)
                .values(actor="someone-else")
            )
        if delete_log:
            await session.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant.id))
        if delete_head:
            await session.execute(delete(AuditChain).where(AuditChain.chain == str(tenant.id)))
        await session.commit()


async def test_a_deleted_chain_head_is_tampering(
    backend: Backend, factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    # The attack: alter an event, then delete the head so nothing says where the chain should end.
    await _tamper(owner_db, tenant, alter_seq=2, delete_head=True)
    async with owner_db.dangerously_unscoped_session() as session:
        assert str(tenant.id) in await session.run_sync(chains), "a tenant without a head is still checked"
    report = (await client.get(VERIFY, headers=headers)).json()
    assert report["valid"] is False
    assert report["first_bad_seq"] == 2
    # Only the head gone (the events intact): still tampering.
    async with owner_db.dangerously_unscoped_session() as session:
        rows = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq > 1)
            )
        ).all()
        await session.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq > 1))
        await session.commit()
        await set_tenant_context(session, system_tenant_context(tenant.id))
        only_first = await session.run_sync(verify_chain, str(tenant.id))
    assert rows
    assert (only_first.valid, only_first.problem) == (False, "the chain's head record is missing")
    assert (await client.get(VERIFY, headers=headers)).json()[
        "problem"
    ] == "the chain's head record is missing"
    cli = await _cli_verify(backend, tenant)
    assert cli.exit_code == 1, cli.output
    assert f"TAMPERED {tenant.slug}: the chain's head record is missing" in cli.output
    # Writing on would start the chain over and bury the damage: the tenant's changes are refused instead.
    refused = await client.post("/api/v1/sites", json={"code": "AFTER", "name": "After"}, headers=headers)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/problems/audit-log-broken")
    async with owner_db.dangerously_unscoped_session() as session:
        assert await session.get(AuditChain, str(tenant.id)) is None
        assert (
            await session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.tenant_id == tenant.id)
            )
        ) == 1


async def test_a_tenant_whose_whole_log_is_gone_is_tampering(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    await _tamper(owner_db, tenant, delete_log=True, delete_head=True)
    report = (await client.get(VERIFY, headers=headers)).json()
    assert (report["valid"], report["events"]) == (False, 0)
    assert "missing" in report["problem"]


async def test_cutting_the_tail_and_moving_the_head_back_is_detected(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    async with owner_db.dangerously_unscoped_session() as session:
        head = await session.get(AuditChain, str(tenant.id))
        assert head is not None
        last = head.seq
        before_last = await session.scalar(
            select(AuditEvent.hash).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == last - 1)
        )
        await session.execute(
            delete(AuditEvent).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == last)
        )
        # Everything an attacker can compute without the key: the head now matches the new last event.
        head.seq, head.head_hash, head.events = last - 1, str(before_last), head.events - 1
        await session.commit()
    report = (await client.get(VERIFY, headers=headers)).json()
    assert (report["valid"], report["problem"]) == (False, "the chain's head record was altered")


def _plain_sha256(chain: str, seq: int, prev: str, row: AuditEvent) -> str:
    """The unkeyed hash the chain used before 0006: anyone with database access can compute it."""
    payload: dict[str, Any] = {
        "chain": chain,
        "seq": seq,
        "prev_hash": prev,
        "occurred_at": row.occurred_at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "changes": row.changes,
        "request_id": row.request_id,
        "internal": row.internal,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def test_rewriting_an_event_and_rehashing_the_chain_without_the_key_is_detected(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    chain = str(tenant.id)
    async with owner_db.dangerously_unscoped_session() as session:
        rows = list(
            (
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.tenant_id == tenant.id).order_by(AuditEvent.seq)
                )
            ).all()
        )
        prev = GENESIS
        for row in rows:
            if row.seq == 2:
                row.actor = "user:someone-else"
            row.prev_hash = prev
            row.hash = _plain_sha256(chain, row.seq, prev, row)
            prev = row.hash
        head = await session.get(AuditChain, chain)
        assert head is not None
        head.head_hash = prev
        await session.commit()
    report = (await client.get(VERIFY, headers=headers)).json()
    assert report == {
        "chain": chain,
        "events": 1,
        "valid": False,
        "first_bad_seq": 1,
        "problem": "event 1 was altered",
    }, "event 1 was re-hashed without the key too"


async def _internal_event(owner_db: Database, tenant: Tenant, user_id: uuid.UUID) -> None:
    """A staff-only event, recorded the way a service records one (``record(..., internal=True)``)."""
    async with owner_db.session() as session:
        await set_tenant_context(session, system_tenant_context(tenant.id))
        user = await session.scalar(select(User).where(User.id == user_id))
        assert user is not None
        record(session, user, "reviewed", {"note": [None, "Escalation reviewed by the MSP"]}, internal=True)
        await session.commit()


async def test_internal_events_are_for_msp_staff_only(
    factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    person = await factory.user(tenant)
    await _internal_event(owner_db, tenant, person.id)
    admin = await factory.staff(role="msp_admin", tier=None)
    as_msp = await factory.headers(admin, tenant=tenant)

    staff_view = (await client.get(EVENTS, headers=as_msp, params={"object_id": str(person.id)})).json()
    internal = [e for e in staff_view["items"] if e["internal"]]
    assert [e["action"] for e in internal] == ["user.reviewed"]
    assert internal[0]["changes"] == {"note": [None, "Escalation reviewed by the MSP"]}

    tenant_view = await client.get(EVENTS, headers=headers, params={"object_id": str(person.id)})
    assert tenant_view.status_code == 200
    assert [e["action"] for e in tenant_view.json()["items"]] == ["user.created"]
    assert "Escalation reviewed" not in tenant_view.text
    for params in ({"action": "user.reviewed"}, {"limit": 200}):
        assert "user.reviewed" not in (await client.get(EVENTS, headers=headers, params=params)).text

    # The chain covers internal events: flipping the flag is tampering.
    for who in (headers, as_msp):
        assert (await client.get(VERIFY, headers=who)).json()["valid"] is True
    async with owner_db.dangerously_unscoped_session() as session:
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.tenant_id == tenant.id, AuditEvent.action == "user.reviewed")
            .values(internal=False)
        )
        await session.commit()
    report = (await client.get(VERIFY, headers=headers)).json()
    assert (report["valid"], report["problem"]) == (False, f"event {internal[0]['seq']} was altered")


async def test_an_internal_work_note_is_an_internal_audit_event(desk: Any, client: AsyncClient) -> None:
    """Rows whose ``visibility`` is internal (work notes) become staff-only events without any service code."""
    incident = await desk.raise_incident()
    note = await client.post(
        f"/api/v1/incidents/{incident['id']}/comments",
        json={"body": "Vendor says the fuser is end-of-life", "visibility": "internal"},
        headers=await desk.as_agent(),
    )
    assert note.status_code == 201, note.text
    tenant_view = await client.get(EVENTS, headers=await desk.as_admin(), params={"limit": 200})
    assert note.json()["id"] not in tenant_view.text
    admin = await desk.factory.staff(role="msp_admin", tier=None)
    staff_view = await client.get(
        EVENTS,
        headers=await desk.factory.headers(admin, tenant=desk.tenant),
        params={"object_id": note.json()["id"]},
    )
    assert [(e["action"], e["internal"]) for e in staff_view.json()["items"]] == [
        ("incident_comment.created", True)
    ]


async def test_an_operator_restores_a_deleted_head_and_the_restoration_is_on_record(
    backend: Backend, factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    await _tamper(owner_db, tenant, delete_head=True)
    site = {"code": "AFTER", "name": "After"}
    assert (await client.post("/api/v1/sites", json=site, headers=headers)).status_code == 503

    usage = await _cli(backend, "restore", "--reason", "examined")
    assert usage.exit_code == 2
    assert "--tenant SLUG or --platform" in usage.output
    reason = "INC-4471: head row lost in a bad restore; events checked against the nightly backup"
    restored = await _cli(backend, "restore", "--tenant", tenant.slug, "--reason", reason, "--by", "dana")
    assert restored.exit_code == 0, restored.output
    assert f"restored {tenant.slug}: head restored at event" in restored.output
    assert "found: the chain's head record is missing" in restored.output

    # Changes are recorded again, on the same chain, after the restoration.
    assert (await client.post("/api/v1/sites", json=site, headers=headers)).status_code == 201
    report = (await client.get(VERIFY, headers=headers)).json()
    assert report["valid"] is True, report
    events = (await client.get(EVENTS, params={"limit": 200}, headers=headers)).json()["items"]
    (restoration,) = [e for e in events if e["action"] == "audit_chain.restored"]
    assert restoration["actor"] == "operator:dana"
    assert restoration["changes"]["reason"] == [None, reason]
    assert restoration["changes"]["found"] == [None, "the chain's head record is missing"]
    assert [e["action"] for e in events].index("site.created") < [e["action"] for e in events].index(
        "audit_chain.restored"
    ), "newest first: the site created after the restoration"

    again = await _cli(backend, "restore", "--tenant", tenant.slug, "--reason", reason)
    assert again.exit_code == 0, again.output
    assert "nothing to restore" in again.output


async def test_a_log_deleted_whole_with_its_head_cannot_start_over(
    backend: Backend, factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    await _tamper(owner_db, tenant, delete_log=True, delete_head=True)
    # Nothing is left that says a chain existed; the next change would start a consistent chain at event 1
    # and bury the deletion. It is refused: a tenant's log starts in the transaction that creates it.
    site = {"code": "N", "name": "N"}
    refused = await client.post("/api/v1/sites", json=site, headers=headers)
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith("/problems/audit-log-broken")

    restored = await _cli(backend, "restore", "--tenant", tenant.slug, "--reason", "log lost; see INC-9")
    assert restored.exit_code == 0, restored.output
    assert "head restored at event 0" in restored.output
    assert (await client.post("/api/v1/sites", json=site, headers=headers)).status_code == 201
    events = (await client.get(EVENTS, headers=headers)).json()["items"]
    assert [(e["seq"], e["action"]) for e in events] == [(2, "site.created"), (1, "audit_chain.restored")]
    assert events[1]["changes"]["found"] == [None, "the tenant's audit log and chain head are missing"]


async def test_restoring_a_chain_whose_head_is_present_changes_nothing(
    backend: Backend, factory: Factory, client: AsyncClient, owner_db: Database
) -> None:
    tenant, headers = await _tenant_with_events(factory, client)
    await _tamper(owner_db, tenant, alter_seq=2)
    kept = await _cli(backend, "restore", "--tenant", tenant.slug, "--reason", "looked at it")
    assert kept.exit_code == 1, kept.output
    assert "nothing to restore" in kept.output
    assert "event 2 was altered; that stays on record" in kept.output
    report = (await client.get(VERIFY, headers=headers)).json()
    assert (report["valid"], report["first_bad_seq"]) == (False, 2)
    missing = await _cli(backend, "restore", "--tenant", "no-such-tenant", "--reason", "x")
    assert missing.exit_code == 1
    assert "no tenant 'no-such-tenant'" in missing.output
