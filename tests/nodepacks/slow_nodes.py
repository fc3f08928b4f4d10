"""A test node pack in ComfyUI's format: a node that takes its time, so tests can act on a run mid-flight.

Loaded by the e2e tests with ``COMFYGATE_NODE_PACK_DIRS`` naming this folder.
"""

from __future__ import annotations

import threading

from comfygate.comfy_runtime.progress import ProgressBar

STEP_SECONDS = 0.05


class SlowPassImage:
    """Waits ``seconds`` in short steps, reporting each like a sampler, then passes its image through unchanged.

    Reporting progress is what lets a cancel stop it mid-way, as it stops a sampler at its next step.
    """

    CATEGORY = "testing"
    DESCRIPTION = "Passes the image through after a delay (tests only)."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "pass_through"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0, "step": 0.1}),
            }
        }

    def pass_through(self, image, seconds: float):
        steps = max(1, round(seconds / STEP_SECONDS))
        progress = ProgressBar(steps)
        pause = threading.Event()  # an Event wait: the same blocking as sleep, the idiom the project uses
        for _ in range(steps):
            pause.wait(seconds / steps)
            progress.update(1)
        return (image,)


NODE_CLASS_MAPPINGS = {"SlowPassImage": SlowPassImage}
NODE_DISPLAY_NAME_MAPPINGS = {"SlowPassImage": "Slow pass (image)"}
