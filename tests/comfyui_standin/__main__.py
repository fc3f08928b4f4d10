"""``python -m comfyui_standin``: start the stand-in like ``python main.py`` starts ComfyUI.

Folders default to input/, output/, temp/ and models/ under ``--base-directory`` (else the folder of a fake
install's main.py, else the current directory). As in ComfyUI, ``--temp-directory D`` means ``D/temp``, and the temp
folder is wiped at start. Other ComfyUI flags (``--cpu``, ``--preview-method X``, ...) are accepted and ignored.
Node packs: comfygate's built-in nodes, the stand-in pack, tests/nodepacks, ``<base>/custom_nodes`` when it
exists, and each ``--node-pack-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
from pathlib import Path

from aiohttp import web

from comfygate.comfy_runtime import load_object_info

from .files import Folders
from .nodes import StandinState, build_registry
from .server import Settings, create_app

TEST_NODE_PACKS = Path(__file__).resolve().parent.parent / "nodepacks"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="comfyui_standin", description="A ComfyUI 0.3.64 stand-in for tests.",
                                     allow_abbrev=False)  # ComfyUI flags we ignore must not match ours by prefix
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188, help="0 picks a free port (printed at start)")
    parser.add_argument("--base-directory", type=Path, default=None)
    parser.add_argument("--input-directory", type=Path, default=None)
    parser.add_argument("--output-directory", type=Path, default=None)
    parser.add_argument("--temp-directory", type=Path, default=None)
    parser.add_argument("--history-lag-ms", type=int, default=0,
                        help="wait this long between execution_success and writing the history entry")
    parser.add_argument("--object-info", type=Path, default=None,
                        help="serve this /object_info document and validate prompts against it")
    parser.add_argument("--node-pack-dir", type=Path, action="append", default=[],
                        help="another custom_nodes-style folder of node packs (repeatable)")
    args, _ignored = parser.parse_known_args(argv)
    return args


def make_settings(args: argparse.Namespace, argv: list[str], default_base: Path | None = None) -> Settings:
    base = (args.base_directory or default_base or Path.cwd()).absolute()
    temp = args.temp_directory.absolute() / "temp" if args.temp_directory else base / "temp"
    shutil.rmtree(temp, ignore_errors=True)  # previews of an earlier run are gone, as after a ComfyUI restart
    folders = Folders.create(base, args.input_directory, args.output_directory, temp)
    packs = [TEST_NODE_PACKS, *([base / "custom_nodes"] if (base / "custom_nodes").is_dir() else []),
             *args.node_pack_dir]
    state = StandinState(folders)
    registry = build_registry(state, packs)
    served = load_object_info(str(args.object_info)) if args.object_info else None
    return Settings(state, registry, served, args.history_lag_ms, argv)


async def serve(args: argparse.Namespace, settings: Settings) -> None:
    runner = web.AppRunner(await create_app(settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.listen, args.port)
    await site.start()
    port = runner.addresses[0][1] if args.port == 0 else args.port
    print(f"To see the GUI go to: http://{args.listen}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None, default_base: Path | None = None) -> None:
    """``default_base``: the install folder when --base-directory is not given (a fake install's main.py passes
    its own folder, as ComfyUI's base is where main.py lies); else the current directory."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = make_settings(args, [Path(sys.argv[0]).name, *argv], default_base)
    print(f"comfyui_standin: ComfyUI 0.3.64 stand-in, base directory {settings.state.folders.base}", flush=True)
    asyncio.run(serve(args, settings))


if __name__ == "__main__":
    main()
