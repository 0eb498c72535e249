"""OAuth2: the token endpoint's grants and every way an access token can be refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from httpx import AsyncClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from litestar import Litestar
from tests.conftest import BASE_URL, TEST_PASSWORD, Factory

from msp_platform.state import services_of

API = "/api/v1/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signing_keys(app: Litestar) -> KeySet:
    services = services_of(app)
    async with services.db.session() as session:
        ring = await services.keys.ring(session)
    return ring.signing


async def mint(app: Litestar, claims: dict[str, Any], *, header: dict[str, Any] | None = None) -> str:
    """A token signed with the server's own active key, with whatever claims a test needs."""
    keys = await signing_keys(app)
    hdr = {"alg": "ES256", "typ": "at+jwt", **(header or {})}
    return jwt.encode(hdr, claims, keys)


def valid_claims(
    sub: str, client_id: str, tid: str | None, kind: str = "client", **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": BASE_URL,
        "aud": "msp-platform-api",
        "sub": sub,
        "client_id": client_id,
        "iat": now,
        "exp": now + 600,
        "jti": f"test-{now}-{sub}",
        "scope": "clients:read",
        "kind": kind,
    }
    if tid:
        claims["tid"] = tid
    claims.update(extra)
    return claims


def assert_401(response: Any, fragment: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer realm="msp-platform"')
    body = response.json()
    assert body["type"] == "/problems/unauthorized"
    assert fragment in body["detail"], body["detail"]


class TestClientCredentials:
    async def test_token_is_an_rfc9068_jwt_verifiable_with_the_published_jwks(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant, scopes="clients:read users:read")
        response = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert "refresh_token" not in body or body["refresh_token"] is None
        assert set(body["scope"].split()) == {"clients:read", "users:read"}
        jwks = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
        token = jwt.decode(body["access_token"], jwks, algorithms=["ES256"])
        assert token.header["typ"] == "at+jwt"
        assert token.header["kid"] in {k.kid for k in jwks.keys}
        claims = token.claims
        assert claims["iss"] == BASE_URL
        assert claims["aud"] == "msp-platform-api"
        assert claims["sub"] == client_id
        assert claims["client_id"] == client_id
        assert claims["tid"] == str(tenant.id)
        assert claims["exp"] - claims["iat"] == body["expires_in"] == 900

    async def test_client_secret_post_and_narrower_scope(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant, scopes="clients:read users:read")
        response = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": "users:read",
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "users:read"

    @pytest.mark.parametrize(
        ("form", "use_auth", "status", "error"),
        [
            ({"grant_type": "client_credentials"}, "wrong-secret", 401, "invalid_client"),
            ({"grant_type": "client_credentials"}, "unknown-client", 401, "invalid_client"),
            ({"grant_type": "client_credentials", "scope": "staff:write"}, "ok", 400, "invalid_scope"),
            ({"grant_type": "client_credentials", "scope": "no-such:scope"}, "ok", 400, "invalid_scope"),
            ({"grant_type": "authorization_code", "code": "x"}, "ok", 400, "unsupported_grant_type"),
            ({"grant_type": "password", "username": "a", "password": "b"}, "ok", 401, "invalid_client"),
        ],
    )
    async def test_token_endpoint_errors_are_problems_with_oauth_fields(
        self,
        factory: Factory,
        client: AsyncClient,
        form: dict[str, str],
        use_auth: str,
        status: int,
        error: str,
    ) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant, scopes="clients:read")
        auth = {
            "ok": (client_id, secret),
            "wrong-secret": (client_id, "nope"),
            "unknown-client": ("cli_nobody", "x"),
        }
        response = await client.post("/oauth/token", data=form, auth=auth[use_auth])
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["error"] == error
        assert body["type"] == "/problems/oauth-" + error.replace("_", "-")
        assert body["status"] == status

    async def test_json_body_and_repeated_parameters_are_refused(self, client: AsyncClient) -> None:
        as_json = await client.post("/oauth/token", json={"grant_type": "client_credentials"})
        assert as_json.status_code == 400
        assert "x-www-form-urlencoded" in as_json.json()["detail"]
        repeated = await client.post(
            "/oauth/token",
            content=b"grant_type=client_credentials&grant_type=password",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert repeated.status_code == 400
        assert "repeated" in repeated.json()["detail"]

    async def test_revoked_client_cannot_get_or_use_tokens(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        client_id, secret = await factory.integration_client(tenant)
        token = await factory.client_token(client_id, secret)
        assert (await client.get(API, headers=bearer(token))).status_code == 200
        revoked = await client.delete(f"/api/v1/clients/{client_id}", headers=await factory.headers(admin))
        assert revoked.status_code == 204, revoked.text
        assert_401(await client.get(API, headers=bearer(token)), "revoked")
        again = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert again.status_code == 401


class TestRefusedAccessTokens:
    async def _client(self, factory: Factory) -> tuple[str, str, str]:
        tenant = await factory.tenant()
        client_id, _ = await factory.integration_client(tenant)
        return client_id, str(tenant.id), client_id

    async def test_missing_token(self, client: AsyncClient) -> None:
        response = await client.get(API)
        assert_401(response, "requires an access token")
        assert response.headers["www-authenticate"] == 'Bearer realm="msp-platform"'

    async def test_not_a_bearer_header(self, client: AsyncClient) -> None:
        assert_401(await client.get(API, headers={"Authorization": "Basic abc"}), "Bearer")

    async def test_garbage(self, client: AsyncClient) -> None:
        assert_401(await client.get(API, headers=bearer("not.a.jwt")), "malformed")

    async def test_expired(self, app: Litestar, factory: Factory, client: AsyncClient) -> None:
        sub, tid, cid = await self._client(factory)
        claims = valid_claims(sub, cid, tid, iat=int(time.time()) - 4000, exp=int(time.time()) - 3000)
        response = await client.get(API, headers=bearer(await mint(app, claims)))
        assert_401(response, "expired")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    async def test_tampered_payload(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant, scopes="clients:read")
        token = await factory.client_token(client_id, secret)
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["scope"] = "clients:read clients:write users:write"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        assert_401(await client.get(API, headers=bearer(f"{header}.{forged}.{signature}")), "signature")

    async def test_wrong_audience(self, app: Litestar, factory: Factory, client: AsyncClient) -> None:
        sub, tid, cid = await self._client(factory)
        token = await mint(app, valid_claims(sub, cid, tid, aud="another-api"))
        assert_401(await client.get(API, headers=bearer(token)), "audience")

    async def test_wrong_issuer(self, app: Litestar, factory: Factory, client: AsyncClient) -> None:
        sub, tid, cid = await self._client(factory)
        token = await mint(app, valid_claims(sub, cid, tid, iss="https://evil.example"))
        assert_401(await client.get(API, headers=bearer(token)), "issuer")

    async def test_not_an_access_token_type(
        self, app: Litestar, factory: Factory, client: AsyncClient
    ) -> None:
        sub, tid, cid = await self._client(factory)
        token = await mint(app, valid_claims(sub, cid, tid), header={"typ": "JWT"})
        assert_401(await client.get(API, headers=bearer(token)), "typ")

    async def test_signed_by_an_unknown_key(self, factory: Factory, client: AsyncClient) -> None:
        sub, tid, cid = await self._client(factory)
        rogue = ECKey.generate_key("P-256", private=True)
        token = jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": "rogue"}, valid_claims(sub, cid, tid), rogue
        )
        assert_401(await client.get(API, headers=bearer(token)), "unknown key")

    async def test_alg_none(self, factory: Factory, client: AsyncClient) -> None:
        sub, tid, cid = await self._client(factory)

        def b64(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        token = f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64(valid_claims(sub, cid, tid))}."
        assert_401(await client.get(API, headers=bearer(token)), "algorithm")

    async def test_revoked_access_token(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant)
        token = await factory.client_token(client_id, secret)
        assert (await client.get(API, headers=bearer(token))).status_code == 200
        revoke = await client.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret))
        assert revoke.status_code == 200, revoke.text
        assert_401(await client.get(API, headers=bearer(token)), "revoked")

    async def test_missing_scope_is_403_with_insufficient_scope(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant, scopes="users:read")
        token = await factory.client_token(client_id, secret)
        response = await client.get("/api/v1/clients", headers=bearer(token))
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["type"] == "/problems/insufficient-scope"
        assert body["required_scopes"] == ["clients:read"]
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


