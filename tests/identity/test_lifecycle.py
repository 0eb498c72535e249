"""Deactivation and reactivation (tokens stop working), invitations and accepting them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from httpx import AsyncClient
from sqlalchemy import select, update
from tests.conftest import Factory
from tests.identity.common import ACCEPT, USERS, tenant_admin

from msp_platform.db.engine import Database
from msp_platform.kit.time import utcnow
from msp_platform.models.invitation import Invitation
from msp_platform.models.oauth import RefreshToken
from msp_platform.models.tenant import Tenant

NEW_PASSWORD = "a long enough new passphrase"


async def _sign_in(client: AsyncClient, email: str, password: str, tenant: Tenant) -> Any:
    return await client.post(
        "/api/v1/auth/sign-in", json={"email": email, "password": password, "tenant": tenant.slug}
    )


async def _refresh(client: AsyncClient, refresh_token: str) -> Any:
    return await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "msp-console"},
    )


async def _invite(client: AsyncClient, headers: dict[str, str], user_id: Any, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{USERS}/{user_id}/invitations", json=body or None, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


class TestDeactivation:
    async def test_deactivation_stops_access_and_refresh_tokens(
        self, factory: Factory, client: AsyncClient, owner_db: Database
    ) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        signed_in = await _sign_in(client, person.email, person.password, tenant)
        assert signed_in.status_code == 200, signed_in.text
        tokens = signed_in.json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await client.get("/api/v1/me", headers=bearer)).status_code == 200

        response = await client.post(f"{USERS}/{person.id}/deactivate", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["active"] is False
        assert body["deactivated_at"] is not None

        # The access token is still unexpired and well signed, but the middleware re-checks the user.
        refused = await client.get("/api/v1/me", headers=bearer)
        assert refused.status_code == 401
        assert "deactivated" in refused.json()["detail"]
        async with owner_db.dangerously_unscoped_session() as session:
            rows = (
                await session.scalars(select(RefreshToken).where(RefreshToken.subject_id == person.id))
            ).all()
        assert rows
        assert all(r.revoked_at is not None for r in rows)
        assert (await _refresh(client, tokens["refresh_token"])).status_code == 400
        assert (await _sign_in(client, person.email, person.password, tenant)).status_code == 401

        again = await client.post(f"{USERS}/{person.id}/deactivate", headers=headers)
        assert again.status_code == 200
        assert again.json()["deactivated_at"] == body["deactivated_at"], "repeating it changes nothing"

        reactivated = await client.post(f"{USERS}/{person.id}/reactivate", headers=headers)
        assert reactivated.status_code == 200
        assert (reactivated.json()["active"], reactivated.json()["deactivated_at"]) == (True, None)
        assert (await client.post(f"{USERS}/{person.id}/reactivate", headers=headers)).status_code == 200
        # Back in with the password; the revoked refresh token stays revoked.
        assert (await _sign_in(client, person.email, person.password, tenant)).status_code == 200
        assert (await _refresh(client, tokens["refresh_token"])).status_code == 400

    async def test_deactivation_revokes_open_invitations(self, factory: Factory, client: AsyncClient) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        invitation = await _invite(client, headers, person.id)
        await client.post(f"{USERS}/{person.id}/deactivate", headers=headers)
        await client.post(f"{USERS}/{person.id}/reactivate", headers=headers)
        response = await client.post(ACCEPT, json={"token": invitation["token"], "password": NEW_PASSWORD})
        assert response.status_code == 400
        assert response.json()["reason"] == "revoked"

    async def test_unknown_user(self, factory: Factory, client: AsyncClient) -> None:
        _, headers = await tenant_admin(factory)
        for action in ("deactivate", "reactivate", "invitations"):
            response = await client.post(
                f"{USERS}/0190a000-0000-7000-8000-000000000000/{action}", headers=headers
            )
            assert response.status_code == 404, (action, response.text)


class TestInvitations:
    async def test_invite_accept_and_sign_in(
        self, factory: Factory, client: AsyncClient, owner_db: Database
    ) -> None:
        tenant, headers = await tenant_admin(factory)
        created = await client.post(
            USERS, json={"email": "New.Hire@x.org", "name": "New Hire"}, headers=headers
        )
        user = created.json()
        assert user["has_password"] is False
        invitation = await _invite(client, headers, user["id"])
        assert set(invitation) == {"id", "user_id", "token", "expires_at", "accept_url", "email"}
        assert invitation["email"] == "not_configured"  # no SMTP server in these tests
        assert invitation["token"].startswith("msp_inv_")
        assert tenant.id.hex in invitation["token"]
        stored = await _stored_invitation(owner_db, invitation["id"])
        assert timedelta(hours=71, minutes=59) < stored.expires_at - utcnow() <= timedelta(hours=72)
        assert datetime.fromisoformat(invitation["expires_at"]) == stored.expires_at
        assert invitation["token"] not in stored.token_hash
        assert len(stored.token_hash) == 64

        accepted = await client.post(ACCEPT, json={"token": invitation["token"], "password": NEW_PASSWORD})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"user_id": user["id"], "email": "new.hire@x.org", "tenant": tenant.slug}
        assert (await _stored_invitation(owner_db, invitation["id"])).used_at is not None
        signed_in = await _sign_in(client, "NEW.HIRE@x.org", NEW_PASSWORD, tenant)
        assert signed_in.status_code == 200, signed_in.text
        me = await client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        )
        assert me.json()["subject"] == user["id"]
        assert (await client.get(f"{USERS}/{user['id']}", headers=headers)).json()["has_password"] is True

        # Single use.
        reused = await client.post(
            ACCEPT, json={"token": invitation["token"], "password": "another passphrase!"}
        )
        assert reused.status_code == 400
        assert (reused.json()["type"], reused.json()["reason"]) == ("/problems/invitation-invalid", "used")
        assert (await _sign_in(client, "new.hire@x.org", NEW_PASSWORD, tenant)).status_code == 200

    async def test_a_new_invitation_revokes_older_ones(self, factory: Factory, client: AsyncClient) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        first = await _invite(client, headers, person.id)
        second = await _invite(client, headers, person.id, expires_in_hours=1)
        old = await client.post(ACCEPT, json={"token": first["token"], "password": NEW_PASSWORD})
        assert old.status_code == 400
        assert old.json()["reason"] == "revoked"
        assert (
            await client.post(ACCEPT, json={"token": second["token"], "password": NEW_PASSWORD})
        ).status_code == 200

    async def test_expired(self, factory: Factory, client: AsyncClient, owner_db: Database) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        invitation = await _invite(client, headers, person.id)
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(
                update(Invitation)
                .where(Invitation.id == uuid.UUID(invitation["id"]))
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        response = await client.post(ACCEPT, json={"token": invitation["token"], "password": NEW_PASSWORD})
        assert response.status_code == 400
        assert response.json()["reason"] == "expired"
        assert "expired" in response.json()["detail"]
        assert (await _sign_in(client, person.email, NEW_PASSWORD, tenant)).status_code == 401

    async def test_garbage_tokens_are_4xx_problems(self, factory: Factory, client: AsyncClient) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        real = (await _invite(client, headers, person.id))["token"]
        candidates: list[Any] = [
            "",
            "garbage",
            "msp_inv_",
            real[:-1],
            real + "x",
            real[:-4] + "AAAA",  # well-formed, unknown secret
            "msp_inv_" + "0" * 32 + real[40:],  # a tenant that does not exist
            "msp_inv_" + "z" * 32 + real[40:],
            real.replace("msp_inv_", "msp_rt_"),
            "\u00e9" * 90,
            "x" * 10_000,
        ]
        for token in candidates:
            response = await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})
            assert response.status_code == 400, (token[:40], response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["reason"] == "invalid"
        for body in (
            {},
            {"token": real},
            {"token": real, "password": NEW_PASSWORD, "tenant": "x"},
            {"token": 1},
        ):
            response = await client.post(ACCEPT, json=body)
            assert 400 <= response.status_code < 500, (body, response.text)
        bad_json = await client.post(ACCEPT, content=b"{", headers={"content-type": "application/json"})
        assert bad_json.status_code == 400
        # None of that consumed the real invitation.
        assert (await client.post(ACCEPT, json={"token": real, "password": NEW_PASSWORD})).status_code == 200

    async def test_weak_password_keeps_the_invitation(self, factory: Factory, client: AsyncClient) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        token = (await _invite(client, headers, person.id))["token"]
        for weak in ("short", " leading space here", "x" * 1025):
            response = await client.post(ACCEPT, json={"token": token, "password": weak})
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["field"] == "password"
        assert (await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})).status_code == 200

    async def test_deactivated_users_and_suspended_tenants(
        self, factory: Factory, client: AsyncClient, owner_db: Database
    ) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        await client.post(f"{USERS}/{person.id}/deactivate", headers=headers)
        refused = await client.post(f"{USERS}/{person.id}/invitations", headers=headers)
        assert refused.status_code == 409
        assert "reactivate" in refused.json()["detail"]
        await client.post(f"{USERS}/{person.id}/reactivate", headers=headers)
        token = (await _invite(client, headers, person.id))["token"]
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(update(Tenant).where(Tenant.id == tenant.id).values(status="suspended"))
            await session.commit()
        response = await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})
        assert response.status_code == 400
        assert response.json()["reason"] == "tenant_inactive"

    async def test_invitation_lifetime_bounds(self, factory: Factory, client: AsyncClient) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        for hours in (0, 721, "soon"):
            response = await client.post(
                f"{USERS}/{person.id}/invitations", json={"expires_in_hours": hours}, headers=headers
            )
            assert response.status_code == 422, response.text
        unknown = await client.post(
            f"{USERS}/{person.id}/invitations", json={"user_id": "x"}, headers=headers
        )
        assert unknown.status_code == 422

    async def test_accepting_replaces_the_password_and_ends_sessions(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        old_session = (await _sign_in(client, person.email, person.password, tenant)).json()
        token = (await _invite(client, headers, person.id))["token"]
        assert (await client.post(ACCEPT, json={"token": token, "password": NEW_PASSWORD})).status_code == 200
        assert (await _sign_in(client, person.email, person.password, tenant)).status_code == 401
        assert (await _sign_in(client, person.email, NEW_PASSWORD, tenant)).status_code == 200
        assert (await _refresh(client, old_session["refresh_token"])).status_code == 400

    async def test_concurrent_accepts_use_the_token_once(self, factory: Factory, client: AsyncClient) -> None:
        tenant, headers = await tenant_admin(factory)
        person = await factory.user(tenant)
        token = (await _invite(client, headers, person.id))["token"]
        passwords = [f"concurrent passphrase {i:02d}" for i in range(5)]
        responses = await asyncio.gather(
            *(client.post(ACCEPT, json={"token": token, "password": p}) for p in passwords)
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 400, 400, 400, 400], [r.text for r in responses]
        winner = passwords[[r.status_code for r in responses].index(200)]
        assert (await _sign_in(client, person.email, winner, tenant)).status_code == 200


async def _stored_invitation(owner_db: Database, invitation_id: str) -> Invitation:
    async with owner_db.dangerously_unscoped_session() as session:
        found = await session.scalar(select(Invitation).where(Invitation.id == uuid.UUID(invitation_id)))
    assert found is not None
    return found
