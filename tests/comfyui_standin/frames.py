"""Websocket clients and the frames the stand-in sends them, in ComfyUI's shapes and delivery rules.

As in ComfyUI 0.3.64 (recordings 05, 09, 10, 13): the server keeps one socket per clientId, the newest; a
frame for a client goes to that socket, a frame for nobody in particular (sid None) to every kept socket.
When any socket of a clientId closes, the clientId's entry goes, even if a newer socket had replaced it.

Frames are serialized when they are sent (on any thread) and written by one publisher task in send order,
so what the execution thread sends reaches each socket in the order it was sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

__all__ = ["PREVIEW_IMAGE", "PREVIEW_IMAGE_WITH_METADATA", "Client", "SocketHub", "preview_frame", "preview_jpeg"]

PREVIEW_IMAGE = 1  # binary event: 4 bytes type, 4 bytes image format (1 = JPEG), the image
PREVIEW_IMAGE_WITH_METADATA = 4  # binary event: 4 bytes type, 4 bytes JSON length, the JSON, the image
JPEG_FORMAT = 1
PREVIEW_SIZE = 64
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}


@dataclass(eq=False)
class Client:
    """One open websocket."""

    sid: str
    ws: web.WebSocketResponse
    transport: Any  # the TCP transport under it, so a test hook can drop the connection without a close frame
    feature_flags: dict[str, Any] = field(default_factory=dict)


class SocketHub:
    """The kept sockets by clientId, and the ordered outbox every frame goes through."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clients: dict[str, Client] = {}
        self._outbox: asyncio.Queue[tuple[str | bytes, str | None]] = asyncio.Queue()
        # What the execution thread is doing, for a client that reconnects mid-run.
        self.running_client: str | None = None
        self.last_node: str | None = None

    # --- sending (thread-safe) ---------------------------------------------------------------------------

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self._post(json.dumps({"type": event, "data": data}), sid)

    def send_raw(self, text: str, sid: str | None = None) -> None:
        self._post(text, sid)

    def send_binary(self, payload: bytes, sid: str | None = None) -> None:
        self._post(payload, sid)

    def _post(self, message: str | bytes, sid: str | None) -> None:
        self.loop.call_soon_threadsafe(self._outbox.put_nowait, (message, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        client = self.clients.get(sid) if sid is not None else None
        return bool(client and client.feature_flags.get("supports_preview_metadata"))

    async def publish(self) -> None:
        """Write queued frames to their sockets, forever (one task per server)."""
        while True:
            message, sid = await self._outbox.get()
            client = self.clients.get(sid) if sid is not None else None
            targets = list(self.clients.values()) if sid is None else [client] if client is not None else []
            for client in targets:
                try:
                    if isinstance(message, bytes):
                        await client.ws.send_bytes(message)
                    else:
                        await client.ws.send_str(message)
                except (ConnectionError, RuntimeError):
                    pass  # the socket is going away; its handler removes it

    # --- sockets ------------------------------------------------------------------------------------------

    async def serve(self, request: web.Request, sid: str, queue_remaining: int) -> web.WebSocketResponse:
        """GET /ws: the first frames, then the client's frames until it goes."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = Client(sid, ws, request.transport)
        # The greeting is written before the socket is kept, so nothing queued can come before it.
        await ws.send_str(json.dumps({"type": "status",
                                      "data": {"status": {"exec_info": {"queue_remaining": queue_remaining}},
                                               "sid": sid}}))
        if self.running_client == sid and self.last_node is not None:
            await ws.send_str(json.dumps({"type": "executing", "data": {"node": self.last_node}}))
        self.clients.pop(sid, None)
        self.clients[sid] = client
        first = True
        try:
            async for message in ws:
                if message.type != web.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    flags = data.get("data")
                    client.feature_flags = flags if isinstance(flags, dict) else {}
                    self.send("feature_flags", dict(SERVER_FEATURES), sid)
                first = False
        finally:
            self.clients.pop(sid, None)  # whichever socket of this clientId it was (ComfyUI's behaviour)
        return ws

    def drop_all(self) -> int:
        """Cut every socket's connection without a close frame, as a network drop would."""
        clients = list(self.clients.values())
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
        return len(clients)


def preview_jpeg(step: float, total: float) -> bytes:
    """A small real JPEG whose colour follows the step, standing in for a sampler's latent preview."""
    share = 0.0 if not total else max(0.0, min(1.0, step / total))
    colour = (int(255 * share), 96, int(255 * (1 - share)))
    buffer = io.BytesIO()
    Image.new("RGB", (PREVIEW_SIZE, PREVIEW_SIZE), colour).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def preview_frame(jpeg: bytes, metadata: dict[str, Any] | None) -> bytes:
    """The binary frame of a preview: type 1 without metadata, type 4 with it."""
    if metadata is None:
        return struct.pack(">II", PREVIEW_IMAGE, JPEG_FORMAT) + jpeg
    text = json.dumps(metadata).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(text)) + text + jpeg
