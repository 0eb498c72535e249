"""Running queued jobs in tests on the app's in-process broker."""

from __future__ import annotations

import anyio
import anyio.to_thread
from litestar import Litestar
from tests.worker.test_runtime import running

from msp_platform.state import services_of


async def drain(app: Litestar, rounds: int = 3) -> None:
    """Run every ready job (bus subscribers, timers, deliveries, notifications) until nothing is left. Only
    the ready queues are joined: delayed messages (timers minutes or hours ahead, retries' backoff) stay in
    their delay queues."""
    broker = services_of(app).broker
    assert broker is not None
    with running(broker):
        for _ in range(rounds):
            for queue in ("high", "default"):
                if queue in broker.queues:
                    await anyio.to_thread.run_sync(broker.queues[queue].join)
            await anyio.sleep(0.2)
