"""Unit level: the Standard Webhooks signature (against the spec's published vector and our independent
verifier), URL and pattern rules, the retry schedule, sealed secrets."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from tests.conftest import base_settings
from tests.integrations.support import SignatureError, free_port, verify

from msp_platform.config import Settings
from msp_platform.integrations import webhooks
from msp_platform.integrations.service import deliverable, matches, pattern_errors
from msp_platform.kit.crypto import InvalidToken
from msp_platform.kit.time import utcnow


def test_signature_matches_the_reference_vector() -> None:
    # The test vector of the Standard Webhooks reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_headers_verify_independently_and_tampering_fails() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert len(webhooks.secret_key_bytes(secret)) == 32
    body = webhooks.encode_body("incident.created", "2026-01-01T00:00:00+00:00", {"key": "INC-1"})
    headers = webhooks.signed_headers([secret], "msg_abc", body)
    assert verify(secret, headers, body)["data"] == {"key": "INC-1"}
    with pytest.raises(SignatureError):
        verify(secret, headers, body.replace(b"INC-1", b"INC-2"))
    with pytest.raises(SignatureError):
        verify(webhooks.new_secret(), headers, body)
    with pytest.raises(SignatureError):
        verify(secret, {**headers, "webhook-id": "msg_other"}, body)
    stale = webhooks.signed_headers([secret], "msg_abc", body, at=1_000_000_000)
    with pytest.raises(SignatureError):
        verify(secret, stale, body)

    # Over an httpx transport too: what the receiver gets is exactly what was signed.
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await client.post("https://receiver.example/hook", content=body, headers=headers)
    assert verify(secret, dict(seen[0].headers), seen[0].content)["type"] == "incident.created"


def test_rotation_signs_with_both_secrets_for_a_day() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    now = utcnow()
    rotated = webhooks.SigningSecrets(old).rotated(new, now)
    assert rotated.active(now) == [new, old]
    assert rotated.active(now + timedelta(hours=25)) == [new]
    body = b"{}"
    headers = webhooks.signed_headers(rotated.active(now), "msg_x", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old, headers, body)
    verify(new, headers, body)


def test_secrets_are_sealed(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    value = webhooks.SigningSecrets(webhooks.new_secret())
    sealed = webhooks.seal(settings, value)
    assert value.current not in sealed
    assert webhooks.unseal(settings, sealed) == value
    rotated = value.rotated(webhooks.new_secret())
    assert webhooks.unseal(settings, webhooks.seal(settings, rotated)) == rotated
    other = base_settings(tmp_path, secret_key="another-key")
    with pytest.raises(InvalidToken):
        webhooks.unseal(other, sealed)


def test_retry_schedule() -> None:
    delays = [webhooks.next_delay(n) for n in range(1, webhooks.MAX_ATTEMPTS + 1)]
    assert delays == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
        None,  # the 8th failure is final
    ]


@pytest.mark.parametrize(
    ("url", "env", "ok"),
    [
        ("https://hooks.example.org/x?y=1", "testing", True),
        ("http://localhost:8080/hook", "testing", True),
        ("http://127.0.0.1:9/hook", "testing", True),
        ("http://[::1]:9/hook", "testing", True),
        ("http://api.localhost/hook", "testing", True),
        ("http://hooks.example.org/x", "testing", False),
        ("http://localhost:8080/hook", "production", False),
        ("https://localhost/hook", "production", False),
        ("https://10.1.2.3/hook", "production", False),
        ("https://169.254.169.254/latest", "production", False),
        ("https://hooks.example.org/x", "production", True),
        ("ftp://hooks.example.org/x", "testing", False),
        ("https://user:pw@hooks.example.org/x", "testing", False),
        ("https:///nohost", "testing", False),
        ("hooks.example.org/x", "testing", False),
        ("https://hooks.example.org:99999/x", "testing", False),
        ("https://hooks.example.org/x#frag", "testing", False),
        ("https://hooks.example.org/" + "a" * 2000, "testing", False),
    ],
)
def test_url_rules(tmp_path: Path, url: str, env: str, ok: bool) -> None:
    settings: Settings = base_settings(tmp_path, env=env, issuer="https://msp.example", secret_key="k")
    assert (webhooks.url_problem(url, settings) is None) is ok, webhooks.url_problem(url, settings)


@pytest.mark.parametrize(
    ("patterns", "ok"),
    [
        (["incident.*"], True),
        (["incident.created", "incident.sla_*", "page.*"], True),
        (["*"], True),
        (["*.created"], True),
        ([], False),
        (["Incident.*"], False),
        (["incident..created"], False),
        (["incident.?"], False),
        (["incident.[a-z]"], False),
        (["incident.*", "incident.*"], False),
        (["incident.cre*ted"], False),
        ([""], False),
        (["x" * 81], False),
        ([f"incident.e{i}" for i in range(51)], False),
    ],
)
def test_pattern_rules(patterns: list[str], ok: bool) -> None:
    assert (not pattern_errors("event_types", patterns)) is ok


def test_matching_and_visibility() -> None:
    assert matches(["incident.*"], "incident.created")
    assert matches(["incident.sla_*"], "incident.sla_breached")
    assert not matches(["incident.sla_*"], "incident.created")
    assert not matches(["page.*"], "incident.created")
    assert matches(["*"], "page.triggered")
    assert deliverable({"visibility": "public"})
    assert deliverable({"no": "visibility"})
    assert not deliverable({"visibility": "internal"})
    assert not deliverable({"visibility": "anything-else"})
    assert json.loads(webhooks.encode_body("t", "ts", {"a": 1})) == {
        "type": "t",
        "timestamp": "ts",
        "data": {"a": 1},
    }


async def test_an_attempt_is_bounded_in_time_and_in_what_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Loud(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(500)
            self.send_header("content-length", str(1_000_000))
            self.end_headers()
            self.wfile.write(b"x" * 1_000_000)

        def log_message(self, format: str, *args: object) -> None:
            return

    loud = ThreadingHTTPServer(("127.0.0.1", 0), Loud)
    threading.Thread(target=loud.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers
    try:
        result = await webhooks.post(f"http://127.0.0.1:{loud.server_address[1]}/", {}, b"{}")
        assert result.status_code == 500
        assert result.error is not None
        assert len(result.error) < 400
        assert not result.delivered
        monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.5)
        hung = await webhooks.post(f"http://127.0.0.1:{silent.getsockname()[1]}/", {}, b"{}")
        assert (hung.status_code, hung.error) == (None, "timed out after 0.5s")
        refused = await webhooks.post(f"http://127.0.0.1:{free_port()}/", {}, b"{}")
        assert refused.status_code is None
        assert refused.error
    finally:
        loud.shutdown()
        loud.server_close()
        silent.close()
