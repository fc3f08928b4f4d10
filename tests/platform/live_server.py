"""A real API server (no worker) on a free loopback port, for tests that talk HTTP to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
from aiohttp import web

from comfygate.platform.api.app import create_app
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.migrate import upgrade
from comfygate.platform.services import accounts
from comfygate.settings import Settings

__all__ = ["Server", "running_server"]


@dataclass
class Server:
    url: str
    admin_key: str
    user_key: str

    def call(self, method: str, path: str, key: str | None = "admin", **kwargs: object) -> requests.Response:
        headers = {}
        if key:
            headers["Authorization"] = f"Bearer {self.admin_key if key == 'admin' else self.user_key}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


@contextmanager
def running_server(settings: Settings) -> Iterator[Server]:
    """A real API server (no worker) on a free loopback port, with an admin and a user key."""
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        admin = accounts.create_api_key(session, "admin", is_admin=True).secret
        user = accounts.create_api_key(session, "user").secret
    engine.dispose()

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings))
    started = threading.Event()
    port: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(60), "server did not start"
    try:
        yield Server(f"http://127.0.0.1:{port[0]}", admin, user)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
