"""Bypassed nodes (mode 4): which input an output passes through, chosen by slot type as the editor does."""

from __future__ import annotations

from collections.abc import Sequence

from .document import UiInput, UiOutput

__all__ = ["bypass_input_index", "types_compatible"]

ANY_TYPES = frozenset({"", "*"})


def types_compatible(a: str, b: str) -> bool:
    """Whether a slot of type ``a`` may connect to one of type ``b``: ``*`` matches anything, and a
    comma-separated type is a set that matches when one member does (case does not matter)."""
    if a in ANY_TYPES or b in ANY_TYPES or a == b:
        return True
    a, b = a.lower(), b.lower()
    if "," not in a and "," not in b:
        return a == b
    return any(types_compatible(x, y) for x in a.split(",") for y in b.split(","))


def bypass_input_index(inputs: Sequence[UiInput], outputs: Sequence[UiOutput], slot: int, wanted: str) -> int | None:
    """The input whose link a bypassed node's output ``slot`` forwards to a consumer of type ``wanted``.

    The input at the same index wins when its type fits both the output and the consumer; then the first
    input of exactly the consumer's type; then the first that fits both. None when no input fits.
    """
    if wanted in ANY_TYPES:
        if slot < len(inputs):
            return slot
        return 0 if inputs else None
    output_type = outputs[slot].type if slot < len(outputs) else wanted
    if slot < len(inputs):
        same = inputs[slot].type
        if types_compatible(same, output_type) and types_compatible(same, wanted):
            return slot
    for index, candidate in enumerate(inputs):
        if candidate.type == wanted:
            return index
    for index, candidate in enumerate(inputs):
        if types_compatible(candidate.type, output_type) and types_compatible(candidate.type, wanted):
            return index
    return None