class TestPeople:
    async def test_staff_and_tenant_users_sign_in(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        user = await factory.user(tenant, role="tenant_admin")
        staff = await factory.staff(role="msp_admin")
        me = (await client.get(API, headers=await factory.headers(user))).json()
        assert (me["kind"], me["role"], me["tenant_id"]) == ("user", "tenant_admin", str(tenant.id))
        assert "clients:write" in me["scopes"]
        assert "staff:write" not in me["scopes"]
        me = (await client.get(API, headers=await factory.headers(staff))).json()
        assert (me["kind"], me["role"], me["tenant_id"]) == ("staff", "msp_admin", None)

    @pytest.mark.parametrize(
        "case", ["wrong-password", "no-tenant", "other-tenant", "deactivated", "unknown"]
    )
    async def test_failed_sign_in_is_one_indistinct_401(
        self, factory: Factory, client: AsyncClient, case: str
    ) -> None:
        tenant = await factory.tenant()
        other = await factory.tenant()
        user = await factory.user(tenant, active=case != "deactivated")
        body = {"email": user.email, "password": TEST_PASSWORD, "tenant": tenant.slug}
        if case == "wrong-password":
            body["password"] = "not the password at all"
        elif case == "no-tenant":
            del body["tenant"]
        elif case == "other-tenant":
            body["tenant"] = other.slug
        elif case == "unknown":
            body["email"] = "nobody@nowhere.example"
        response = await client.post("/api/v1/auth/sign-in", json=body)
        assert response.status_code == 401, response.text
        assert response.json()["type"] == "/problems/invalid-credentials"
        assert (
            response.json()["detail"]
            == "The email, password or tenant is wrong, or the account is deactivated."
        )

    async def test_refresh_rotates_and_reuse_revokes_the_family(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        user = await factory.user(tenant)
        first = (
            await client.post(
                "/api/v1/auth/sign-in",
                json={"email": user.email, "password": TEST_PASSWORD, "tenant": tenant.slug},
            )
        ).json()
        refresh = {"grant_type": "refresh_token", "client_id": "msp-console"}
        second = await client.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refresh_token"] != first["refresh_token"]
        assert (await client.get(API, headers=bearer(rotated["access_token"]))).status_code == 200
        # The first refresh token was rotated: presenting it again is a replay.
        replay = await client.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        # ... and the replay killed the family, so the legitimate newer token is dead too.
        after = await client.post("/oauth/token", data={**refresh, "refresh_token": rotated["refresh_token"]})
        assert after.status_code == 400
        assert after.json()["error"] == "invalid_grant"

    async def test_deactivated_user_is_refused_on_the_next_request(
        self, factory: Factory, client: AsyncClient, owner_db: Any
    ) -> None:
        from sqlalchemy import update

        from msp_platform.models.user import User

        tenant = await factory.tenant()
        user = await factory.user(tenant)
        headers = await factory.headers(user)
        assert (await client.get(API, headers=headers)).status_code == 200
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(update(User).where(User.id == user.id).values(active=False))
            await session.commit()
        assert_401(await client.get(API, headers=headers), "deactivated")

    async def test_suspended_tenant_closes_access(
        self, factory: Factory, client: AsyncClient, owner_db: Any
    ) -> None:
        from sqlalchemy import update

        from msp_platform.models.tenant import Tenant

        tenant = await factory.tenant()
        user = await factory.user(tenant)
        headers = await factory.headers(user)
        async with owner_db.dangerously_unscoped_session() as session:
            await session.execute(update(Tenant).where(Tenant.id == tenant.id).values(status="suspended"))
            await session.commit()
        response = await client.get(API, headers=headers)
        assert response.status_code == 403
        assert response.json()["type"] == "/problems/tenant-inactive"


class TestTenantSelection:
    async def test_staff_select_only_granted_tenants(self, factory: Factory, client: AsyncClient) -> None:
        parent = await factory.tenant()
        child = await factory.tenant(parent=parent)
        stranger = await factory.tenant()
        agent = await factory.staff(grants=[parent])
        headers = await factory.headers(agent)
        me = (await client.get(API, headers=headers)).json()
        assert {str(parent.id), str(child.id)} <= set(me["readable_tenant_ids"])
        assert str(stranger.id) not in me["readable_tenant_ids"]
        assert me["acting_tenant_id"] is None
        acting = await client.get(API, headers={**headers, "MSP-Tenant": child.slug})
        assert acting.json()["acting_tenant_id"] == str(child.id)
        refused = await client.get(API, headers={**headers, "MSP-Tenant": str(stranger.id)})
        assert refused.status_code == 404
        assert refused.json()["type"] == "/problems/not-found"
        unknown = await client.get(API, headers={**headers, "MSP-Tenant": "no-such-tenant"})
        assert unknown.status_code == 404
        assert refused.json()["title"] == unknown.json()["title"]

    async def test_admin_may_act_on_any_tenant(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.staff(role="msp_admin", tier=None)
        response = await client.get(API, headers=await factory.headers(admin, tenant=tenant))
        assert response.json()["acting_tenant_id"] == str(tenant.id)

    async def test_tenant_user_cannot_name_another_tenant(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        other = await factory.tenant()
        user = await factory.user(tenant)
        own = await client.get(API, headers=await factory.headers(user, tenant=tenant))
        assert own.status_code == 200
        response = await client.get(API, headers=await factory.headers(user, tenant=other))
        assert response.status_code == 404


class TestIntrospectionAndDiscovery:
    async def test_introspection(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant, scopes="clients:read")
        other_id, other_secret = await factory.integration_client(tenant)
        token = await factory.client_token(client_id, secret)
        own = (await client.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret))).json()
        assert own["active"] is True
        assert (own["client_id"], own["scope"], own["tid"]) == (client_id, "clients:read", str(tenant.id))
        foreign = await client.post("/oauth/introspect", data={"token": token}, auth=(other_id, other_secret))
        assert foreign.json().get("active") is not True
        await client.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret))
        after = (
            await client.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret))
        ).json()
        assert after == {"active": False}

    async def test_metadata(self, client: AsyncClient) -> None:
        meta = (await client.get("/.well-known/oauth-authorization-server")).json()
        assert meta["issuer"] == BASE_URL
        assert meta["token_endpoint"] == f"{BASE_URL}/oauth/token"
        assert meta["jwks_uri"] == f"{BASE_URL}/.well-known/jwks.json"
        assert {"client_credentials", "refresh_token", "password"} == set(meta["grant_types_supported"])
        assert "incidents:write" in meta["scopes_supported"]

    async def test_key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_kid(
        self, app: Litestar, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant)
        old = await factory.client_token(client_id, secret)
        old_kid = jwt.decode(
            old, KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
        ).header["kid"]
        services = services_of(app)
        async with services.db.dangerously_unscoped_session() as session:
            new_kid = await services.keys.rotate(session)
            await session.commit()
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert {old_kid, new_kid} <= {k["kid"] for k in jwks["keys"]}
        assert all("d" not in k for k in jwks["keys"]), "private key material published"
        assert (await client.get(API, headers=bearer(old))).status_code == 200
        new = await factory.client_token(client_id, secret)
        assert jwt.decode(new, KeySet.import_key_set(jwks)).header["kid"] == new_kid
        assert (await client.get(API, headers=bearer(new))).status_code == 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Protected headers an anonymous caller can send: every member is the caller's JSON, of any type.
