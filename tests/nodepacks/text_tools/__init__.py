"""A test node pack in ComfyUI's package form: the nodes live in a submodule, reached by relative imports.

It also uses ComfyUI's list semantics (OUTPUT_IS_LIST, INPUT_IS_LIST).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
