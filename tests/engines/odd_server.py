"""A tiny server standing where ComfyUI should answer, but answering as something else might: a proxy's HTML
page, a 502, an upload answer without a name. For the engine's checks of what it is told.

Routes answer what the test sets in ``answers`` (``{"POST /prompt": (status, body)}``; a body starting with
"<" goes as text/html, else as application/json); the rest answer 404. ``/ws`` is a websocket that greets as
ComfyUI does and then stays quiet.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

__all__ = ["OddServer"]


class OddServer:
    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="odd-server", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OddServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                       "sid": request.query.get("clientId")}})
        async for _ in ws:
            pass
        return ws

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        status, body = self.answers.get(f"{request.method} {request.path}", (404, ""))
        kind = "text/html" if body.startswith("<") else "application/json"
        return web.Response(status=status, text=body, content_type=kind)