CRAFTED_HEADERS = {
    "typ-number": b'{"alg":"ES256","typ":1}',
    "typ-null": b'{"alg":"ES256","typ":null}',
    "typ-list": b'{"alg":"ES256","typ":["at+jwt"]}',
    "kid-list": b'{"alg":"ES256","typ":"at+jwt","kid":["a"]}',
    "kid-object": b'{"alg":"ES256","typ":"at+jwt","kid":{"a":1}}',
    "kid-number": b'{"alg":"ES256","typ":"at+jwt","kid":7}',
    "alg-list": b'{"alg":["ES256"],"typ":"at+jwt","kid":"x"}',
    "alg-object": b'{"alg":{"a":1},"typ":"at+jwt"}',
    "header-array": b'["ES256"]',
    "header-string": b'"at+jwt"',
    "garbage-json": b'{"alg":"ES256",',
    "not-utf8": b'{"alg":"\xff\xfe"}',
}


class TestCraftedInput:
    """What an anonymous caller can send must never reach a 500."""

    @pytest.mark.parametrize("case", sorted(CRAFTED_HEADERS))
    async def test_crafted_jwt_headers_are_401_invalid_token(self, client: AsyncClient, case: str) -> None:
        token = f"{_b64(CRAFTED_HEADERS[case])}.{_b64(b'{}')}.AAAA"
        response = await client.get(API, headers=bearer(token))
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    @pytest.mark.parametrize("case", ["typ-number", "kid-list", "kid-object", "alg-list", "garbage-json"])
    async def test_crafted_jwt_headers_are_inactive_on_introspection_and_revocation(
        self, factory: Factory, client: AsyncClient, case: str
    ) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant)
        token = f"{_b64(CRAFTED_HEADERS[case])}.{_b64(b'{}')}.AAAA"
        introspected = await client.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret))
        assert introspected.status_code == 200, introspected.text
        assert introspected.json() == {"active": False}
        revoked = await client.post("/oauth/revoke", data={"token": token, "client_id": "msp-console"})
        assert revoked.status_code == 200, revoked.text

    @pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
    async def test_non_utf8_basic_credentials_are_invalid_client(
        self, client: AsyncClient, path: str
    ) -> None:
        credentials = base64.b64encode(b"\xff\xfe:\xff").decode()
        response = await client.post(
            path,
            data={"grant_type": "client_credentials", "token": "x"},
            headers={"Authorization": f"Basic {credentials}"},
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert (body["error"], body["type"], body["status"]) == (
            "invalid_client",
            "/problems/oauth-invalid-client",
            401,
        )
        assert response.headers["www-authenticate"].startswith("Basic")

    async def test_percent_encoded_nul_in_a_basic_client_id_is_invalid_client(
        self, client: AsyncClient
    ) -> None:
        credentials = base64.b64encode(b"cli%00x:secret").decode()
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {credentials}"},
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"

    async def test_invalid_client_is_401_with_client_secret_post_too(
        self, factory: Factory, client: AsyncClient
    ) -> None:
        tenant = await factory.tenant()
        client_id, secret = await factory.integration_client(tenant)
        forms = [
            {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "wrong"},
            # A grant this client may not authenticate for: Authlib alone answers 400 here.
            {"grant_type": "password", "username": "a", "password": "b", "client_id": client_id},
            {"grant_type": "password", "username": "a", "password": "b", "client_id": "\u00ff\u00fe"},
        ]
        for form in forms:
            response = await client.post("/oauth/token", data={"client_secret": secret, **form})
            assert response.status_code == 401, response.text
            assert response.json()["type"] == "/problems/oauth-invalid-client"
            assert response.json()["status"] == 401
            assert response.headers["www-authenticate"].startswith("Basic")
