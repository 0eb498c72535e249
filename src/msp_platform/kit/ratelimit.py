"""Fixed-window rate limits per caller: Redis when configured (shared by every API process), else memory.

When the configured Redis cannot be reached the limiter fails open (the request is served, a warning is
logged at most once a minute): an outage of the counters must not take the whole API down."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from msp_platform.kit.errors import RateLimited
from msp_platform.kit.logging import get_logger

log = get_logger(__name__)
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Verdict:
    limit: int
    remaining: int
    reset_in: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_in),
        }


class RateLimiter:
    def __init__(self, redis_url: str = "") -> None:
        self._redis_url = redis_url
        self._redis: object | None = None
        self._memory: dict[str, tuple[int, int]] = {}
        self._lock = asyncio.Lock()
        self._warned_at = 0.0

    async def _redis_client(self) -> object:
        if self._redis is None:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(
                self._redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
        return self._redis

    async def _redis_count(self, key: str, bucket: int, window: int) -> int | None:
        """The bucket's count after this hit, or None when Redis is unreachable (fail open)."""
        from redis.exceptions import RedisError

        try:
            client = await self._redis_client()
            redis_key = f"msp:rl:{key}:{bucket}"
            pipe = client.pipeline()  # type: ignore[attr-defined]
            pipe.incr(redis_key)
            pipe.expire(redis_key, window + 1)
            return int((await pipe.execute())[0])
        except (RedisError, OSError, TimeoutError) as exc:
            now = time.monotonic()
            if now - self._warned_at > 60 or not self._warned_at:
                self._warned_at = now
                log.warning(
                    "rate limiter: Redis unreachable, requests are not being limited",
                    error=f"{type(exc).__name__}: {str(exc)[:200]}",
                )
            return None

    async def hit(self, key: str, *, limit: int, window: int) -> Verdict:
        """Count one request; raise RateLimited (429 with Retry-After) when over the limit."""
        now = int(time.time())
        bucket = now // window
        reset_in = (bucket + 1) * window - now
        if self._redis_url:
            counted = await self._redis_count(key, bucket, window)
            if counted is None:
                return Verdict(limit=limit, remaining=limit, reset_in=reset_in)
            count = counted
        else:
            async with self._lock:
                current_bucket, count = self._memory.get(key, (bucket, 0))
                count = count + 1 if current_bucket == bucket else 1
                self._memory[key] = (bucket, count)
                if len(self._memory) > 100_000:
                    self._memory = {k: v for k, v in self._memory.items() if v[0] == bucket}
        verdict = Verdict(limit=limit, remaining=max(0, limit - count), reset_in=reset_in)
        if count > limit:
            refused = RateLimited(
                f"Rate limit of {limit} requests per {window} s exceeded; retry in {reset_in} s.",
                retry_after=reset_in,
            )
            refused.headers.update(verdict.headers())  # a 429 tells the same budget as a 200
            raise refused
        return verdict

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()  # type: ignore[attr-defined]
