"""``RedisStore``: buckets and failure records in Redis, shared by every API process.

Each operation is one Lua script, so a read-modify-write is atomic however many processes share a key, and
the time is Redis's own (``TIME``), so API hosts with drifting clocks still agree. Every key expires once it
no longer matters (a bucket once full again, a failure record after a quiet ``Backoff.memory``).

When Redis cannot be reached the store keeps limiting with this process's own counters (``InProcessStore``)
and logs a warning, trying Redis again after ``RETRY_SECONDS``. Why not fail closed (503): with Redis as the
broker, the API is meant to keep accepting runs through a broker outage (they are dispatched when it is
back), and a limiter that refused everything would turn a limiter outage into a full one. Why not let
everything through: each process still enforces the limits on its own, so one process never lets more
through than its share would be, and logins stay throttled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis_async
from redis.exceptions import RedisError

from comfygate.platform.limits.memory import InProcessStore
from comfygate.platform.limits.store import Backoff, Bucket, LimitStore

__all__ = ["RedisStore", "RETRY_SECONDS"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_SECONDS = 5.0
# Limits are checked on every request: a Redis that stops answering must not hold requests for long.
SOCKET_TIMEOUT_SECONDS = 0.5

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

_TAKE = _NOW + """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = capacity
if state[1] then
  tokens = math.min(capacity, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""

_ADD_FAILURE = _NOW + """
local free = tonumber(ARGV[1])
local first = tonumber(ARGV[2])
local longest = tonumber(ARGV[3])
local memory = tonumber(ARGV[4])
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local block = 0
if count >= free then block = math.min(first * 2 ^ math.min(count - free, 40), longest) end
redis.call('HSET', KEYS[1], 'blocked_until', tostring(now + block))
redis.call('PEXPIRE', KEYS[1], math.ceil(memory * 1000))
return count
"""

_BLOCKED_FOR = """
local blocked_until = redis.call('HGET', KEYS[1], 'blocked_until')
if not blocked_until then return '0' end
""" + _NOW + """
return tostring(math.max(0, tonumber(blocked_until) - now))
"""


class RedisStore(LimitStore):
    def __init__(self, url: str, prefix: str) -> None:
        # One client, hence one connection pool, per store; the app makes one store per process.
        self._client = redis_async.Redis.from_url(url, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                                                  socket_timeout=SOCKET_TIMEOUT_SECONDS)
        self.prefix = prefix
        self._take = self._client.register_script(_TAKE)
        self._add_failure = self._client.register_script(_ADD_FAILURE)
        self._blocked_for = self._client.register_script(_BLOCKED_FOR)
        self._local = InProcessStore()
        self._away_until = 0.0  # while Redis is away: when to try it again

    async def take(self, key: str, bucket: Bucket) -> float:
        return await self._shared(
            lambda: self._take(keys=[self.prefix + key], args=[bucket.rate, bucket.capacity]),
            lambda: self._local.take_now(key, bucket), float)

    async def blocked_for(self, key: str) -> float:
        return await self._shared(lambda: self._blocked_for(keys=[self.prefix + key]),
                                  lambda: self._local.blocked_for_now(key), float)

    async def add_failure(self, key: str, backoff: Backoff) -> None:
        args = [backoff.free_failures, backoff.first_block, backoff.max_block, backoff.memory]
        await self._shared(lambda: self._add_failure(keys=[self.prefix + key], args=args),
                           lambda: self._local.add_failure_now(key, backoff), lambda _: None)

    async def clear_failures(self, key: str) -> None:
        # Cleared in both: a failure counted locally during an outage must not outlive a success either.
        self._local.clear_failures_now(key)
        await self._shared(lambda: self._client.delete(self.prefix + key), lambda: None, lambda _: None)

    async def close(self) -> None:
        await self._client.aclose()

    async def _shared(self, in_redis: Callable[[], Awaitable[object]], locally: Callable[[], T],
                      convert: Callable[[object], T]) -> T:
        if time.monotonic() < self._away_until:
            return locally()
        try:
            answer = await in_redis()
        except RedisError as exc:
            log.warning("rate limits: Redis at %s is unreachable (%s); this process limits on its own for "
                        "%g s, then tries again", self._client.get_connection_kwargs().get("host"), exc,
                        RETRY_SECONDS)
            self._away_until = time.monotonic() + RETRY_SECONDS
            return locally()
        return convert(answer)
