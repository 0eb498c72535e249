"""The API contract every route shares: authentication by default, problem+json errors, request ids."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from litestar import get
from tests.conftest import Factory, base_settings, serving

from msp_platform.app import create_app

# Routes anyone may call. Every other operation in the OpenAPI document must refuse an anonymous caller.
PUBLIC_OPERATIONS = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/problems"),
    ("GET", "/problems/{slug}"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/introspect"),
    ("POST", "/oauth/revoke"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("POST", "/api/v1/auth/sign-in"),
    ("POST", "/api/v1/auth/accept-invitation"),
    ("GET", "/api/v1/oncall/feeds/{token}/calendar.ics"),
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-7000-8000-000000000000", path)


async def test_every_operation_refuses_anonymous_callers(client: AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    operations = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert operations >= PUBLIC_OPERATIONS
    protected = sorted(operations - PUBLIC_OPERATIONS)
    assert len(protected) >= 10
    for method, path in protected:
        response = await client.request(
            method, _concrete(path), json={} if method in {"POST", "PATCH", "PUT"} else None
        )
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_every_operation_documents_its_problem_responses(client: AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            if (method.upper(), path) not in PUBLIC_OPERATIONS:
                assert {"401", "403", "429"} <= set(responses), (method, path)
                assert "application/problem+json" in responses["401"]["content"]
            parameters = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
            if any(where == "query" for where, _ in parameters):
                # A malformed filter, limit or cursor is a 422 problem.
                assert "422" in responses, (method, path)
            if ("header", "If-Match") in parameters:
                assert "412" in responses, (method, path)
    sign_in = schema["paths"]["/api/v1/auth/sign-in"]["post"]["responses"]
    assert {"401", "429"} <= set(sign_in)
    assert "application/problem+json" in sign_in["401"]["content"]
    assert "429" in schema["paths"]["/api/v1/auth/accept-invitation"]["post"]["responses"]


# Public POSTs that do not honour Idempotency-Key (OAuth and sign-in answer fresh tokens every time).
NON_IDEMPOTENT_POSTS = {
    ("POST", "/oauth/token"),
    ("POST", "/oauth/introspect"),
    ("POST", "/oauth/revoke"),
    ("POST", "/api/v1/auth/sign-in"),
    ("POST", "/api/v1/auth/accept-invitation"),
}


async def test_operations_declare_the_tenant_and_idempotency_headers(client: AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    checked = {"tenant": 0, "idempotency": 0}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            key = (method.upper(), path)
            headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
            if key in PUBLIC_OPERATIONS:
                assert "MSP-Tenant" not in headers, key
            elif path.startswith("/api/v1/"):
                assert "MSP-Tenant" in headers, key
                assert headers["MSP-Tenant"]["required"] is False
                checked["tenant"] += 1
            if method == "post" and key not in NON_IDEMPOTENT_POSTS:
                assert "Idempotency-Key" in headers, key
                assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
                checked["idempotency"] += 1
            elif method != "post" or key in NON_IDEMPOTENT_POSTS:
                assert "Idempotency-Key" not in headers, key
    assert checked["tenant"] >= 50
    assert checked["idempotency"] >= 20


async def test_the_docs_uis_are_served(client: AsyncClient) -> None:
    for path in ("/schema/scalar", "/schema/swagger"):
        response = await client.get(path)
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]


@pytest.mark.parametrize(
    "path", ["/schema/redoc", "/schema/nonexistent", "/schema/openapi.yml", "/schema/a/b", "/schema/x.json"]
)
async def test_unknown_schema_paths_are_problem_404s(client: AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/not-found"


class TestProblems:
    async def test_unknown_path(self, client: AsyncClient) -> None:
        response = await client.get("/no/such/thing")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body == {
            "type": "/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "No resource at this path.",
            "instance": "/no/such/thing",
            "request_id": response.headers["x-request-id"],
        }

    async def test_head_healthz(self, client: AsyncClient) -> None:
        response = await client.head("/healthz")
        assert response.status_code == 200
        assert response.content == b""

    async def test_options_without_credentials_is_not_a_401(self, client: AsyncClient) -> None:
        response = await client.options("/api/v1/me")
        assert response.status_code == 204, response.text
        assert "GET" in response.headers["allow"]
        assert response.content == b""

    async def test_method_not_allowed(self, client: AsyncClient) -> None:
        response = await client.delete("/healthz")
        assert response.status_code == 405
        assert "GET" in response.headers["allow"]
        assert response.json()["type"] == "/problems/method-not-allowed"

    async def test_problem_types_are_documented(self, client: AsyncClient) -> None:
        catalog = (await client.get("/problems")).json()
        slugs = {entry["type"] for entry in catalog}
        assert {"/problems/not-found", "/problems/validation-error", "/problems/unauthorized"} <= slugs
        one = await client.get("/problems/validation-error")
        assert one.json()["status"] == 422
        assert (await client.get("/problems/nope")).status_code == 404

    async def test_validation_errors_name_the_fields(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        headers = await factory.headers(admin)
        wrong_type = await client.post("/api/v1/clients", json={"name": 42}, headers=headers)
        assert wrong_type.status_code == 422, wrong_type.text
        body = wrong_type.json()
        assert body["type"] == "/problems/validation-error"
        assert any("name" in e["field"] or "name" in e["message"] for e in body["errors"]), body

    async def test_unknown_fields_are_refused(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        response = await client.post(
            "/api/v1/clients",
            json={"name": "x", "tenant_id": "00000000-0000-7000-8000-000000000000"},
            headers=await factory.headers(admin),
        )
        assert response.status_code == 422
        assert "tenant_id" in response.text

    async def test_malformed_json(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        response = await client.post(
            "/api/v1/clients",
            content=b'{"name": ',
            headers={**await factory.headers(admin), "content-type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "/problems/bad-request"

    async def test_oversize_body(self, factory: Factory, client: AsyncClient) -> None:
        tenant = await factory.tenant()
        admin = await factory.user(tenant, role="tenant_admin")
        response = await client.post(
            "/api/v1/clients",
            content=b'{"name": "' + b"x" * 2_000_000 + b'"}',
            headers={**await factory.headers(admin), "content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["type"] == "/problems/payload-too-large"

    async def test_request_ids(self, client: AsyncClient) -> None:
        generated = await client.get("/healthz")
        assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
        echoed = await client.get("/healthz", headers={"X-Request-ID": "gateway-trace-0001"})
        assert echoed.headers["x-request-id"] == "gateway-trace-0001"
        refused = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert refused.headers["x-request-id"] != "bad id with spaces"


@pytest.fixture
async def crashing_client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    settings = base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    from msp_platform.db import migrate

    await migrate.upgrade(settings)
    app = create_app(settings)

    @get("/boom", opt={"public": True})
    async def boom() -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    app.register(boom)
    async with serving(app) as http:
        yield http


async def test_unexpected_errors_are_opaque_500_problems(crashing_client: AsyncClient) -> None:
    response = await crashing_client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "/problems/internal-error"
    assert "secret internal detail" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


async def test_readiness_fails_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    settings = base_settings(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", broker_url="redis://127.0.0.1:1/0"
    )
    from msp_platform.db import migrate

    await migrate.upgrade(settings)
    async with serving(create_app(settings)) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("failed")


async def test_readiness_fails_when_the_schema_is_behind(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    from msp_platform.db import migrate

    await migrate.upgrade(settings)
    app = create_app(settings)
    async with serving(app) as http:
        assert (await http.get("/readyz")).status_code == 200
        # As if the code had been deployed before its migration ran.
        from sqlalchemy import text

        from msp_platform.state import services_of

        async with services_of(app).db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0000_previous'"))
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert "msp db upgrade" in response.json()["checks"]["database"]


async def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    from tests.conftest import Factory

    from msp_platform.db import migrate
    from msp_platform.db.engine import Database

    settings = base_settings(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'rl.db'}", rate_limit_per_minute=5
    )
    await migrate.upgrade(settings)
    db = Database.create(settings)
    try:
        async with serving(create_app(settings)) as http:
            factory = Factory(db, http)
            tenant = await factory.tenant()
            one, two = await factory.user(tenant), await factory.user(tenant)
            headers = await factory.headers(one)
            statuses = [(await http.get("/api/v1/me", headers=headers)).status_code for _ in range(5)]
            assert statuses == [200] * 5
            limited = await http.get("/api/v1/me", headers=headers)
            assert limited.status_code == 429
            assert limited.headers["content-type"] == "application/problem+json"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert limited.headers["ratelimit-limit"] == "5"
            assert limited.headers["ratelimit-remaining"] == "0"
            assert 1 <= int(limited.headers["ratelimit-reset"]) <= 60
            assert limited.json()["type"] == "/problems/rate-limited"
            # The limit is per caller: someone else is not affected.
            assert (await http.get("/api/v1/me", headers=await factory.headers(two))).status_code == 200
            ok = await http.get("/api/v1/me", headers=await factory.headers(two))
            assert ok.headers["ratelimit-limit"] == "5"
    finally:
        await db.dispose()


async def test_embedded_readiness_checks_the_worker_threads_and_the_scheduler(tmp_path: Path) -> None:
    from msp_platform.db import migrate
    from msp_platform.health.endpoints import STATE_LOOPS, STATE_WORKER

    settings = base_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'e.db'}",
        embedded_worker=True,
        worker_threads=2,
    )
    await migrate.upgrade(settings)
    app = create_app(settings)
    async with serving(app) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["worker"].startswith("ok (2 threads")
        assert ready.json()["checks"]["scheduler"].startswith("ok")
        # The in-process worker threads die: jobs would wait forever, so the process is not ready.
        threads = app.state[STATE_WORKER].worker.workers
        for thread in threads:
            thread.stop()
        for thread in threads:
            await asyncio.to_thread(thread.join, 5)
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        checks = response.json()["checks"]
        assert checks["worker"].startswith("failed: 0/2 worker threads"), checks
        assert checks["scheduler"].startswith("ok")
        assert "worker" in response.json()["detail"]
        await app.state[STATE_LOOPS].stop()
        checks = (await http.get("/readyz")).json()["checks"]
        assert checks["scheduler"].startswith("failed: stopped"), checks


async def test_an_unreachable_redis_rate_limiter_fails_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis configured for the rate limits but down: requests are served (and a warning logged), not 500s."""
    import logging

    from msp_platform.kit.ratelimit import RateLimiter

    limiter = RateLimiter("redis://127.0.0.1:1/0")
    try:
        with caplog.at_level(logging.WARNING):
            verdicts = [await limiter.hit("caller", limit=2, window=60) for _ in range(5)]
    finally:
        await limiter.close()
    assert all(v.remaining == 2 for v in verdicts)
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1, "warned once, not once per request"


async def test_request_bodies_are_documented_as_refusing_unknown_fields(client: AsyncClient) -> None:
    """The API refuses unknown fields (no mass assignment of tenant_id, role or ids); the document says so,
    so generated clients and validators know it too."""
    schema = (await client.get("/schema/openapi.json")).json()
    components = schema["components"]["schemas"]
    checked = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            refs = [body.get("schema", {}).get("$ref")] + [
                alt.get("$ref") for alt in body.get("schema", {}).get("oneOf", [])
            ]
            for ref in filter(None, refs):
                name = ref.rsplit("/", 1)[-1]
                assert components[name].get("additionalProperties") is False, (method, path, name)
                checked += 1
    assert checked >= 40
    # Responses carry no such promise: a field added later must not break clients that validate.
    assert "additionalProperties" not in components["UserOut"]
