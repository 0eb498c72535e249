"""Actor and periodic-job declarations, bound to a broker only when the runtime starts.

Declaring actors against Dramatiq's global broker at import time ties every module to one broker; here a
module declares ``@actor("incidents.escalate")`` and ``bind_actors(broker)`` creates the Dramatiq actors
for whichever broker this process uses (in-process, Redis, RabbitMQ, or a test's StubBroker).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any


class Queue(StrEnum):
    high = "high"  # pages, escalations: someone is waiting
    default = "default"
    low = "low"  # reports, imports, housekeeping


@dataclass(frozen=True)
class ActorSpec:
    name: str
    fn: Callable[..., Awaitable[None]]
    queue: Queue
    max_retries: int
    time_limit_ms: int
    tenant_scoped: bool
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PeriodicSpec:
    name: str
    actor_name: str
    every: timedelta


ACTORS: dict[str, ActorSpec] = {}
PERIODIC: dict[str, PeriodicSpec] = {}


def actor(
    name: str,
    *,
    queue: Queue = Queue.default,
    max_retries: int = 10,
    time_limit_ms: int = 300_000,
    tenant_scoped: bool = True,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Declare a job. The function receives a ``JobContext`` (its own session, committed when the job
    returns; tenant context set from the message when ``tenant_scoped``) and JSON-able keyword arguments:
    ids, never rows. Jobs must be idempotent: a message can be delivered twice."""

    def register(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        if name in ACTORS and ACTORS[name].fn is not fn:
            raise ValueError(f"actor {name!r} declared twice")
        ACTORS[name] = ActorSpec(name, fn, queue, max_retries, time_limit_ms, tenant_scoped)
        return fn

    return register


def periodic(name: str, *, every: timedelta, actor_name: str) -> None:
    """Run ``actor_name`` (a tenant-less actor) every ``every``, once across all processes."""
    PERIODIC[name] = PeriodicSpec(name, actor_name, every)


def load_task_modules() -> None:
    """Import every module that declares actors so the registry is complete."""
    import importlib

    for module in TASK_MODULES:
        importlib.import_module(module)


TASK_MODULES: list[str] = [
    "msp_platform.worker.housekeeping",
    "msp_platform.kit.timers",
    "msp_platform.sla.service",
    "msp_platform.sla.tasks",
    "msp_platform.escalations.service",
    "msp_platform.escalations.tasks",
    "msp_platform.integrations.tasks",
    "msp_platform.identity.tasks",
]
