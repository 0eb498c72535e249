"""Identity jobs: invitation emails (sent after the commit that created the invitation)."""

from __future__ import annotations

import uuid

from msp_platform.identity import invitation_email
from msp_platform.worker.context import JobContext
from msp_platform.worker.registry import Queue, actor

# Dramatiq retries a failed send with jittered exponential backoff (1-2 s, doubling, at most 5 min apart):
# about a quarter of an hour in all. Each run re-checks the invitation (used, revoked or expired: skipped).
SEND_RETRIES = 10


@actor(invitation_email.SEND_ACTOR, queue=Queue.default, max_retries=SEND_RETRIES)
async def send_invitation_email(job: JobContext, *, invitation_id: str, sealed_token: str) -> None:
    job.info["outcome"] = await invitation_email.send_invitation_email(
        job.session, job.settings, uuid.UUID(invitation_id), sealed_token, retries=job.retries
    )
