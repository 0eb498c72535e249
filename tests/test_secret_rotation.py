"""Rotating MSP_SECRET_KEY: with the old value in MSP_SECRET_KEY_PREVIOUS everything it protected still reads
(signing keys, stored idempotent responses, webhook secrets, calendar feed URLs, audit chains) and new things
are protected with the new key; without it, the service still starts and signs tokens, and what cannot be read
any more says so instead of failing with a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import InvalidToken
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy import select
from tests.conftest import base_settings, serving

from msp_platform.app import create_app
from msp_platform.config import Settings
from msp_platform.db import migrate
from msp_platform.db.engine import Database
from msp_platform.identity.service import create_staff
from msp_platform.integrations import webhooks
from msp_platform.models.oauth import SigningKey

OLD, NEW = "the-old-secret-key", "the-new-secret-key"
ADMIN = "rotation-admin@msp.example"
PASSWORD = "a long enough password 1"


def _with(settings: Settings, secret: str, previous: str | None = None) -> Settings:
    return settings.model_copy(
        update={
            "secret_key": SecretStr(secret),
            "secret_key_previous": SecretStr(previous) if previous else None,
        }
    )


async def _admin(settings: Settings) -> None:
    db = Database.create(settings)
    try:
        async with db.dangerously_unscoped_session() as session:
            await create_staff(
                session, email=ADMIN, name="Rotation Admin", role="msp_admin", tier=3, password=PASSWORD
            )
            await session.commit()
    finally:
        await db.dispose()


async def _signing_keys(settings: Settings) -> list[tuple[str, bool]]:
    db = Database.create(settings)
    try:
        async with db.dangerously_unscoped_session() as session:
            rows = (await session.scalars(select(SigningKey).order_by(SigningKey.created_at))).all()
            return [(r.kid, r.retired_at is None) for r in rows]
    finally:
        await db.dispose()


async def _sign_in(http: AsyncClient) -> dict[str, str]:
    response = await http.post("/api/v1/auth/sign-in", json={"email": ADMIN, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _verify(http: AsyncClient, headers: dict[str, str], tenant_id: str) -> dict[str, Any]:
    response = await http.get("/api/v1/audit-events/verify", headers={**headers, "MSP-Tenant": tenant_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


TENANT = {"slug": "rotation-general", "name": "Rotation General", "ticket_prefix": "RG", "timezone": "UTC"}


async def _installed_with_old_key(fresh: Settings) -> Settings:
    """A migrated installation with an MSP admin, its secret key OLD."""
    before = _with(fresh, OLD)
    await migrate.upgrade(before)
    await _admin(before)
    return before


async def _create_tenant(http: AsyncClient, headers: dict[str, str], idempotency_key: str) -> str:
    created = await http.post(
        "/api/v1/tenants", json=TENANT, headers={**headers, "Idempotency-Key": idempotency_key}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_a_rotated_secret_key_keeps_everything_readable(fresh: Settings) -> None:
    before = await _installed_with_old_key(fresh)
    async with serving(create_app(before)) as http:
        old_token = await _sign_in(http)
        tenant_id = await _create_tenant(http, old_token, "t-1")
        feed = await http.post(
            "/api/v1/me/oncall/feed-tokens", json={"expires_in_days": 30}, headers=old_token
        )
        assert feed.status_code == 201, feed.text
        feed_path = "/" + feed.json()["url"].split("/", 3)[3]
        assert (await http.get(feed_path)).status_code == 200
    keys_before = await _signing_keys(before)

    after = _with(fresh, NEW, previous=OLD)
    async with serving(create_app(after)) as http:
        # The signing key encrypted under the old secret is still read: no new key was needed.
        assert await _signing_keys(after) == keys_before
        assert (await http.get("/api/v1/me", headers=old_token)).status_code == 200
        new_token = await _sign_in(http)
        # The stored response of an idempotent POST made before the rotation still replays.
        replay = await http.post(
            "/api/v1/tenants", json=TENANT, headers={**new_token, "Idempotency-Key": "t-1"}
        )
        assert replay.status_code == 201, replay.text
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json()["id"] == tenant_id
        # A calendar subscription URL issued before still works.
        assert (await http.get(feed_path)).status_code == 200
        # Events appended after the rotation chain onto those before it, and the whole chain verifies.
        renamed = await http.patch(
            f"/api/v1/tenants/{tenant_id}", json={"name": "Rotation General Hospital"}, headers=new_token
        )
        assert renamed.status_code == 200, renamed.text
        report = await _verify(http, new_token, tenant_id)
        assert report["valid"] is True, report
        assert report["events"] >= 2

    # A webhook secret sealed under the old key opens with the old key as a previous one, not without it.
    sealed = webhooks.seal(before, webhooks.SigningSecrets(webhooks.new_secret()))
    assert webhooks.unseal(after, sealed).current.startswith("whsec_")
    with pytest.raises(InvalidToken):
        webhooks.unseal(_with(fresh, NEW), sealed)


async def test_a_secret_key_changed_without_the_old_one_still_serves(fresh: Settings, tmp_path: Path) -> None:
    before = await _installed_with_old_key(fresh)
    async with serving(create_app(before)) as http:
        old_token = await _sign_in(http)
        tenant_id = await _create_tenant(http, old_token, "t-2")
    ((old_kid, _),) = await _signing_keys(before)

    lost = _with(fresh, NEW)
    async with serving(create_app(lost)) as http:
        # The old private key cannot be read: a new active key replaces it, the old one stays published so
        # tokens it signed verify until they expire.
        keys = await _signing_keys(lost)
        assert [active for _, active in keys] == [False, True]
        assert keys[0][0] == old_kid
        assert (await http.get("/api/v1/me", headers=old_token)).status_code == 200
        new_token = await _sign_in(http)
        jwks = (await http.get("/.well-known/jwks.json")).json()
        assert {k["kid"] for k in jwks["keys"]} == {kid for kid, _ in keys}
        # What only the old key could read answers a clear problem, not a 500.
        replay = await http.post(
            "/api/v1/tenants", json=TENANT, headers={**new_token, "Idempotency-Key": "t-2"}
        )
        assert replay.status_code == 409, replay.text
        assert replay.headers["content-type"] == "application/problem+json"
        assert "MSP_SECRET_KEY_PREVIOUS" in replay.json()["detail"]
        report = await _verify(http, new_token, tenant_id)
        assert report["valid"] is False, report
        assert report["first_bad_seq"] == 1, report

    # A restart with the old key as a previous one heals the chain's verification.
    healed = _with(fresh, NEW, previous=OLD)
    async with serving(create_app(healed)) as http:
        assert (await _verify(http, await _sign_in(http), tenant_id))["valid"] is True
    assert base_settings(tmp_path).secret_keys() == (b"test-secret-key",)
