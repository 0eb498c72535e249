"""Pages of MSP staff reach the MSP's own webhook (MSP_STAFF_PAGE_WEBHOOK_URL), Standard Webhooks signed; a
tenant user's page never goes there; and emails tell the paged person how to acknowledge."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from litestar import Litestar
from pydantic import SecretStr
from tests.escalations.helpers import create_policy, drain, ladder, pages_of, person
from tests.integrations.support import Receiver, http_receiver, smtp_server, verify
from tests.support.desk import Desk

from msp_platform.config import Settings
from msp_platform.integrations import webhooks
from msp_platform.state import services_of


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as running:
        yield running


@pytest.fixture
def staff_hook(app: Litestar, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    settings: Settings = services_of(app).settings
    path, secret = receiver.path(), webhooks.new_secret()
    monkeypatch.setattr(settings, "staff_page_webhook_url", receiver.url(path))
    monkeypatch.setattr(settings, "staff_page_webhook_secret", SecretStr(secret))
    return path, secret


async def test_staff_pages_go_to_the_msp_webhook_signed(
    app: Litestar, desk: Desk, receiver: Receiver, staff_hook: tuple[str, str]
) -> None:
    path, secret = staff_hook
    await create_policy(
        desk,
        ladder(
            desk,
            levels=[
                {
                    "delay_minutes": 0,
                    "targets": [person(desk.agent), {"kind": "person", "user_id": str(desk.user.id)}],
                }
            ],
        ),
    )
    incident = await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    pages = {p["staff_id"] or p["user_id"]: p for p in await pages_of(desk, incident["id"])}
    (delivered,) = receiver.at(path)
    body = verify(secret, delivered.headers, delivered.body)
    assert body["type"] == "page.triggered"
    assert body["data"]["person"] == {
        "kind": "staff",
        "id": str(desk.agent.id),
        "name": body["data"]["person"]["name"],
        "email": body["data"]["person"]["email"],
    }
    assert body["data"]["tenant_id"] == str(desk.tenant.id)
    assert body["data"]["page_id"] == pages[str(desk.agent.id)]["id"]
    assert body["data"]["acknowledge_url"].endswith(
        f"/api/v1/pages/{pages[str(desk.agent.id)]['id']}/acknowledge"
    )
    assert delivered.headers["webhook-id"] == webhooks.message_id_for(
        uuid.UUID(pages[str(desk.agent.id)]["id"])
    )


async def test_a_failing_msp_webhook_is_retried_like_any_notification(
    app: Litestar, desk: Desk, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, scheduled: list[object]
) -> None:
    settings: Settings = services_of(app).settings
    path = receiver.path(503)
    monkeypatch.setattr(settings, "staff_page_webhook_url", receiver.url(path))
    monkeypatch.setattr(settings, "staff_page_webhook_secret", SecretStr(webhooks.new_secret()))
    await create_policy(desk, ladder(desk, levels=[{"delay_minutes": 0, "targets": [person(desk.agent)]}]))
    await desk.raise_incident(impact=1, urgency=1)
    await drain(app)
    assert len(receiver.at(path)) == 1
    retries = [s for s in scheduled if getattr(s, "actor_name", "") == "integrations.send_notification"]
    assert [getattr(s, "kwargs", {}).get("attempt") for s in retries] == [2]


async def test_the_page_email_says_how_to_acknowledge(
    app: Litestar, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = services_of(app).settings
    with smtp_server() as (box, port):
        monkeypatch.setattr(settings, "smtp_host", "127.0.0.1")
        monkeypatch.setattr(settings, "smtp_port", port)
        monkeypatch.setattr(settings, "smtp_starttls", False)
        await create_policy(
            desk, ladder(desk, levels=[{"delay_minutes": 0, "targets": [person(desk.agent)]}])
        )
        incident = await desk.raise_incident(impact=1, urgency=1)
        await drain(app)
        (page,) = await pages_of(desk, incident["id"])
        (mail,) = box.messages
    text = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert f"/api/v1/pages/{page['id']}/acknowledge" in text
    assert "nobody else is paged" in text
