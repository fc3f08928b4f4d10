"""One connection to a ComfyUI server: its HTTP routes, called from any thread, and one websocket.

An asyncio loop on a background thread owns the aiohttp session. Worker threads call the blocking methods here,
which run the request on that loop. The websocket (``/ws?clientId=<client_id>``) is kept open by the same loop,
reconnecting with backoff; ComfyUI sends a prompt's frames only to the socket of the client that submitted it,
so each frame is handed to the queue subscribed for its ``prompt_id``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import struct
import threading
from collections.abc import Coroutine
from typing import Any

import aiohttp

__all__ = ["BadAnswer", "ComfyClient", "HTTPStatusError", "SOCKET", "Unreachable"]

log = logging.getLogger(__name__)

SOCKET = "_socket"  # the type of the marker put in every queue when the socket opens or drops
_PREVIEW_TYPES = {1: "image/jpeg", 2: "image/png"}  # binary frame type 1: bytes 4-7 name the image format


class Unreachable(Exception):
    """ComfyUI did not answer: connection refused or reset, or no answer in time."""


class BadAnswer(Unreachable):
    """An answer that is not ComfyUI's (an HTML page of a proxy in front of it, an empty body): handled as no
    answer at all."""


class HTTPStatusError(Exception):
    """ComfyUI answered with an error status; ``body`` is the parsed JSON, else the text."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"ComfyUI answered {method} {path} with HTTP {status}: {str(body)[:300]}")
        self.status = status
        self.body = body


