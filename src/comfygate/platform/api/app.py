"""``create_app(settings)``: the aiohttp application (REST API, web UI, admin console) and its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from sqlalchemy import text

from comfygate.comfy_runtime import NodeRegistry
from comfygate.platform.api import accounts, nodes, review, runs, ui, webhooks, workflows
from comfygate.platform.api.auth import auth_middleware
from comfygate.platform.api.context import STATE, AppState, state_of
from comfygate.platform.api.errors import error_middleware
from comfygate.platform.api.key_cache import KeyCache
from comfygate.platform.api.text_checks import text_checks_middleware
from comfygate.platform.celery_app import create_celery
from comfygate.platform.db import make_engine, make_session_factory
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.dispatch_relay import DispatchRelay, relay_loop
from comfygate.platform.limits import Limiter
from comfygate.platform.limits.http import failed_auth_middleware, rate_limit_middleware
from comfygate.platform.migrate import is_up_to_date
from comfygate.platform.notify import RunWaiters, start_listener
from comfygate.platform.runtime import node_registry
from comfygate.platform.storage import open_storage
from comfygate.platform.watchdog import sweep
from comfygate.platform.webhooks import start_sender
from comfygate.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# How long a verified API key is trusted without asking the database again (revocation delay).
KEY_CACHE_SECONDS = 5.0


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _database_answers(state: AppState) -> None:
    with state.sessions() as session:
        session.execute(text("SELECT 1"))


async def _ready(request: web.Request) -> web.Response:
    """200 while the database answers; 503 (through the error handler, with Retry-After) while it does not."""
    await state_of(request).in_thread(_database_answers, state_of(request))
    return web.json_response({"ready": True})


def create_app(settings: Settings, registry: NodeRegistry | None = None) -> web.Application:
    # Uploads are checked against the limit as they stream; the extra room is for multipart framing.
    # Text checks come before auth: a key or session lookup never sees a path or query it cannot store.
    app = web.Application(middlewares=[error_middleware, text_checks_middleware, failed_auth_middleware,
                                       auth_middleware, rate_limit_middleware],
                          client_max_size=settings.max_upload_bytes + 64 * 1024)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        if not await asyncio.to_thread(is_up_to_date, engine):
            raise RuntimeError("the database schema is not up to date: run `comfygate db upgrade` first")
        celery = create_celery(settings)
        sessions = make_session_factory(engine)
        executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="comfygate-api")
        state = AppState(
            settings=settings,
            sessions=sessions,
            registry=registry or node_registry(settings),
            storage=open_storage(settings.storage_url, settings.s3_endpoint_url),
            dispatcher=Dispatcher(celery, settings.queue_name, sessions),
            waiters=RunWaiters(),
            executor=executor,
            key_cache=KeyCache(ttl=KEY_CACHE_SECONDS),
            limiter=Limiter.from_settings(settings),
        )
        app[STATE] = state
        stop_listener = await start_listener(settings, state.waiters)
        stop_sender = await start_sender(state)
        watchdog = asyncio.create_task(_watchdog_loop(state))
        relay = DispatchRelay(sessions, state.dispatcher, settings.broker_url)
        relaying = asyncio.create_task(relay_loop(relay, state.in_thread))
        try:
            yield
        finally:
            for task in (watchdog, relaying):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            relay.close()
            await stop_sender()
            await stop_listener()
            await state.limiter.close()
            executor.shutdown(wait=True)
            celery.close()
            engine.dispose()

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/ready", _ready)
    app.router.add_routes(workflows.routes)
    app.router.add_routes(runs.routes)
    app.router.add_routes(review.routes)
    app.router.add_routes(nodes.routes)
    app.router.add_routes(webhooks.routes)
    app.router.add_routes(accounts.routes)
    ui.setup(app)
    return app


async def _watchdog_loop(state: AppState) -> None:
    while True:
        await asyncio.sleep(state.settings.watchdog_seconds)
        try:
            report = await state.in_thread(sweep, state.sessions, state.settings, state.dispatcher)
        except Exception:
            # A database blip must not end the watchdog for the life of the server; the next sweep retries.
            log.exception("watchdog sweep failed; retrying in %s s", state.settings.watchdog_seconds)
            continue
        for run_id in report.failed:
            state.waiters.notify(run_id, webhook=True)
