"""``Limiter``: the rate limits and quotas of callers, and the login throttle, over one store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfygate.platform.credentials import sha256_hex
from comfygate.platform.limits.logins import LoginThrottle
from comfygate.platform.limits.memory import InProcessStore
from comfygate.platform.limits.policy import CallerLimits, over_limit
from comfygate.platform.limits.redis_store import RedisStore
from comfygate.platform.limits.store import Bucket, LimitStore
from comfygate.settings import Settings

__all__ = ["Limiter", "redis_prefix"]


def redis_prefix(settings: Settings) -> str:
    """Where this installation's counters live in a Redis that others may share. Keys are named by API key
    id, which starts at 1 in every database, so by default the prefix is derived from the database URL."""
    if settings.limits_redis_prefix:
        return settings.limits_redis_prefix
    return f"comfygate:limits:{sha256_hex(settings.database_url)[:12]}:"


class Limiter:
    def __init__(self, settings: Settings, store: LimitStore) -> None:
        self.store = store
        self.defaults = CallerLimits.defaults(settings)
        self.logins = LoginThrottle(store)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limiter:
        if settings.limits_redis_url:
            return cls(settings, RedisStore(settings.limits_redis_url, redis_prefix(settings)))
        return cls(settings, InProcessStore())

    def limits_of(self, overrides: Mapping[str, Any] | None) -> CallerLimits:
        return self.defaults.overridden(overrides)

    async def check_request(self, subject: str, limits: CallerLimits, whose: str) -> None:
        """Take one request from the subject's bucket (it holds two seconds' worth, for bursts)."""
        rate = limits.requests_per_second
        if rate > 0:
            wait = await self.store.take("rps:" + subject, Bucket(rate, max(1.0, 2 * rate)))
            if wait > 0:
                raise over_limit("requests_per_second", rate, wait, whose)

    async def take_run(self, subject: str, limits: CallerLimits, whose: str) -> None:
        """Take one run from the subject's per-minute bucket (it holds a minute's worth)."""
        per_minute = limits.runs_per_minute
        if per_minute > 0:
            wait = await self.store.take("rpm:" + subject, Bucket(per_minute / 60.0, float(per_minute)))
            if wait > 0:
                raise over_limit("runs_per_minute", per_minute, wait, whose)

    async def close(self) -> None:
        await self.store.close()
