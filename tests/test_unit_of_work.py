"""The request's unit of work: a failed commit is never a 2xx, and Idempotency-Key on POST."""

from __future__ import annotations

import asyncio
import uuid
from contextvars import ContextVar
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from tests.conftest import Factory

from msp_platform.db.engine import Database
from msp_platform.models.idempotency import IdempotencyRecord

_ARMED: ContextVar[FailNextCommit | None] = ContextVar("fail_next_commit", default=None)


class FailNextCommit:
    """Make the next commit the test itself causes fail the way a database would. Only commits made in the
    test's context count (its requests run in it): a worker thread or a task started earlier, committing
    its own session meanwhile, must not take the failure meant for the request."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        self.error = error
        self.original = AsyncSession.commit
        self.fired = False
        _ARMED.set(self)

        async def commit(session: AsyncSession) -> None:
            if not self.fired and _ARMED.get() is self:
                self.fired = True
                await session.flush()  # the statements ran; only the COMMIT fails
                raise self.error
            await self.original(session)

        monkeypatch.setattr(AsyncSession, "commit", commit)


async def _clients(client: AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/clients", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


class TestFailedCommit:
    @pytest.mark.parametrize(
        ("error", "status"),
        [
            (OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly")), 503),
            (IntegrityError("COMMIT", {}, Exception("duplicate key value violates unique constraint")), 409),
            (RuntimeError("disk full"), 500),
        ],
    )
    async def test_a_failed_commit_is_an_error_and_nothing_is_stored(
        self,
        factory: Factory,
        client: AsyncClient,
        monkeypatch: pytest.MonkeyPatch,
        error: Exception,
        status: int,
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = await factory.headers(admin)
        hook = FailNextCommit(monkeypatch, error)
        response = await client.post("/api/v1/clients", json={"name": "never stored"}, headers=headers)
        assert hook.fired
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "client_secret" not in response.text
        monkeypatch.undo()
        assert await _clients(client, headers) == []

    async def test_a_handler_error_rolls_back(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = await factory.headers(admin)
        response = await client.post(
            "/api/v1/clients", json={"name": "x", "scopes": ["staff:write"]}, headers=headers
        )
        assert response.status_code == 422
        assert await _clients(client, headers) == []


class TestIdempotencyKey:
    async def test_replay_returns_the_first_response_and_creates_once(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = {**await factory.headers(admin), "Idempotency-Key": "create-client-1"}
        first = await client.post("/api/v1/clients", json={"name": "erp"}, headers=headers)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        second = await client.post("/api/v1/clients", json={"name": "erp"}, headers=headers)
        assert second.status_code == 201
        assert second.headers["idempotent-replayed"] == "true"
        assert second.json() == first.json()
        assert len(await _clients(client, headers)) == 1

    async def test_stored_bodies_are_encrypted_and_replays_still_carry_the_secret(
        self, factory: Factory, client: AsyncClient, owner_db: Database
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        key = f"secret-at-rest-{uuid.uuid4().hex}"
        headers = {**await factory.headers(admin), "Idempotency-Key": key}
        first = await client.post("/api/v1/clients", json={"name": "shown once"}, headers=headers)
        assert first.status_code == 201, first.text
        secret = first.json()["client_secret"]
        async with owner_db.dangerously_unscoped_session() as session:
            stored = await session.scalar(
                select(IdempotencyRecord.response_body).where(IdempotencyRecord.key == key)
            )
        assert stored is not None
        assert secret.encode() not in stored
        assert first.json()["client_id"].encode() not in stored
        replay = await client.post("/api/v1/clients", json={"name": "shown once"}, headers=headers)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["client_secret"] == secret

    async def test_same_key_different_body_is_refused(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = {**await factory.headers(admin), "Idempotency-Key": "k-2"}
        assert (await client.post("/api/v1/clients", json={"name": "a"}, headers=headers)).status_code == 201
        other = await client.post("/api/v1/clients", json={"name": "b"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        assert len(await _clients(client, headers)) == 1

    async def test_keys_are_scoped_per_caller(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        one, two = (
            await factory.user(tenant, role="tenant_admin"),
            await factory.user(tenant, role="tenant_admin"),
        )
        for person in (one, two):
            headers = {**await factory.headers(person), "Idempotency-Key": "shared-key"}
            response = await client.post("/api/v1/clients", json={"name": "same"}, headers=headers)
            assert response.status_code == 201
            assert "idempotent-replayed" not in response.headers
        assert len(await _clients(client, await factory.headers(one))) == 2

    async def test_a_failed_request_can_be_retried_with_its_key(
        self, factory: Factory, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = {**await factory.headers(admin), "Idempotency-Key": "retry-me"}
        FailNextCommit(monkeypatch, OperationalError("COMMIT", {}, Exception("connection reset")))
        failed = await client.post("/api/v1/clients", json={"name": "r"}, headers=headers)
        assert failed.status_code == 503
        monkeypatch.undo()
        retried = await client.post("/api/v1/clients", json={"name": "r"}, headers=headers)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers

    @pytest.mark.parametrize("key", [b"", b"has space", b"x" * 256, "n\u00f6n-ascii".encode("latin-1")])
    async def test_malformed_keys(self, factory: Factory, client: AsyncClient, key: bytes) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers: dict[str, Any] = {**await factory.headers(admin), "Idempotency-Key": key}
        response = await client.post("/api/v1/clients", json={"name": "k"}, headers=headers)
        assert response.status_code == 400, response.text
        assert "Idempotency-Key" in response.json()["detail"]

    async def test_fifty_concurrent_posts_with_one_key_create_exactly_one(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = {**await factory.headers(admin), "Idempotency-Key": "burst"}
        responses = await asyncio.gather(
            *(client.post("/api/v1/clients", json={"name": "burst"}, headers=headers) for _ in range(50))
        )
        statuses = [r.status_code for r in responses]
        assert statuses == [201] * 50, statuses
        bodies = {r.json()["client_id"] for r in responses}
        assert len(bodies) == 1
        assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
        assert len(await _clients(client, headers)) == 1
