"""Test helpers: reading the ComfyUI 0.3.64 recordings, and a websocket client that collects frames."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

# The recordings sit in shared/ beside the checkout, as the object_info reference does.
RECORDINGS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "comfyui-0.3.64-protocol"
FRAME_TIMEOUT_SECONDS = 20.0


# --- recordings ----------------------------------------------------------------------------------------------

@cache
def recording(name: str) -> dict[str, Any]:
    """One NN-*.json file by its number, e.g. ``recording("01")``."""
    path = next(RECORDINGS.glob(f"{name}-*.json"))
    return json.loads(path.read_text())


def part(name: str, part_name: str) -> list[dict[str, Any]]:
    """The events of one part of a recording."""
    return next(p["events"] for p in recording(name)["parts"] if p["name"] == part_name)


def recorded_frames(events: list[dict[str, Any]], conn: str | None = None) -> list[dict[str, Any]]:
    """The ws messages of a part (of one connection), binary ones as {"type": "binary:N", ...}."""
    frames = []
    for event in events:
        if event["kind"] != "ws_message" or (conn is not None and event["conn"] != conn):
            continue
        message = event["message"]
        frames.append({"type": f"binary:{message['event_type']}", "data": message} if message.get("binary")
                      else message)
    return frames


def exchanges(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(http_request, http_response) pairs of a part, in request order."""
    responses = {e["id"]: e for e in events if e["kind"] == "http_response"}
    return [(e, responses[e["id"]]) for e in events if e["kind"] == "http_request" and e["id"] in responses]


def shape(frame: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A text frame's type and its data's keys in order (what "the same shape" means here)."""
    data = frame["data"]
    return frame["type"], tuple(data) if isinstance(data, dict) else ()


@cache
def recorded_shapes() -> frozenset[tuple[str, tuple[str, ...]]]:
    """Every (type, data keys) a text frame had in any recording."""
    found = set()
    for name in ("01", "02", "04", "05", "06", "07", "08", "09", "10", "12", "13"):
        for p in recording(name)["parts"]:
            found.update(shape(f) for f in recorded_frames(p["events"]) if not f["type"].startswith("binary"))
    return frozenset(found)


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["type"] for frame in frames]


# --- a websocket client ----------------------------------------------------------------------------------------

@dataclass
class Binary:
    """A binary frame: event type, the 4-byte word after it, the rest."""

    event_type: int
    word: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> Binary:
        event_type, word = struct.unpack(">II", data[:8])
        return cls(event_type, word, data[8:])

    def image(self) -> Image.Image:
        body = self.payload[self.word:] if self.event_type == 4 else self.payload
        picture = Image.open(io.BytesIO(body))
        picture.load()
        return picture

    def metadata(self) -> dict[str, Any]:
        return json.loads(self.payload[: self.word])


class Socket:
    """One ws connection to the stand-in; ``frames`` keeps everything received, binary as "binary:N"."""

    def __init__(self, session: aiohttp.ClientSession, url: str, client_id: str | None) -> None:
        self.session, self.url, self.client_id = session, url, client_id
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames: list[dict[str, Any]] = []

    async def open(self, feature_flags: dict[str, Any] | None = None) -> Socket:
        query = f"?clientId={self.client_id}" if self.client_id else ""
        self.ws = await self.session.ws_connect(self.url + "/ws" + query)
        if feature_flags is not None:
            await self.ws.send_json({"type": "feature_flags", "data": feature_flags})
        return self

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def next(self, timeout: float = FRAME_TIMEOUT_SECONDS) -> dict[str, Any]:
        assert self.ws is not None
        message = await self.ws.receive(timeout=timeout)
        if message.type == aiohttp.WSMsgType.BINARY:
            binary = Binary.parse(message.data)
            frame = {"type": f"binary:{binary.event_type}", "data": binary}
        elif message.type == aiohttp.WSMsgType.TEXT:
            frame = json.loads(message.data)
        else:
            frame = {"type": "closed", "data": {"msg_type": message.type, "close_code": self.ws.close_code}}
        self.frames.append(frame)
        return frame

    async def until(self, frame_type: str, timeout: float = FRAME_TIMEOUT_SECONDS, **data: Any) -> list[dict]:
        """Frames up to and including the first of ``frame_type`` whose data has ``data``'s items."""
        start = len(self.frames)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - asyncio.get_running_loop().time()))
            if frame["type"] == "closed":
                raise ConnectionError(f"socket closed while waiting for {frame_type}: {frame}")
            if frame["type"] == frame_type and all(frame["data"].get(k) == v for k, v in data.items()):
                return self.frames[start:]

    async def run_done(self, prompt_id: str) -> list[dict[str, Any]]:
        """Frames until the run's end marker, ``executing`` with node null."""
        return await self.until("executing", node=None, prompt_id=prompt_id)

    async def silent(self, timeout: float = 0.3) -> bool:
        """True when nothing arrives within ``timeout`` (called once the server has finished what it sends)."""
        try:
            await self.next(timeout)
        except TimeoutError:
            return True
        return False


async def post_prompt(session: aiohttp.ClientSession, url: str, prompt: dict[str, Any],
                      client_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, **({"client_id": client_id} if client_id else {}), **extra}
    async with session.post(url + "/prompt", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return answer


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def trivial(color: int, prefix: str = "ComfyUI") -> dict[str, Any]:
    """EmptyImage 64x64 -> SaveImage, the prompt of recordings 01, 02, 10, 12 (a new color: not cached)."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


def slow(color: int, seconds: float, prefix: str = "slow") -> dict[str, Any]:
    """EmptyImage -> SlowPassImage (a progress report every 0.05 s) -> SaveImage: the sampler runs' stand-in."""
    prompt = trivial(color, prefix)
    prompt["3"] = {"class_type": "SlowPassImage", "inputs": {"image": ["1", 0], "seconds": seconds}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    return prompt
