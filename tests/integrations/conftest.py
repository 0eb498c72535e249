"""Integrations tests record their delayed retries instead of leaving them in the session's in-process broker
(see ``hold_delayed_jobs``). Helpers are imported inside the fixture: while conftests load, the ``tests``
package is not importable yet under pytest's importlib mode."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def scheduled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    if "app" not in request.fixturenames:
        return []
    from tests.integrations.support import hold_delayed_jobs

    from msp_platform.state import services_of

    return hold_delayed_jobs(services_of(request.getfixturevalue("app")).broker, monkeypatch)
