"""What request handlers share: the app's long-lived parts, and a way to run a service off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from comfygate.comfy_runtime import NodeRegistry
from comfygate.platform.api.key_cache import KeyCache
from comfygate.platform.db import session_scope
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.limits import Limiter
from comfygate.platform.notify import RunWaiters
from comfygate.platform.services.run_limits import RunLimits
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.storage import Storage
from comfygate.settings import Settings

__all__ = ["AppState", "STATE", "state_of"]

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    sessions: sessionmaker[Session]
    registry: NodeRegistry
    storage: Storage
    dispatcher: Dispatcher
    waiters: RunWaiters
    executor: ThreadPoolExecutor
    key_cache: KeyCache[Any]
    limiter: Limiter

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels)

    @property
    def run_limits(self) -> RunLimits:
        return RunLimits.from_settings(self.settings)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(session, *args, **kwargs)`` in one committed unit of work, on a worker thread:
        services are synchronous (they are shared with the Celery worker) and must not block the loop."""

        def unit_of_work() -> T:
            with session_scope(self.sessions) as session:
                return fn(session, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.executor, unit_of_work)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


STATE = web.AppKey("state", AppState)


def state_of(request: web.Request) -> AppState:
    return request.app[STATE]
