"""A ComfyUI 0.3.64 stand-in for tests: a real server process on loopback that answers in the shapes and
orders recorded from ComfyUI (shared/reference/comfyui-0.3.64-protocol beside the checkout) and executes prompts with
comfygate's own executor.

Start one with :func:`standin_process` (a context manager) or :func:`start_standin`; :func:`make_install`
writes a fake ComfyUI install whose ``main.py`` starts it, for code that launches ComfyUI itself.
Test hooks (not in ComfyUI): ``POST /standin/drop_sockets`` cuts every websocket without a close frame;
``POST /standin/send_frames`` sends raw text and binary frames to every websocket (as custom nodes do).
"""

from .process import StandinProcess, make_install, standin_process, start_standin, wait_ready

__all__ = ["StandinProcess", "make_install", "standin_process", "start_standin", "wait_ready"]
