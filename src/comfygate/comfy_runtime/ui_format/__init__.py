"""ComfyUI UI-format workflows (what the editor saves) converted to API-format prompts.

Modules, in the order a document goes through them:

- :mod:`.document` reads and checks the document's shape (nodes, links as arrays or objects, subgraphs);
- :mod:`.widgets` maps each node's ``widgets_values`` to its widget inputs;
- :mod:`.resolve` follows links through reroutes, primitives, bypassed nodes and subgraph boundaries
  (:mod:`.bypass`, :mod:`.subgraphs`);
- :mod:`.convert` builds the prompt.
"""

from .convert import convert_ui_workflow, is_ui_workflow

__all__ = ["convert_ui_workflow", "is_ui_workflow"]
