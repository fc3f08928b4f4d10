"""Telling waiting API requests that a run has ended.

A worker publishes the run id when a run ends; the API server wakes the requests waiting on it (``?wait=N``).
The channel follows the broker: Redis pub/sub with a Redis broker, a Unix datagram socket in the data dir
with the embedded filesystem broker (everything is on one host then). The notice is only a wake-up: the
waiter always re-reads the run table, and also re-reads it every ``DB_RECHECK_SECONDS`` in case a notice was
lost (or the broker has no channel, e.g. RabbitMQ for now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
import redis.asyncio as aioredis

from comfygate.settings import Settings

__all__ = ["Publisher", "RunWaiters", "start_listener", "DB_RECHECK_SECONDS"]

log = logging.getLogger(__name__)

CHANNEL = "comfygate:run-ended"
# Appended to a notice's run id when the run may have queued a webhook (run ids never hold a space).
_WEBHOOK_MARK = " +webhook"
DB_RECHECK_SECONDS = 1.0
# sockaddr_un holds about 108 bytes of path on Linux (104 on macOS).
_MAX_SOCKET_PATH = 100


def _socket_path(settings: Settings) -> Path:
    return settings.data_dir / "run-events.sock"


def _redis_url(settings: Settings) -> str | None:
    return settings.broker_url if settings.uses_redis_broker else None


class Publisher:
    """The worker's side: fire-and-forget, never fails a run."""

    def __init__(self, settings: Settings) -> None:
        self._redis_url = _redis_url(settings)
        self._socket_path = _socket_path(settings)
        self._redis: redis.Redis | None = None

    def run_ended(self, run_id: str, *, webhook: bool = False) -> None:
        """``webhook``: the run may have queued a webhook, so the API servers' senders should look now."""
        message = run_id + _WEBHOOK_MARK if webhook else run_id
        try:
            if self._redis_url:
                if self._redis is None:
                    self._redis = redis.Redis.from_url(self._redis_url, socket_timeout=2, socket_connect_timeout=2)
                self._redis.publish(CHANNEL, message)
            elif self._socket_path.exists():
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.sendto(message.encode(), str(self._socket_path))
        except (OSError, redis.RedisError) as exc:
            # Waiters fall back to re-reading the run table; the run itself is already recorded.
            log.warning("could not publish the end of run %s: %s", run_id, exc)


class RunWaiters:
    """The API server's side: futures keyed by run id, resolved by the listener; plus listeners called for
    notices that may come with a webhook (the webhook sender wakes on them, and only on them: a run without a
    webhook costs the senders no database round trip)."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(run_id)`` (on the event loop) on every notice that may come with a webhook; returns
        its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self, run_id: str, *, webhook: bool = False) -> None:
        for future in self._waiting.pop(run_id, ()):
            if not future.done():
                future.set_result(None)
        if webhook:
            for listener in list(self._listeners):
                listener(run_id)

    def notice(self, message: str) -> None:
        """A notice as published by ``Publisher.run_ended``."""
        run_id, marked, _ = message.partition(_WEBHOOK_MARK)
        self.notify(run_id, webhook=bool(marked))

    def expect(self, run_id: str) -> asyncio.Future[None]:
        """Register interest in a run before it is dispatched, so even an instant end is not missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[run_id].add(future)
        return future

    def discard(self, run_id: str, future: asyncio.Future[None]) -> None:
        bucket = self._waiting.get(run_id)
        if bucket is not None:
            bucket.discard(future)
            if not bucket:
                del self._waiting[run_id]

    async def wait_until_ended(self, run_id: str, timeout: float, has_ended: Callable[[], Awaitable[bool]],
                               *, expected: asyncio.Future[None] | None = None) -> bool:
        """True once ``has_ended()`` says so, False when ``timeout`` passes first.

        With ``expected`` (from ``expect``, registered before the run could end) the first look at the run
        table is skipped: the run was just queued, and its notice will wake us."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future = expected
        while True:
            check = future is None
            if future is None:
                # Register before checking, so a notice that arrives in between is not missed.
                future = loop.create_future()
                self._waiting[run_id].add(future)
            try:
                if check and await has_ended():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), min(remaining, DB_RECHECK_SECONDS))
            finally:
                self.discard(run_id, future)
            future = None


class _DatagramListener(asyncio.DatagramProtocol):
    def __init__(self, waiters: RunWaiters) -> None:
        self._waiters = waiters

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._waiters.notice(data.decode(errors="replace"))


async def start_listener(settings: Settings, waiters: RunWaiters) -> Callable[[], Awaitable[None]]:
    """Start listening for run-ended notices; returns the coroutine function that stops it."""
    redis_url = _redis_url(settings)
    if redis_url:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(CHANNEL)

        async def pump() -> None:
            while True:
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            waiters.notice(message["data"].decode())
                except (redis.RedisError, OSError) as exc:
                    # redis-py reconnects and re-subscribes on the next listen(); meanwhile waiters re-read
                    # the run table.
                    log.warning("run-ended channel lost (%s); reconnecting", exc)
                    await asyncio.sleep(1.0)

        task = asyncio.create_task(pump())

        async def stop_redis() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pubsub.aclose()
            await client.aclose()

        return stop_redis

    path = _socket_path(settings)
    if settings.uses_filesystem_broker and len(str(path)) > _MAX_SOCKET_PATH:
        log.warning("data dir path too long for a Unix socket (%s); waiting requests re-read the run table",
                    path)
    elif settings.uses_filesystem_broker:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _DatagramListener(waiters), sock=sock)

        async def stop_socket() -> None:
            transport.close()
            path.unlink(missing_ok=True)

        return stop_socket

    log.info("no run-ended channel for broker %s; waiting requests re-read the run table",
             settings.broker_url.split("://")[0])

    async def nothing_to_stop() -> None:
        return None

    return nothing_to_stop
