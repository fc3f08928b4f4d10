"""Widget values: which entries of a node's ``widgets_values`` belong to which input.

The editor gives a node one widget per constant-valued input (INT, FLOAT, STRING, BOOLEAN, COMBO; not when the
schema sets ``forceInput``, but still with ``defaultInput``, which only shows the socket), in the order of its
schema (required inputs, then optional ones), and saves their values positionally in ``widgets_values``.
Some widgets it adds itself are saved there too but never sent to the server, so their slots are skipped:

- ``control_after_generate`` after an INT that declares it, or any INT named ``seed`` / ``noise_seed``
  unless it declares ``control_after_generate: false``;
- ``control_after_generate`` and ``control_filter_list`` after a COMBO that declares it;
- a ``refresh`` button after a COMBO whose options are fetched from a route with a refresh button;
- after the required inputs: ``audioUI`` on the audio loaders and savers, then the ``upload`` button of a
  node with an image/video/audio upload input.

Values after the last known widget (a newer node version, preview widgets) are ignored, as the editor does.
A missing value takes the schema default, else the editor's default for the type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..schemas import NodeSchema
from ..specs import InputSpec

__all__ = [
    "EDITOR_CAPTURED_TYPES",
    "WidgetSlot",
    "has_value_control",
    "is_widget",
    "map_widget_values",
    "widget_default",
    "widget_layout",
    "wire_value",
]

VALUE_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_INPUT_NAMES = frozenset({"seed", "noise_seed"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# The editor adds an audio player widget (saved as null) to these nodes' required inputs.
AUDIO_PLAYER_NODES = frozenset({
    "LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced",
})
EDITOR_DEFAULTS = {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}
# Widgets whose value the editor captures when it queues (a 3D viewport, a webcam frame): nothing saved in the
# workflow can stand for it, and the editor adds widgets of its own around them.
EDITOR_CAPTURED_TYPES = frozenset({"LOAD_3D", "LOAD_3D_ANIMATION", "WEBCAM"})


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of ``widgets_values``: an input's value, or (spec None) a widget the server never sees."""

    name: str
    spec: InputSpec | None


def is_widget(spec: InputSpec) -> bool:
    """The editor shows a widget for constant-valued types, unless the schema forces a socket."""
    return spec.type in VALUE_WIDGET_TYPES and not spec.options.get("forceInput")


def has_value_control(spec: InputSpec) -> bool:
    """Whether the editor adds a ``control_after_generate`` widget after this input's widget."""
    declared = spec.options.get("control_after_generate")
    if spec.type == "INT":
        return bool(declared) if declared is not None else spec.name in SEED_INPUT_NAMES
    return spec.type == "COMBO" and bool(declared)


def _editor_slots_after(spec: InputSpec) -> list[WidgetSlot]:
    if not has_value_control(spec):
        slots = []
    elif spec.type == "COMBO":
        slots = [WidgetSlot("control_after_generate", None), WidgetSlot("control_filter_list", None)]
    else:
        slots = [WidgetSlot("control_after_generate", None)]
    remote = spec.options.get("remote")
    if isinstance(remote, Mapping) and remote.get("refresh_button"):
        slots.append(WidgetSlot("refresh", None))
    return slots


def widget_layout(schema: NodeSchema, *, with_forced_inputs: bool = False) -> list[WidgetSlot]:
    """The slots of ``widgets_values`` for this node type, in order.

    ``with_forced_inputs`` gives the layout older editors saved, with a (skipped) slot for each
    ``forceInput`` input of a widget type.
    """
    slots: list[WidgetSlot] = []
    specs = list(schema.inputs.values())
    required = [spec for spec in specs if spec.required]
    for spec in required:
        slots.extend(_slots_for(spec, with_forced_inputs))
    if schema.class_type in AUDIO_PLAYER_NODES:
        slots.append(WidgetSlot("audioUI", None))
    if any(spec.options.get(flag) is True for spec in required for flag in UPLOAD_FLAGS):
        slots.append(WidgetSlot("upload", None))
    for spec in specs:
        if not spec.required:
            slots.extend(_slots_for(spec, with_forced_inputs))
    return slots


def _slots_for(spec: InputSpec, with_forced_inputs: bool) -> list[WidgetSlot]:
    if is_widget(spec):
        return [WidgetSlot(spec.name, spec), *_editor_slots_after(spec)]
    if with_forced_inputs and spec.type in VALUE_WIDGET_TYPES:
        return [WidgetSlot(spec.name, None), *_editor_slots_after(spec)]
    return []


def widget_default(spec: InputSpec) -> tuple[bool, Any]:
    """``(True, value)`` the editor would give a fresh widget; ``(False, None)`` when it has none."""
    if "default" in spec.options:
        return True, spec.options["default"]
    if spec.type == "COMBO":
        return (True, spec.choices[0]) if spec.choices else (False, None)
    if spec.type in EDITOR_DEFAULTS:
        return True, EDITOR_DEFAULTS[spec.type]
    return False, None


def wire_value(value: Any) -> Any:
    """A widget value as the prompt carries it: a list would read as a link, so it travels boxed."""
    return {"__value__": value} if isinstance(value, list) else value


def map_widget_values(schema: NodeSchema, values: list[Any] | dict[str, Any] | None) -> dict[str, Any]:
    """``{input name: value}`` for every widget input of ``schema``, from a node's ``widgets_values``."""
    layout = widget_layout(schema)
    given: dict[str, Any] = {}
    if isinstance(values, dict):  # some node packs save widgets by name
        given = {slot.name: values[slot.name] for slot in layout if slot.spec is not None and slot.name in values}
    elif values:
        legacy = widget_layout(schema, with_forced_inputs=True)
        if len(values) == len(legacy) != len(layout):
            layout = legacy  # saved by an editor that kept values for forceInput inputs
        given = {slot.name: value for slot, value in zip(layout, values, strict=False) if slot.spec is not None}
    mapped: dict[str, Any] = {}
    for slot in layout:
        if slot.spec is None:
            continue
        if slot.name in given:
            mapped[slot.name] = given[slot.name]
        else:
            known, default = widget_default(slot.spec)
            if known:
                mapped[slot.name] = default
    return mapped