class ComfyClient:
    def __init__(self, base_url: str, client_id: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.connected = threading.Event()  # the websocket is open
        self._sinks: dict[str, queue.Queue] = {}
        self._sinks_lock = threading.Lock()
        self._current: str | None = None  # the prompt ComfyUI is running, for frames that do not name it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="comfyui-client", daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._socket_task: asyncio.Task | None = None
        self._closing: asyncio.Event | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._replacing: asyncio.Future | None = None  # the old socket's close, when it is being replaced
        self.sockets_opened = 0  # websockets opened so far (a replaced or reconnected socket counts again)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def open(self) -> None:
        self._thread.start()
        self._call(self._open(), timeout=10)

    async def _open(self) -> None:
        self._closing = asyncio.Event()
        # No total timeout here: each request sets its own; connects fail fast on a dead port.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))
        self._socket_task = asyncio.create_task(self._keep_socket())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._close(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _close(self) -> None:
        self._closing.set()
        if self._socket_task is not None:
            self._socket_task.cancel()
            await asyncio.gather(self._socket_task, return_exceptions=True)
        await self._session.close()

    # -- frames --------------------------------------------------------------------------------------------------

    def subscribe(self, prompt_id: str) -> queue.Queue:
        """A queue that receives this prompt's frames (``{"type", "data"}``), and socket up/down markers."""
        sink: queue.Queue = queue.Queue()
        with self._sinks_lock:
            self._sinks[prompt_id] = sink
        return sink

    def unsubscribe(self, prompt_id: str) -> None:
        with self._sinks_lock:
            self._sinks.pop(prompt_id, None)

    def _deliver(self, prompt_id: str | None, message: dict[str, Any]) -> None:
        with self._sinks_lock:
            sink = self._sinks.get(prompt_id) if prompt_id else None
        if sink is not None:
            sink.put(message)

    def _socket_state(self, up: bool) -> None:
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        with self._sinks_lock:
            sinks = list(self._sinks.values())
        for sink in sinks:
            sink.put({"type": SOCKET, "data": {"up": up}})

    def reconnect(self) -> None:
        """Replaces the socket: ComfyUI stopped sending to it (recording 13: it dropped this client's entry
        when an older socket of the same client id closed)."""
        self._socket_state(False)  # at once, so no prompt is submitted before the new socket is open

        async def close() -> None:
            if self._ws is not None:
                self._replacing = asyncio.ensure_future(self._ws.close())  # the socket loop waits for it

        asyncio.run_coroutine_threadsafe(close(), self._loop)

    async def _keep_socket(self) -> None:
        """Keeps a socket open until the client closes: it must not end on any error, or every run after it
        would be refused (/ready answers 503 while no socket is open)."""
        url = f"{self.base_url}/ws?clientId={self.client_id}"
        delay, failures, opened = 0.25, 0, False
        while not self._closing.is_set():
            try:
                # The previous socket is closed before this one opens: ComfyUI keeps one socket per client id,
                # and closing an older one after a newer one opened would unregister the newer one.
                async with self._session.ws_connect(url, heartbeat=15, max_msg_size=0) as ws:
                    self._ws = ws
                    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
                    if opened:
                        log.info("ComfyUI websocket at %s open again", self.base_url)
                    delay, failures, opened = 0.25, 0, True
                    self.sockets_opened += 1
                    self._socket_state(True)
                    async for message in ws:
                        self._route(message)
                    log.warning("ComfyUI websocket at %s closed (%s); reconnecting", self.base_url, ws.close_code)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if failures == 0:
                    log.warning("ComfyUI websocket at %s: %s; reconnecting", self.base_url, exc)
                failures += 1
            except Exception:  # a bug of ours: logged, and the socket is opened again after the backoff
                log.exception("ComfyUI websocket at %s failed; reconnecting", self.base_url)
                failures += 1
            finally:
                self._ws = None
                if self.connected.is_set():
                    self._socket_state(False)
            if self._replacing is not None:  # ComfyUI is done with the old socket once the handshake is over
                await asyncio.gather(self._replacing, return_exceptions=True)
                self._replacing = None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
            delay = min(delay * 2, 5.0)

    def _route(self, message: aiohttp.WSMessage) -> None:
        """Hands one frame on; a frame of a shape we do not expect (custom nodes send their own) is skipped."""
        try:
            if message.type == aiohttp.WSMsgType.TEXT:
                self._route_text(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._route_binary(message.data)
        except Exception:  # one odd frame must not cost the socket
            log.exception("skipping a ComfyUI websocket frame we could not read: %.200r", message.data)

    def _route_text(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return
        kind, data = message["type"], message.get("data")
        if not isinstance(data, dict):
            return  # no prompt named: none of ours (ComfyUI's own frames all carry an object)
        prompt_id = _prompt_id(data.get("prompt_id"))
        if kind in ("execution_start", "executing", "progress") and prompt_id:
            self._current = None if kind == "executing" and data.get("node") is None else prompt_id
        # After a reconnect ComfyUI sends the running node without the prompt's id (and only that).
        resumed = kind == "executing" and "prompt_id" not in data and data.get("node") is not None
        self._deliver(prompt_id or (self._current if resumed else None), message)

    def _route_binary(self, raw: bytes) -> None:
        if len(raw) < 8:
            return
        event, word = struct.unpack(">II", raw[:8])
        if event == 1 and word in _PREVIEW_TYPES:  # the running prompt's; the node is the last to report progress
            data = {"node": None, "content_type": _PREVIEW_TYPES[word], "image": raw[8:]}
            self._deliver(self._current, {"type": "preview", "data": data})
        elif event == 4:  # bytes 4-7: length of a JSON header naming prompt and node, then the image
            try:
                meta = json.loads(raw[8:8 + word])
            except ValueError:
                return
            if not isinstance(meta, dict):
                return
            node, image_type = meta.get("node_id"), meta.get("image_type")
            data = {"node": str(node) if isinstance(node, (str, int)) else None,
                    "content_type": image_type if isinstance(image_type, str) and image_type else "image/jpeg",
                    "image": raw[8 + word:]}
            self._deliver(_prompt_id(meta.get("prompt_id")), {"type": "preview", "data": data})

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Unreachable(f"ComfyUI at {self.base_url} did not answer in {timeout:g} s") from None

    async def _request(self, method: str, path: str, timeout: float, **kwargs: Any) -> tuple[int, str, bytes]:
        try:
            async with self._session.request(method, self.base_url + path, timeout=aiohttp.ClientTimeout(
                    total=timeout, connect=5), **kwargs) as response:
                return response.status, response.headers.get("Content-Type", ""), await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unreachable(f"ComfyUI at {self.base_url}: {method} {path}: {exc or type(exc).__name__}") from exc

    def request(self, method: str, path: str, *, timeout: float = 30.0, **kwargs: Any) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request; raises Unreachable when ComfyUI does not answer."""
        return self._call(self._request(method, path, timeout, **kwargs), timeout + 5)

    def call(self, method: str, path: str, *, timeout: float = 30.0, expect: type | None = None,
             **kwargs: Any) -> Any:
        """The parsed JSON answer (None for an empty body); HTTPStatusError for an error status. ``expect``: the
        type the answer must have (dict, list), else BadAnswer."""
        status, _, body = self.request(method, path, timeout=timeout, **kwargs)
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        if status >= 400:
            raise HTTPStatusError(method, path, status, parsed)
        if expect is not None and not isinstance(parsed, expect):
            raise BadAnswer(f"ComfyUI at {self.base_url} answered {method} {path} with HTTP {status} and "
                            f"{str(parsed)[:200]!r}, not a JSON {expect.__name__}; is something else on that URL?")
        return parsed

    def queue(self, timeout: float = 10.0) -> dict[str, list[str]]:
        """The ids of the prompts ComfyUI runs and of those pending: ``{"running": [...], "pending": [...]}``."""
        state = self.call("GET", "/queue", timeout=timeout, expect=dict)
        ids: dict[str, list[str]] = {}
        for kind in ("running", "pending"):
            items = state.get(f"queue_{kind}")
            if not isinstance(items, list):
                raise BadAnswer(f"ComfyUI at {self.base_url} answered GET /queue without a {kind} list")
            # Each item is [number, prompt_id, prompt, extra_data, outputs_to_execute].
            ids[kind] = [item[1] for item in items
                         if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str)]
        return ids

    def queue_state(self, prompt_id: str, timeout: float = 10.0) -> str | None:
        """"running", "pending" or None (not in ComfyUI's queue)."""
        return next((kind for kind, ids in self.queue(timeout).items() if prompt_id in ids), None)

    def history(self, prompt_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
        entry = self.call("GET", f"/history/{prompt_id}", timeout=timeout, expect=dict).get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise BadAnswer(f"ComfyUI at {self.base_url} answered GET /history/{prompt_id} with an entry that is "
                            f"not an object: {str(entry)[:200]!r}")
        return entry

    def upload_image(self, filename: str, data: bytes, subfolder: str) -> dict[str, Any]:
        """ComfyUI's ``{name, subfolder, type}`` of the uploaded file."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="application/octet-stream")
        form.add_field("type", "input")
        form.add_field("subfolder", subfolder)
        form.add_field("overwrite", "true")
        answer = self.call("POST", "/upload/image", data=form, timeout=120, expect=dict)
        if not isinstance(answer.get("name"), str) or not isinstance(answer.get("subfolder") or "", str):
            raise BadAnswer(f"ComfyUI at {self.base_url} answered the upload of {filename!r} without its name: "
                            f"{str(answer)[:200]!r}")
        return answer

    def view(self, filename: str, subfolder: str, kind: str) -> bytes | None:
        """One of ComfyUI's files, None when it is not there (404). Its Content-Type is not used: comfygate
        names types by extension (engines/media.py)."""
        status, _, body = self.request(
            "GET", "/view", params={"filename": filename, "subfolder": subfolder, "type": kind}, timeout=300)
        if status == 404:
            return None
        if status >= 400:
            raise HTTPStatusError("GET", f"/view?filename={filename}", status, body[:300])
        return body

def _prompt_id(value: Any) -> str | None:
    """A frame's prompt id when it is one (a string); custom nodes' frames may put anything there."""
    return value if isinstance(value, str) and value else None
