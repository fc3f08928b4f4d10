"""Input specifications of ComfyUI-style node classes, and the check of one constant value against one.

A node declares ``INPUT_TYPES() -> {"required": {name: (TYPE, {options})}, "optional": ..., "hidden": ...}``
where TYPE is a type name ("INT", "IMAGE", ...) or a list of choices (a COMBO).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .paths import unsafe_name_reason

__all__ = ["InputSpec", "check_value", "hidden_inputs", "input_specs", "jsonable"]

# Types whose value is a constant in the workflow (a widget in ComfyUI), by the kind used in schemas.
WIDGET_KINDS = {"INT": "int", "FLOAT": "float", "STRING": "string", "BOOLEAN": "boolean"}
# Longer COMBO lists are summarised in messages rather than echoed back.
MAX_LISTED_CHOICES = 20


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


def input_specs(node_class: type) -> dict[str, InputSpec]:
    """Required then optional inputs of ``node_class``, in declaration order."""
    declared = node_class.INPUT_TYPES()
    specs: dict[str, InputSpec] = {}
    for section in ("required", "optional"):
        for name, entry in declared.get(section, {}).items():
            type_, options = entry[0], (entry[1] if len(entry) > 1 else {})
            choices: tuple[Any, ...] = ()
            if isinstance(type_, list | tuple):
                type_, choices = "COMBO", tuple(type_)
            elif type_ == "COMBO":  # newer packs spell a COMBO as ("COMBO", {"options": [...]})
                choices = tuple(options.get("options", ()))
            specs[name] = InputSpec(name, type_, options, section == "required", choices, tuple(entry))
    return specs


def hidden_inputs(node_class: type) -> dict[str, str]:
    """Hidden inputs ``{argument name: hidden type}`` such as ``{"prompt": "PROMPT"}``."""
    return dict(node_class.INPUT_TYPES().get("hidden", {}))


def jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so node declarations serialise as ComfyUI's JSON does."""
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
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
