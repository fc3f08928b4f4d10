"""Errors of the diffusion library, under the runtime's one base class::

    ComfyRuntimeError
     └── ModelLoadError        a model file cannot be used: unreadable, unsafe pickle, unknown layout, missing keys
          └── ModelFileNotFound  no file of that name in the model folders (the message lists where it looked)
"""

from __future__ import annotations

from comfygate.comfy_runtime.errors import ComfyRuntimeError

__all__ = ["ModelFileNotFound", "ModelLoadError"]


class ModelLoadError(ComfyRuntimeError):
    """A model file cannot be loaded; the message names the file and what is wrong with it."""


class ModelFileNotFound(ModelLoadError):
    """No model file of that name in the folders of its kind; the message lists the folders searched."""
