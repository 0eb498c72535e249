"""The real thing: `msp` commands and the service under granian, in embedded mode (SQLite, in-process worker)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

MSP = [sys.executable, "-m", "msp_platform"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MSP_")},
        "MSP_VAR_DIR": str(tmp_path),
        "MSP_PORT": str(port),
        "MSP_ISSUER": f"http://127.0.0.1:{port}",
        "MSP_LOG_LEVEL": "WARNING",
    }
    return f"http://127.0.0.1:{port}", env, tmp_path


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([*MSP, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_embedded_service_end_to_end(embedded: tuple[str, dict[str, str], Path]) -> None:
    base, env, var = embedded
    assert "database at" in _run(["db", "upgrade"], env)
    with sqlite3.connect(var / "msp.db") as db:
        db.execute(
            "INSERT INTO oauth_revoked_access_tokens (jti, expires_at) VALUES ('stale', '2000-01-01 00:00:00')"
        )
    staff_env = {**env, "MSP_NEW_PASSWORD": "an admin passphrase"}
    _run(["staff", "create", "--email", "ops@msp.example", "--name", "Ops", "--role", "msp_admin"], staff_env)
    server = subprocess.Popen(
        [*MSP, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.2)
        signed_in = httpx.post(
            f"{base}/api/v1/auth/sign-in",
            json={"email": "ops@msp.example", "password": "an admin passphrase"},
        )
        assert signed_in.status_code == 200, signed_in.text
        me = httpx.get(
            f"{base}/api/v1/me", headers={"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        )
        assert me.json()["role"] == "msp_admin"
        assert httpx.get(f"{base}/schema/openapi.json").json()["openapi"].startswith("3.1")
        # The in-process scheduler enqueued the hourly housekeeping job and a worker thread ran it.
        deadline = time.monotonic() + 15
        while True:
            with sqlite3.connect(var / "msp.db") as db:
                stale = db.execute(
                    "SELECT count(*) FROM oauth_revoked_access_tokens WHERE jti = 'stale'"
                ).fetchone()[0]
            if stale == 0:
                break
            assert time.monotonic() < deadline, "embedded scheduler/worker did not run the periodic job"
            time.sleep(0.3)
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert server.returncode in (0, -15), output
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_demo_onboarding_flow(embedded: tuple[str, dict[str, str], Path]) -> None:
    """The issue's walk-through: demo manifests, sign in as the tenant admin, onboard 1,000 users and devices
    from CSV files, read them back."""
    import json

    base, env, var = embedded
    server = subprocess.Popen(
        [*MSP, "serve", "--demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.2)
        credentials = json.loads((var / "demo-credentials.json").read_text())
        _run(
            ["demo", "onboarding-csv", "--out", str(var / "csv"), "--users", "1000", "--devices", "1000"], env
        )
        signed_in = httpx.post(
            f"{base}/api/v1/auth/sign-in",
            json={
                "email": credentials["tenant_admin_email"],
                "password": credentials["tenant_admin_password"],
                "tenant": "st-marys",
            },
        )
        assert signed_in.status_code == 200, signed_in.text
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}", "content-type": "text/csv"}
        for kind in ("users", "devices"):
            body = (var / "csv" / f"{kind}.csv").read_bytes()
            report = httpx.post(
                f"{base}/api/v1/{kind}/import",
                params={"mode": "atomic"},
                content=body,
                headers=headers,
                timeout=120,
            )
            assert report.status_code == 200, report.text
            assert (report.json()["created"], report.json()["failed"]) == (1000, 0)
        read = {"Authorization": headers["Authorization"]}
        users = httpx.get(
            f"{base}/api/v1/users", params={"limit": 200, "department": "Pharmacy"}, headers=read
        ).json()
        assert users["items"]
        assert all(u["department"] == "Pharmacy" for u in users["items"])
        devices = httpx.get(
            f"{base}/api/v1/devices", params={"limit": 5, "kind": "laptop"}, headers=read
        ).json()
        assert devices["items"]
        assert all(d["kind"] == "laptop" for d in devices["items"])
        client_token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(credentials["client_id"], credentials["client_secret"]),
        )
        assert client_token.status_code == 200
        me = httpx.get(
            f"{base}/api/v1/me", headers={"Authorization": f"Bearer {client_token.json()['access_token']}"}
        ).json()
        assert me["kind"] == "client"
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert "Traceback" not in output, output


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_serve_refuses_a_port_already_in_use(
    embedded: tuple[str, dict[str, str], Path], reuse_port: bool
) -> None:
    """A second instance must not share the port (granian binds with SO_REUSEPORT, like a running one)."""
    _, env, var = embedded
    with socket.socket() as busy:
        if reuse_port:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*MSP, "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0, done.stdout + done.stderr
    assert f"127.0.0.1:{port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (var / "msp.db").exists(), "nothing was started"
