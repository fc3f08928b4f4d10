"""Input specifications of ComfyUI-style node classes, and the check of one constant value against one.

A node declares ``INPUT_TYPES() -> {"required": {name: (TYPE, {options})}, "optional": ..., "hidden": ...}``
where TYPE is a type name ("INT", "IMAGE", ...), a comma-separated set of them ("INT,FLOAT"), "*" (any type),
or a list of choices (a COMBO).

Two checks live here. :func:`check_value` is comfygate's strict check of a value a caller sends for an exposed
input: it never converts. :func:`widget_value` and :func:`types_match` follow ComfyUI's own prompt validation,
which converts constants (``int("5")``) and matches linked types by set overlap; validation uses them so a
prompt gets ComfyUI's verdict, and the executor uses :func:`widget_value` so a node receives what ComfyUI would
pass it. Neither changes the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .paths import unsafe_name_reason

__all__ = [
    "ANY_TYPE",
    "InputSpec",
    "check_value",
    "jsonable",
    "types_match",
    "widget_value",
]

# Types whose value is a constant in the workflow (a widget in ComfyUI), by the kind used in schemas.
WIDGET_KINDS = {"INT": "int", "FLOAT": "float", "STRING": "string", "BOOLEAN": "boolean"}
# Longer COMBO lists are summarised in messages rather than echoed back.
MAX_LISTED_CHOICES = 20
# The wildcard type: an input or output of type "*" links to anything.
ANY_TYPE = "*"
# The editor wraps a list-valued widget as {"__value__": [...]}, since a bare list would read as a link.
WRAPPED_VALUE_KEY = "__value__"


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "INT", "IMAGE", ...; "COMBO" when the node gave a list of choices
    options: Mapping[str, Any]
    required: bool
    choices: tuple[Any, ...] = ()
    raw: tuple[Any, ...] = field(default=(), compare=False)  # the node's own declaration, for error bodies

    @property
    def kind(self) -> str | None:
        """Schema kind of a constant-valued input; None for link-only types such as IMAGE."""
        if self.type == "COMBO":
            return "image" if self.options.get("image_upload") else "combo"
        return WIDGET_KINDS.get(self.type)

    @property
    def file_upload(self) -> bool:
        """A COMBO naming an uploaded file (``image_upload``, ``video_upload``, ...). Its choices are the files
        of one server's input folder, so they say nothing about another run's files."""
        return self.type == "COMBO" and any(
            isinstance(key, str) and key.endswith("_upload") and flag for key, flag in self.options.items()
        )


def jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so node declarations serialise as ComfyUI's JSON does."""
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def types_match(received: str, expected: str) -> bool:
    """Whether an output of type ``received`` may feed an input of type ``expected``, as ComfyUI decides it.

    Each side is a type or a comma-separated set of types ("INT,FLOAT"); they match when the sets overlap or
    when either holds "*". ComfyUI 0.3.64 itself matched "*" only through the node packs' ``str`` subclass
    whose ``__ne__`` always says equal; in a schema (``/object_info``) that type reads as plain "*".
    """
    if received == expected:
        return True
    received_types = {t.strip() for t in received.split(",")}
    expected_types = {t.strip() for t in expected.split(",")}
    if ANY_TYPE in received_types or ANY_TYPE in expected_types:
        return True
    return not received_types.isdisjoint(expected_types)


def widget_value(type_: str, value: Any) -> Any:
    """The value a node receives for constant ``value`` on an input of ``type_``, as ComfyUI computes it.

    ComfyUI unwraps ``{"__value__": v}`` and then calls ``int``, ``float``, ``str`` or ``bool`` on INT, FLOAT,
    STRING and BOOLEAN values: "5" becomes 5, 5.7 becomes 5, True becomes 1, None becomes "None" for a
    STRING, and any value is a valid BOOLEAN ("false" is true). Other types pass unchanged. Raises TypeError,
    ValueError or OverflowError when the conversion fails, as ComfyUI's does; unlike ComfyUI, a FLOAT must
    also be finite (NaN and infinities cannot be stored as JSON).
    """
    if isinstance(value, Mapping) and WRAPPED_VALUE_KEY in value:
        value = value[WRAPPED_VALUE_KEY]
    if type_ == "INT":
        return int(value)
    if type_ == "FLOAT":
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a finite number")
        return number
    if type_ == "STRING":
        return str(value)
    if type_ == "BOOLEAN":
        return bool(value)
    return value


def _describe_choices(choices: Sequence[Any]) -> str:
    if len(choices) > MAX_LISTED_CHOICES:
        return f"(list of length {len(choices)})"
    return str(list(choices))


def check_value(
    kind: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[Any] = (),
    check_range: bool = True,
) -> tuple[str, str] | None:
    """``(ComfyUI error type, message)`` when ``value`` does not fit, else None. Never converts the value.

    An int is a valid FLOAT; a bool is neither INT nor FLOAT; "5" is not an INT.
    """
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        return "invalid_input_type", f"Failed to convert an input value to a INT value: {value!r}"
    if kind == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "invalid_input_type", f"Failed to convert an input value to a FLOAT value: {value!r}"
        if not math.isfinite(value):
            return "invalid_input_type", f"FLOAT value must be finite, got {value!r}"
    if kind == "string" and not isinstance(value, str):
        return "invalid_input_type", f"Failed to convert an input value to a STRING value: {value!r}"
    if kind == "boolean" and not isinstance(value, bool):
        return "invalid_input_type", f"Failed to convert an input value to a BOOLEAN value: {value!r}"
    if kind == "image":
        if not isinstance(value, str):
            return "invalid_input_type", f"Image file name must be a string, got {value!r}"
        reason = unsafe_name_reason(value)
        if reason is not None:
            return "custom_validation_failed", f"Invalid image file name {value!r}: {reason}"
    if not check_range:
        return None
    if kind in ("int", "float"):
        if minimum is not None and value < minimum:
            return "value_smaller_than_min", f"Value {value} smaller than min of {minimum}"
        if maximum is not None and value > maximum:
            return "value_bigger_than_max", f"Value {value} bigger than max of {maximum}"
    if kind == "combo" and value not in choices:
        return "value_not_in_list", f"Value not in list: {value!r} not in {_describe_choices(choices)}"
    return None
