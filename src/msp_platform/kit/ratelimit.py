"""Fixed-window rate limits per caller: Redis when configured (shared by every API process), else memory."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from msp_platform.kit.errors import RateLimited


@dataclass(frozen=True)
class Verdict:
    limit: int
    remaining: int
    reset_in: int


class RateLimiter:
    def __init__(self, redis_url: str = "") -> None:
        self._redis_url = redis_url
        self._redis: object | None = None
        self._memory: dict[str, tuple[int, int]] = {}
        self._lock = asyncio.Lock()

    async def _redis_client(self) -> object:
        if self._redis is None:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self._redis_url)
        return self._redis

    async def hit(self, key: str, *, limit: int, window: int) -> Verdict:
        """Count one request; raise RateLimited (429 with Retry-After) when over the limit."""
        now = int(time.time())
        bucket = now // window
        reset_in = (bucket + 1) * window - now
        if self._redis_url:
            client = await self._redis_client()
            redis_key = f"msp:rl:{key}:{bucket}"
            pipe = client.pipeline()  # type: ignore[attr-defined]
            pipe.incr(redis_key)
            pipe.expire(redis_key, window + 1)
            count = int((await pipe.execute())[0])
        else:
            async with self._lock:
                current_bucket, count = self._memory.get(key, (bucket, 0))
                count = count + 1 if current_bucket == bucket else 1
                self._memory[key] = (bucket, count)
                if len(self._memory) > 100_000:
                    self._memory = {k: v for k, v in self._memory.items() if v[0] == bucket}
        if count > limit:
            raise RateLimited(
                f"Rate limit of {limit} requests per {window} s exceeded; retry in {reset_in} s.",
                retry_after=reset_in,
            )
        return Verdict(limit=limit, remaining=max(0, limit - count), reset_in=reset_in)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()  # type: ignore[attr-defined]
