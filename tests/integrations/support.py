"""Test doubles that speak the real protocols: an HTTP webhook receiver and an SMTP server on 127.0.0.1, and an
independent Standard Webhooks verifier (written from the spec, sharing no code with the platform)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from litestar import Litestar
from tests.support.jobs import drain

from msp_platform.authz.service import system_tenant_context
from msp_platform.db.session import set_tenant_context
from msp_platform.state import services_of
from msp_platform.worker.outbox import PENDING_KEY, enqueue, send_after_commit

TOLERANCE_SECONDS = 5 * 60


class SignatureError(AssertionError):
    pass


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None) -> dict[str, Any]:
    """Standard Webhooks verification: returns the parsed payload, raises SignatureError otherwise."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if abs((now or time.time()) - int(timestamp)) > TOLERANCE_SECONDS:
        raise SignatureError("timestamp outside the tolerance")
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    )
    for versioned in signatures.split(" "):
        version, _, signature = versioned.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return dict(json.loads(body))
    raise SignatureError("no matching v1 signature")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """Records every POST; answers each path with its scripted statuses in turn (then 200)."""

    base_url: str
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, *statuses: int) -> str:
        """A fresh URL on this receiver answering ``statuses`` first."""
        path = f"/hooks/{uuid.uuid4().hex}"
        self.scripts[path] = list(statuses)
        return path

    def url(self, path: str) -> str:
        return self.base_url + path

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver.lock:
                receiver.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                script = receiver.scripts.get(self.path)
                status = (script.pop(0) if script else 200) if script is not None else 404
            payload = b"gone" if status == 410 else b"ok"
            self.send_response(status)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver("")))
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class MailBox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_server(port: int | None = None) -> Iterator[tuple[MailBox, int]]:
    box = MailBox()
    port = port or free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


# --- jobs ---------------------------------------------------------------------------------------------


@dataclass
class Scheduled:
    actor_name: str
    kwargs: dict[str, Any]
    delay_ms: int


def hold_delayed_jobs(broker: Any, monkeypatch: Any, prefix: str = "integrations.") -> list[Scheduled]:
    """Keep this package's *delayed* messages (retries minutes ahead) out of the in-process broker, recording
    them instead. A StubBroker worker stopped before such a message is due loses it without marking it done,
    and every later ``broker.join(queue)`` of the session would then wait forever. Tests run a due retry
    themselves (as the broker or the sweep would); the recorded delay shows when it would have run."""
    held: list[Scheduled] = []
    original = broker.enqueue

    def enqueue(message: Any, *, delay: int | None = None) -> Any:
        if delay and message.actor_name.startswith(prefix):
            held.append(Scheduled(message.actor_name, dict(message.kwargs), delay))
            return message
        return original(message, delay=delay)

    monkeypatch.setattr(broker, "enqueue", enqueue)
    return held


async def run_job(
    app: Litestar, actor_name: str, *, tenant_id: uuid.UUID | None = None, **kwargs: Any
) -> None:
    """Queue a job through the outbox (as a commit would) and run everything ready."""
    services = services_of(app)
    async with services.db.session() as session:
        if tenant_id is not None:
            await set_tenant_context(session, system_tenant_context(tenant_id))
        else:
            session.info["unscoped"] = True
        enqueue(session, actor_name, tenant_id=tenant_id, **kwargs)
        pending = list(session.info.pop(PENDING_KEY))
        await session.commit()
    await send_after_commit(services.broker, services.db.sessionmaker, pending)
    await drain(app)
