"""Platform housekeeping jobs: expired OAuth state, idempotency records past 24 h, sent outbox rows."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from msp_platform.kit.time import utcnow
from msp_platform.models.idempotency import IdempotencyRecord
from msp_platform.models.oauth import RefreshToken, RevokedAccessToken
from msp_platform.worker.context import JobContext
from msp_platform.worker.outbox import purge_sent
from msp_platform.worker.registry import Queue, actor, periodic

IDEMPOTENCY_TTL = timedelta(hours=24)


@actor("platform.purge_expired", queue=Queue.low, tenant_scoped=False)
async def purge_expired(job: JobContext) -> None:
    now = utcnow()
    session = job.session
    session.info["unscoped"] = True
    await session.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now))
    await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now - timedelta(days=1)))
    await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - IDEMPOTENCY_TTL)
    )
    await purge_sent(session)


periodic("platform.purge_expired", every=timedelta(hours=1), actor_name="platform.purge_expired")
