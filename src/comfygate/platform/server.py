"""``comfygate serve``: the API server, and on the embedded default a supervised local worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from comfygate.platform.api.app import create_app
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.migrate import is_up_to_date
from comfygate.platform.processes import die_with_parent
from comfygate.platform.services.accounts import bootstrap_admin
from comfygate.settings import Settings

__all__ = ["serve", "print_first_start"]

log = logging.getLogger(__name__)

WORKER_RESTART_DELAY = 1.0


def print_first_start(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        if not is_up_to_date(engine):
            raise SystemExit("the database schema is not up to date: run `comfygate db upgrade` first")
        with session_scope(make_session_factory(engine)) as session:
            first = bootstrap_admin(session)
    finally:
        engine.dispose()
    if first is None:
        return
    # Shown once: only hashes are stored.
    print("\n".join([
        "=" * 72,
        "First start: comfygate created an admin account and an admin API key.",
        "They are shown only now; store them somewhere safe.",
        f"  web UI:   {settings.public_url}/login",
        f"  username: {first.username}",
        f"  password: {first.password}",
        f"  API key:  {first.key.secret}",
        "=" * 72,
    ]), flush=True)


def _worker_supervisor(settings: Settings):  # type: ignore[no-untyped-def]
    """cleanup_ctx that keeps one local worker process running while the server runs."""

    async def supervise(app: web.Application) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        current: dict[str, subprocess.Popen[bytes]] = {}

        async def keep_running() -> None:
            while not stopping.is_set():
                # The child inherits this environment, so it builds the same settings. It gets SIGTERM when
                # this process dies, however it dies (started from the event loop's thread, which lives as
                # long as the process), and watches this pid as well: no orphan worker keeps taking runs.
                proc = subprocess.Popen([sys.executable, "-m", "comfygate", "worker"],
                                        preexec_fn=die_with_parent(signal.SIGTERM))
                current["proc"] = proc
                code = await asyncio.to_thread(proc.wait)
                if not stopping.is_set():
                    log.warning("local worker exited with %s; restarting it", code)
                    await asyncio.sleep(WORKER_RESTART_DELAY)

        task = asyncio.create_task(keep_running())
        yield
        stopping.set()
        proc = current.get("proc")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return supervise


def serve(settings: Settings, *, with_worker: bool) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    print_first_start(settings)
    app = create_app(settings)
    if with_worker:
        app.cleanup_ctx.append(_worker_supervisor(settings))
    print(f"comfygate listening on {settings.public_url} (workers on queue {settings.queue_name})", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0
