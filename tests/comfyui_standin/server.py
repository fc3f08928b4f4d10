"""The stand-in's HTTP routes, each also under ``/api`` as in ComfyUI, answering in ComfyUI 0.3.64's shapes.

Bodies, status codes and headers follow the recordings: empty 200s carry no Content-Type, a body that is not
JSON (or a prompt that is a string or list) fails with aiohttp's own 500 page, as ComfyUI's handlers do.
Test hooks that a real ComfyUI does not have live under ``/standin/`` only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from comfygate.comfy_runtime import Executor, NodeRegistry, NodeSchemas

from . import files
from .execution import Worker
from .frames import SERVER_FEATURES, SocketHub
from .nodes import StandinState
from .prompt_queue import FreeRequest, PromptQueue, QueueItem
from .validation import check_prompt

__all__ = ["Settings", "create_app"]

COMFYUI_VERSION = "0.3.64"
FRONTEND_VERSION = "1.27.10"
TEMPLATES_VERSION = "0.1.95"
MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"]
MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_UPLOAD_BYTES = SERVER_FEATURES["max_upload_size"]


@dataclass
class Settings:
    state: StandinState
    registry: NodeRegistry
    served_schemas: NodeSchemas | None = None  # --object-info: what /object_info shows and POST /prompt checks
    history_lag_ms: int = 0
    argv: list[str] = field(default_factory=lambda: list(sys.argv))


class Standin:
    """The routes and what they share: the queue, the sockets, the execution thread."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.folders = settings.state.folders
        self.hub = SocketHub(loop)
        self.queue = PromptQueue(on_change=self._status)
        self.number = 0  # the next prompt's number; every POST /prompt with a JSON body uses one, as in ComfyUI
        self.worker = Worker(self.queue, Executor(settings.registry), self.hub, settings.state,
                             settings.history_lag_ms)

    def _status(self, remaining: int) -> None:
        self.hub.send("status", {"status": {"exec_info": {"queue_remaining": remaining}}})

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/ws", self.ws), ("GET", "/prompt", self.get_prompt), ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.interrupt), ("POST", "/free", self.free),
            ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("GET", "/view", self.view), ("POST", "/upload/image", self.upload_image),
            ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/object_info", self.object_info), ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/system_stats", self.system_stats), ("GET", "/features", self.features),
            ("GET", "/embeddings", self.embeddings), ("GET", "/extensions", self.extensions),
            ("GET", "/models", self.models), ("GET", "/models/{folder}", self.model_files),
        ]

    # --- websocket and prompts -------------------------------------------------------------------------------

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        sid = request.query.get("clientId") or uuid.uuid4().hex
        return await self.hub.serve(request, sid, self.queue.remaining)

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue.remaining}})

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()  # not JSON: the exception makes aiohttp's 500, as in ComfyUI
        number: int | float = self.number
        self.number += 1
        if not isinstance(body, dict) or "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        if "number" in body:
            number = float(body["number"])
        elif body.get("front"):
            number = -number
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        schemas = self.settings.served_schemas or self.settings.registry
        verdict = await asyncio.to_thread(check_prompt, body["prompt"], schemas, self.folders.input)
        if verdict.error is not None:
            return web.json_response({"error": verdict.error, "node_errors": verdict.node_errors}, status=400)
        extra_data = dict(body["extra_data"]) if isinstance(body.get("extra_data"), dict) else {}
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        self.queue.put(QueueItem(number, prompt_id, body["prompt"], extra_data, verdict.outputs, verdict.run_prompt))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors})

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.snapshot())

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.clear()
        if isinstance(body.get("delete"), list):
            self.queue.delete(str(prompt_id) for prompt_id in body["delete"])
        return web.Response()

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if not prompt_id or prompt_id in self.queue.running_ids():  # another prompt's id does nothing
            self.worker.interrupt.set()
        return web.Response()

    async def free(self, request: web.Request) -> web.Response:
        body = await request.json()
        request_free = FreeRequest(bool(body.get("unload_models")), bool(body.get("free_memory")))
        if request_free.unload_models or request_free.free_memory:
            self.queue.request_free(request_free)
        return web.Response()

    # --- history -----------------------------------------------------------------------------------------

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = request.query.get("offset")
        return web.json_response(self.queue.history_page(int(max_items) if max_items is not None else None,
                                                         int(offset) if offset is not None else None))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.history_item(request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.clear_history()
        if isinstance(body.get("delete"), list):
            self.queue.delete_history(str(prompt_id) for prompt_id in body["delete"])
        return web.Response()

    # --- files ---------------------------------------------------------------------------------------------

    async def view(self, request: web.Request) -> web.StreamResponse:
        return await asyncio.to_thread(files.view, self.folders, dict(request.query))

    async def upload_image(self, request: web.Request) -> web.Response:
        return await files.upload(self.folders, request, mask=False)

    async def upload_mask(self, request: web.Request) -> web.Response:
        return await files.upload(self.folders, request, mask=True)

    # --- node catalogue and server info ----------------------------------------------------------------------

    def _catalogue(self) -> dict[str, Any]:
        if self.settings.served_schemas is not None:
            return self.settings.served_schemas.object_info()
        info = self.settings.registry.schemas().object_info()
        loader = info.get("LoadImage")
        if loader is not None:  # its list is the top-level images of input/, as ComfyUI lists them
            loader = json.loads(json.dumps(loader))
            loader["input"]["required"]["image"][0] = sorted(
                p.name for p in self.folders.input.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            # comfygate's hidden INPUT_DIR input is not ComfyUI's: LoadImage has no hidden inputs there.
            loader["input"].pop("hidden", None)
            loader["input_order"].pop("hidden", None)
            info = {**info, "LoadImage": loader}
        return info

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self._catalogue))

    async def object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        catalogue = await asyncio.to_thread(self._catalogue)
        return web.json_response({name: catalogue[name]} if name in catalogue else {})

    async def system_stats(self, request: web.Request) -> web.Response:
        import torch

        memory = psutil.virtual_memory()
        return web.json_response({
            "system": {"os": os.name, "ram_total": memory.total, "ram_free": memory.available,
                       "comfyui_version": COMFYUI_VERSION, "required_frontend_version": FRONTEND_VERSION,
                       "installed_templates_version": TEMPLATES_VERSION,
                       "required_templates_version": TEMPLATES_VERSION, "python_version": sys.version,
                       "pytorch_version": torch.__version__, "embedded_python": False,
                       "argv": self.settings.argv},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": memory.total,
                         "vram_free": memory.available, "torch_vram_total": memory.total,
                         "torch_vram_free": memory.available}]})

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(dict(SERVER_FEATURES))

    async def embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([Path(name).stem for name in self._model_files("embeddings")])

    async def extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])  # the stand-in serves no frontend

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def model_files(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self._model_files(folder))

    def _model_files(self, folder: str) -> list[str]:
        root = self.folders.models / folder
        extensions = {".yaml"} if folder == "configs" else MODEL_EXTENSIONS
        if not root.is_dir():
            return []
        return sorted(str(path.relative_to(root)).replace(os.sep, "/") for path in root.rglob("*")
                      if path.is_file() and path.suffix.lower() in extensions)

    # --- test hooks (not in ComfyUI) ---------------------------------------------------------------------------

    async def drop_sockets(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": self.hub.drop_all()})

    async def send_frames(self, request: web.Request) -> web.Response:
        """Sends raw frames to every socket, as custom nodes send frames of their own making:
        ``{"text": [str, ...], "binary": [hex, ...]}``."""
        body = await request.json()
        for text in body.get("text") or ():
            self.hub.send_raw(text)
        for hex_frame in body.get("binary") or ():
            self.hub.send_binary(bytes.fromhex(hex_frame))
        return web.Response()


async def create_app(settings: Settings) -> web.Application:
    """The aiohttp application; the execution thread and the frame publisher start with it."""
    standin = Standin(settings, asyncio.get_running_loop())
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
    for method, path, handler in standin.routes():
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    app.router.add_post("/standin/drop_sockets", standin.drop_sockets)
    app.router.add_post("/standin/send_frames", standin.send_frames)

    async def background(app: web.Application):  # type: ignore[no-untyped-def]
        publisher = asyncio.create_task(standin.hub.publish())
        standin.worker.start()
        yield
        publisher.cancel()

    app.cleanup_ctx.append(background)
    return app
