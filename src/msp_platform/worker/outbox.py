"""Transactional outbox: jobs are rows written with the change that causes them, sent after commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
import dramatiq
from dramatiq import Message
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.models.outbox import OutboxMessage
from msp_platform.worker.registry import ACTORS

log = get_logger(__name__)
PENDING_KEY = "outbox_pending"
# The request that wrote a message sends it right after commit; the relay leaves it this long to do so.
RELAY_GRACE = timedelta(seconds=3)


def enqueue(
    session: AsyncSession,
    actor_name: str,
    *,
    tenant_id: uuid.UUID | None = None,
    eta: datetime | None = None,
    **kwargs: Any,
) -> OutboxMessage:
    """Queue a job as part of the session's unit of work. Nothing is sent unless the transaction commits."""
    spec = ACTORS.get(actor_name)
    if spec is None:
        raise KeyError(f"unknown actor {actor_name!r}")
    if spec.tenant_scoped and tenant_id is None:
        raise ValueError(f"actor {actor_name!r} is tenant-scoped: pass tenant_id")
    now = utcnow()
    message = OutboxMessage(
        id=new_id(),
        actor_name=actor_name,
        queue_name=spec.queue.value,
        kwargs=_jsonable(kwargs),
        tenant_id=tenant_id,
        created_at=now,
        available_at=eta or now,
        attempts=0,
    )
    session.add(message)
    session.info.setdefault(PENDING_KEY, []).append(message)
    return message


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, uuid.UUID):
            out[key] = str(value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def to_dramatiq(
    broker: dramatiq.Broker, row: OutboxMessage, now: datetime
) -> tuple[Message[Any], int | None]:
    kwargs = dict(row.kwargs)
    if row.tenant_id is not None:
        kwargs["tenant_id"] = str(row.tenant_id)
    delay_ms = int((row.available_at - now).total_seconds() * 1000)
    message: Message[Any] = Message(
        # The broker's own queue for the actor (queue names may carry a namespace prefix).
        queue_name=broker.get_actor(row.actor_name).queue_name,
        actor_name=row.actor_name,
        args=(),
        kwargs=kwargs,
        options={"outbox_id": str(row.id)},
        message_id=str(row.id),
    )
    return message, (delay_ms if delay_ms > 0 else None)


def _send(broker: dramatiq.Broker, rows: Sequence[OutboxMessage]) -> list[uuid.UUID]:
    now = utcnow()
    sent: list[uuid.UUID] = []
    for row in rows:
        message, delay = to_dramatiq(broker, row, now)
        broker.enqueue(message, delay=delay)
        sent.append(row.id)
    return sent


class _Acks:
    """Outbox ids sent to the broker but not yet marked sent, marked in one UPDATE a moment later.

    Marking each job's messages in a transaction of its own doubled the database round trips of every
    job. The relay only resends messages older than RELAY_GRACE, so a short delay here resends nothing;
    if the process dies first, the relay resends them and idempotent actors absorb the duplicates."""

    delay = 0.2

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.ids: list[uuid.UUID] = []
        self.task: asyncio.Task[None] | None = None
        # A flush that has taken ids but not yet committed must be waited for, or a caller of
        # flush_acks() would see an empty list and return before the UPDATE is visible.
        self.lock = asyncio.Lock()

    def add(self, ids: list[uuid.UUID]) -> None:
        self.ids.extend(ids)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.delay)
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        while self.ids:
            batch, self.ids = self.ids[:1000], self.ids[1000:]
            try:
                async with self.factory() as session:
                    session.info["unscoped"] = True
                    await session.execute(
                        update(OutboxMessage).where(OutboxMessage.id.in_(batch)).values(sent_at=utcnow())
                    )
                    await session.commit()
            except Exception as exc:  # the relay will resend; actors are idempotent
                log.warning("could not mark outbox messages sent", error=str(exc), count=len(batch))


_ACKS: dict[tuple[int, int], _Acks] = {}


def _acks(factory: Any) -> _Acks:
    key = (id(asyncio.get_running_loop()), id(factory))
    found = _ACKS.get(key)
    if found is None:
        found = _ACKS[key] = _Acks(factory)
    return found


async def flush_acks() -> None:
    """Mark everything this event loop sent (at shutdown, and for tests that look at ``sent_at``)."""
    loop = id(asyncio.get_running_loop())
    for (loop_id, _), acks in list(_ACKS.items()):
        if loop_id == loop:
            await acks.flush()


async def send_after_commit(
    broker: dramatiq.Broker | None, db_session_factory: Any, rows: list[OutboxMessage]
) -> None:
    """Best effort: send what this unit of work queued. Whatever fails stays pending for the relay."""
    if not rows or broker is None:
        return
    try:
        sent = await anyio.to_thread.run_sync(_send, broker, rows)
    except Exception as exc:
        log.warning("broker unavailable, outbox relay will resend", error=str(exc), count=len(rows))
        return
    _acks(db_session_factory).add(sent)


async def relay_pending(broker: dramatiq.Broker, session: AsyncSession, *, batch: int = 200) -> int:
    """Send messages the request path did not (broker down, process died). Runs in every worker process;
    on PostgreSQL ``SKIP LOCKED`` keeps two relays off the same rows."""
    now = utcnow()
    stmt = (
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.available_at <= now)
        .where(OutboxMessage.created_at <= now - RELAY_GRACE)
        .order_by(OutboxMessage.available_at)
        .limit(batch)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = list((await session.scalars(stmt)).all())
    if not rows:
        return 0
    sent = 0
    for row in rows:
        try:
            await anyio.to_thread.run_sync(_send, broker, [row])
        except Exception as exc:
            row.attempts += 1
            row.last_error = str(exc)[:500]
            row.available_at = now + timedelta(seconds=min(300, 2 ** min(row.attempts, 8)))
            log.warning("outbox relay: broker unavailable", error=str(exc))
            break
        row.sent_at = utcnow()
        sent += 1
    return sent


async def purge_sent(session: AsyncSession, *, older_than: timedelta = timedelta(days=2)) -> None:
    from sqlalchemy import delete

    await session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < utcnow() - older_than
        )
    )
