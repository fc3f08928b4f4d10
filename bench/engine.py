"""What the ``comfyui`` engine's bridge adds to a run, next to the built-in engine, in one session.

The trivial workflow (EmptyImage 64x64 -> SaveImage, a new colour on every run so nothing is cached) runs:

* ``builtin``: through BuiltinEngine.run (comfygate's executor in this process);
* ``comfyui``: through ComfyUIEngine.run attached to the ComfyUI stand-in (tests/comfyui_standin, the test
  double built from a real ComfyUI 0.3.64's recordings, started here as its own process on loopback);
* ``bare client``: the same stand-in driven by the least a client can do (one websocket, POST /prompt, frames
  until ``executing`` null, GET /history/{id}, GET /view): the stand-in's own time, the baseline.

"bridge adds" is the comfyui engine's p50 minus the bare client's p50: what the engine adds on top of the
server's own time (inputs, event routing, output collection, cleanup of ComfyUI's files and history).
Goal: at most 3 ms at p50. Run it as ``.venv/bin/python bench/engine.py``; it talks to 127.0.0.1 only and
stops the stand-in it started.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from deployment_loader import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))  # the ComfyUI stand-in is test code, not part of the package
from comfygate.comfy_runtime import create_registry
from comfygate.platform.engines import EngineJob
from comfygate.platform.engines.builtin import BuiltinEngine
from comfygate.platform.engines.comfyui import ComfyDirs, ComfyUIEngine
from comfyui_standin import standin_process  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


_runs = itertools.count(1)


def trivial_prompt() -> dict[str, Any]:
    # A new colour on every call, across engines: no node is served from a cache.
    colour = (next(_runs) * 2654435761) % 0xFFFFFF
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                         "color": colour}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}}}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(label: str, call: Callable[[int], None], runs: int, warmup: int, show: bool = True) -> list[float]:
    for run in range(warmup):
        call(run)
    times = []
    for run in range(warmup, warmup + runs):
        start = time.perf_counter()
        call(run)
        times.append((time.perf_counter() - start) * 1000)
    if show:
        print(f"{label:<14} p50 {percentile(times, 0.5):7.2f} ms   p95 {percentile(times, 0.95):7.2f} ms   "
              f"p99 {percentile(times, 0.99):7.2f} ms   ({runs} runs)", flush=True)
    return times


class BareClient:
    """The least a ComfyUI client does for one run, on its own event loop thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = uuid.uuid4().hex
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.done: dict[str, asyncio.Future[None]] = {}
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(30)

    async def _open(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}")
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = message.json()
            data = frame.get("data", {})
            if frame.get("type") == "executing" and data.get("node") is None:
                future = self.done.pop(data.get("prompt_id"), None)
                if future is not None:
                    future.set_result(None)

    async def _run(self, prompt: dict[str, Any]) -> bytes:
        prompt_id = uuid.uuid4().hex
        self.done[prompt_id] = self.loop.create_future()
        async with self.session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": self.client_id,
                                                                 "prompt_id": prompt_id}) as response:
            response.raise_for_status()
        await asyncio.wait_for(self.done[prompt_id], 30)
        async with self.session.get(f"{self.url}/history/{prompt_id}") as response:
            entry = (await response.json())[prompt_id]
        image = entry["outputs"]["2"]["images"][0]
        async with self.session.get(f"{self.url}/view", params=image) as response:
            return await response.read()

    def run(self, prompt: dict[str, Any]) -> bytes:
        return asyncio.run_coroutine_threadsafe(self._run(prompt), self.loop).result(60)

    def close(self) -> None:
        async def close() -> None:
            await self.ws.close()
            await self.session.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    builtin = BuiltinEngine(create_registry(), cache_entries=64)

    def run_builtin(run: int) -> None:
        result = builtin.run(EngineJob(run_id=f"b{run}", prompt=trivial_prompt()))
        assert result.outputs[0].data.startswith(PNG_MAGIC)

    with tempfile.TemporaryDirectory(prefix="cg-bench-engine-") as tmp:
        base = Path(tmp)
        with standin_process(base) as server:
            url = server.url
            engine = ComfyUIEngine(url, dirs=ComfyDirs.of(base, []))
            engine.start()
            bare = BareClient(url)

            def run_comfyui(run: int) -> None:
                result = engine.run(EngineJob(run_id=f"c{run}", prompt=trivial_prompt()))
                assert result.outputs[0].data.startswith(PNG_MAGIC)

            def run_bare(run: int) -> None:
                assert bare.run(trivial_prompt()).startswith(PNG_MAGIC)

            print(f"trivial run (EmptyImage 64x64 -> SaveImage), {args.runs} sequential runs after "
                  f"{args.warmup} warm-up, engine call until the PNG bytes are in hand:")
            measure("builtin", run_builtin, args.runs, args.warmup)
            # Interleaved in blocks, so drift of the machine does not favour one of the two.
            comfy: list[float] = []
            bare_times: list[float] = []
            block = max(1, args.runs // 4)
            for first in range(0, args.runs, block):
                count = min(block, args.runs - first)
                warmup = args.warmup if first == 0 else 2
                comfy += measure("comfyui", run_comfyui, count, warmup, show=False)
                bare_times += measure("bare client", run_bare, count, warmup, show=False)
            engine.close()
            bare.close()
    comfy_p50, bare_p50 = percentile(comfy, 0.5), percentile(bare_times, 0.5)
    print(f"comfyui engine  p50 {comfy_p50:.2f} ms  p95 {percentile(comfy, 0.95):.2f} ms  ({len(comfy)} runs, "
          "interleaved with the bare client's in blocks)")
    print(f"bare client     p50 {bare_p50:.2f} ms  p95 {percentile(bare_times, 0.95):.2f} ms  "
          "(the stand-in's own time)")
    print(f"bridge adds     p50 {comfy_p50 - bare_p50:+.2f} ms  p95 "
          f"{percentile(comfy, 0.95) - percentile(bare_times, 0.95):+.2f} ms   (goal: at most +3 ms at p50)")


if __name__ == "__main__":
    main()
