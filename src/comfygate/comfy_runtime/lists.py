"""List semantics, as in ComfyUI: every input and output travels as a list of items.

A constant is a list of one item; an output slot holds one item per call of its node. A node without
``INPUT_IS_LIST`` is called once per index of its longest input list, shorter lists repeating their last item;
with it, it is called once with the whole lists. An output slot flagged in ``OUTPUT_IS_LIST`` gets a list from
each call and the lists are joined; any other slot collects one item per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EmptyListInput", "LinkedItems", "call_arguments", "merge_outputs", "merge_ui"]


class EmptyListInput(ValueError):
    """A node that runs once per item got an input list with no items."""


def call_arguments(inputs: Mapping[str, Sequence[Any]], input_is_list: bool) -> list[dict[str, Any]]:
    """The keyword arguments of each call of a node, from its inputs as lists."""
    if input_is_list:
        return [{name: list(items) for name, items in inputs.items()}]
    if not inputs:
        return [{}]
    empty = sorted(name for name, items in inputs.items() if len(items) == 0)
    if empty:
        raise EmptyListInput(f"input {empty[0]!r} is an empty list: the output linked to it produced no items")
    calls = max(len(items) for items in inputs.values())
    return [{name: items[min(index, len(items) - 1)] for name, items in inputs.items()} for index in range(calls)]


class LinkedItems(list):
    """The items of the output an expansion result links to; they join the slot whatever its list flag."""


def merge_outputs(results: Sequence[Sequence[Any]], output_is_list: Sequence[bool]) -> tuple[list[Any], ...]:
    """One list of items per output slot from the result tuples of all calls."""
    slots: tuple[list[Any], ...] = tuple([] for _ in output_is_list)
    for result in results:
        for slot, (value, is_list) in enumerate(zip(result, output_is_list, strict=True)):
            if isinstance(value, LinkedItems):
                slots[slot].extend(value)
            elif is_list:
                if not isinstance(value, list | tuple):
                    raise TypeError(f"output {slot} is declared in OUTPUT_IS_LIST but the node returned "
                                    f"{type(value).__name__}, not a list")
                slots[slot].extend(value)
            else:
                slots[slot].append(value)
    return slots


def merge_ui(uis: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """UI results of all calls joined key by key (each value is a list of records)."""
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list | tuple) else [value])
    return merged
