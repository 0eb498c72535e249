"""Cross-origin access for browser consoles: off by default, on for the origins MSP_CORS_ORIGINS names."""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from tests.conftest import Backend, Factory, serving

from msp_platform.app import create_app
from msp_platform.config import SettingsError, get_settings

PORTAL = "https://portal.riverbend.example"


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, msp-tenant",
    }


async def test_cross_origin_access_is_off_by_default(client: AsyncClient) -> None:
    answer = await client.options("/api/v1/incidents", headers=preflight(PORTAL))
    assert "access-control-allow-origin" not in answer.headers
    read = await client.get("/healthz", headers={"Origin": PORTAL})
    assert "access-control-allow-origin" not in read.headers


async def test_a_named_origin_may_call_the_api_and_read_its_answers(
    backend: Backend, factory: Factory
) -> None:
    app = create_app(backend.settings.model_copy(update={"cors_origins": f"{PORTAL},http://localhost:5173"}))
    tenant = await factory.tenant()
    headers = await factory.headers(await factory.user(tenant, role="tenant_admin"))
    http: AsyncClient
    async with serving(app) as http:
        allowed = await http.options("/api/v1/incidents", headers=preflight(PORTAL))
        assert allowed.status_code in (200, 204), allowed.text
        assert allowed.headers["access-control-allow-origin"] == PORTAL
        sent = {h.strip() for h in allowed.headers["access-control-allow-headers"].lower().split(",")}
        assert {"authorization", "content-type", "idempotency-key", "msp-tenant"} <= sent
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in allowed.headers  # tokens, never cookies

        created = await http.post(
            "/api/v1/incidents",
            json={"title": "Badge printer offline"},
            headers={**headers, "Origin": PORTAL, "Idempotency-Key": "cors-1"},
        )
        assert created.status_code == 201, created.text
        assert created.headers["access-control-allow-origin"] == PORTAL
        exposed = {h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")}
        assert {"etag", "x-request-id", "retry-after", "location"} <= exposed

        # Errors too: the console must be able to read the problem+json of a refused request.
        refused = await http.get("/api/v1/incidents", headers={"Origin": "http://localhost:5173"})
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["access-control-allow-origin"] == "http://localhost:5173"

        # Any other origin (a look-alike host included) gets no permission.
        for stranger in ("https://evil.example", f"{PORTAL}.evil.example", "http://portal.riverbend.example"):
            answer = await http.options("/api/v1/incidents", headers=preflight(stranger))
            assert answer.headers.get("access-control-allow-origin") != stranger, stranger
            read = await http.get("/api/v1/incidents", headers={**headers, "Origin": stranger})
            assert "access-control-allow-origin" not in read.headers, stranger


@pytest.mark.parametrize(
    "value",
    [
        "portal.riverbend.example",  # no scheme
        "https://portal.riverbend.example/",  # trailing slash
        "https://portal.riverbend.example/console",  # a path
        f"{PORTAL},*",  # * only on its own
        "ftp://files.example",
    ],
)
def test_a_value_that_is_not_an_origin_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MSP_CORS_ORIGINS", value)
    with pytest.raises(SettingsError, match="MSP_CORS_ORIGINS: each origin is scheme://host"):
        get_settings()


def test_origins_are_read_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSP_CORS_ORIGINS", f" {PORTAL} , HTTP://LOCALHOST:5173 ")
    assert get_settings().cors_origin_list == [PORTAL, "http://localhost:5173"]
    monkeypatch.setenv("MSP_CORS_ORIGINS", "*")
    assert get_settings().cors_origin_list == ["*"]
