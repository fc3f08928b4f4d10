"""The ``comfyui`` engine: a worker drives a real ComfyUI server, attached by URL or started as a child.

client.py     HTTP routes and the websocket (a background asyncio loop), frames routed by prompt id
follow.py     one prompt's state from its frames
run.py        one job: submit, follow, stop, collect outputs, clean up
prompt.py     input files uploaded and named in the prompt; refusals as WorkflowInvalid
outputs.py    the files and text of a history entry
reaper.py     cleanup after prompts a job gave up on, once ComfyUI is done with them
supervisor.py the child ComfyUI process
paths.py      ComfyUI's input/output/temp folders
"""

from .engine import ComfyUIEngine, ComfyUIStartError
from .paths import ComfyDirs
from .supervisor import Supervisor

__all__ = ["ComfyDirs", "ComfyUIEngine", "ComfyUIStartError", "Supervisor"]
