"""Per-token rate limiting: a fixed window of N requests, counted in memory or in Redis.

A fixed window lets a client burst up to twice the limit across a window boundary; that is
fine for a limit meant to stop runaway clients, and it costs one INCR per request in Redis.
Windows are numbered on the app's clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .clock import Clock
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Whole seconds until the window resets; 0 when allowed.
    retry_after_seconds: int


class RateLimiter(Protocol):
    async def hit(self, key: str) -> Decision:
        """Count one request for `key` and say whether it may go ahead."""
        ...

    async def close(self) -> None: ...


class FixedWindow:
    """Window arithmetic shared by the backends."""

    def __init__(self, clock: Clock, *, limit: int, window_seconds: int) -> None:
        self.clock = clock
        self.limit = limit
        self.window_seconds = window_seconds

    def current(self) -> tuple[int, int]:
        """(window number, whole seconds until it ends, at least 1)."""
        now = self.clock.now().timestamp()
        window = int(now // self.window_seconds)
        remaining = (window + 1) * self.window_seconds - now
        return window, max(1, math.ceil(remaining))

    def decide(self, count: int, retry_after: int) -> Decision:
        if count <= self.limit:
            return Decision(allowed=True, retry_after_seconds=0)
        return Decision(allowed=False, retry_after_seconds=retry_after)


class MemoryRateLimiter:
    """One process's counts: the default, and exact for a single worker."""

    def __init__(self, window: FixedWindow) -> None:
        self._window = window
        # key -> (window number, count); one entry per active token, replaced each window.
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str) -> Decision:
        window, retry_after = self._window.current()
        seen_window, count = self._counts.get(key, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._counts[key] = (window, count)
        return self._window.decide(count, retry_after)

    async def close(self) -> None:
        self._counts.clear()


class RedisRateLimiter:
    """Counts shared by every worker: INCR on a key per token and window, expiring with it."""

    def __init__(self, redis: Redis, window: FixedWindow, *, prefix: str) -> None:
        self._redis = redis
        self._window = window
        self._prefix = prefix

    async def hit(self, key: str) -> Decision:
        window, retry_after = self._window.current()
        redis_key = f"{self._prefix}{key}:{window}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(redis_key)
                pipe.expire(redis_key, self._window.window_seconds + 1, nx=True)
                count, _ = await pipe.execute()
        except RedisError as exc:
            # Fail open: a Redis outage must not take billing down with it; the limit is a
            # guard against runaway clients, not an authorization check.
            log.warning("rate limiter unavailable, request allowed: %s", type(exc).__name__)
            return Decision(allowed=True, retry_after_seconds=0)
        return self._window.decide(int(count), retry_after)

    async def close(self) -> None:
        await self._redis.aclose()


def build_rate_limiter(settings: Settings, clock: Clock) -> RateLimiter:
    window = FixedWindow(
        clock, limit=settings.rate_limit_requests, window_seconds=settings.rate_limit_window_seconds
    )
    if settings.redis_url:
        # from_url opens no connection; the first request does.
        client = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return RedisRateLimiter(client, window, prefix=settings.rate_limit_key_prefix)
    return MemoryRateLimiter(window)
