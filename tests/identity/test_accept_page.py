"""The page an invitation link opens: served without a token of its own, locked down (its own script only,
no caching, no Referer carrying the token), and posting to the API that redeems the invitation."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from httpx import AsyncClient
from tests.conftest import Factory

from msp_platform.identity.accept_page import ACCEPT_API


async def test_the_invitation_link_opens_a_locked_down_password_page(
    client: AsyncClient, factory: Factory
) -> None:
    tenant = await factory.tenant()
    admin = await factory.user(tenant, role="tenant_admin")
    invitee = await factory.user(tenant)
    invited = await client.post(
        f"/api/v1/users/{invitee.id}/invitations", json={}, headers=await factory.headers(admin)
    )
    assert invited.status_code == 201, invited.text
    link = urlsplit(invited.json()["accept_url"])

    page = await client.get(f"{link.path}?{link.query}")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None, csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    # Every script and style on the page carries this response's nonce; nothing else would run.
    tags = re.findall(r"<(script|style)([^>]*)>", page.text)
    assert tags
    assert all(f'nonce="{nonce.group(1)}"' in attrs for _, attrs in tags)
    assert f'fetch("{ACCEPT_API}"' in page.text
    # The token is read from the address, never written into the page.
    token = invited.json()["token"]
    assert token not in page.text

    # Two loads, two nonces.
    again = await client.get(link.path)
    assert again.headers["content-security-policy"] != csp
