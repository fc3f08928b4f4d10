"""A test node pack in ComfyUI's format: a node that takes its time, so tests can act on a run mid-flight.

Loaded by the e2e tests with ``COMFYGATE_NODE_PACKS=slow_nodes`` and this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import threading


class SlowPassImage:
    """Waits ``seconds``, then passes its image through unchanged."""

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
        # An Event wait, not time.sleep: the same blocking, but the idiom the project uses for pauses.
        threading.Event().wait(seconds)
        return (image,)


NODE_CLASS_MAPPINGS = {"SlowPassImage": SlowPassImage}
NODE_DISPLAY_NAME_MAPPINGS = {"SlowPassImage": "Slow pass (image)"}
