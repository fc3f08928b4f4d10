"""Links between node slots, as the editor saves them: arrays or objects.

The root graph of older saves holds ``[id, origin_id, origin_slot, target_id, target_slot, type]`` arrays;
subgraphs (and newer root graphs) hold objects with those keys. Ids are kept as strings, as the API prompt
writes node ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import WorkflowFormatError

__all__ = ["UiLink", "fail", "read_id", "read_links", "read_slot_index", "read_slot_type"]

LINK_FIELDS = ("id", "origin_id", "origin_slot", "target_id", "target_slot")


@dataclass(frozen=True)
class UiLink:
    id: str
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


def fail(where: str, message: str) -> WorkflowFormatError:
    return WorkflowFormatError(f"{where}: {message}")


def read_id(value: Any, where: str, what: str) -> str:
    # bool is an int in Python; an id of true/false is a broken document, not node 1/0.
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise fail(where, f"{what} must be an integer or a non-empty string, got {value!r}")
    return str(value)


def read_slot_index(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(where, f"{what} must be a non-negative integer, got {value!r}")
    return value


def read_slot_type(value: Any) -> str:
    # Slot types are strings; "*" and "" mean any. Some old editors wrote 0 or null for "any".
    return value if isinstance(value, str) else "*"


def _read_link(raw: Any, where: str) -> UiLink:
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        if len(raw) < 5:
            raise fail(where, f"link {raw!r} must be [id, origin_id, origin_slot, target_id, target_slot, type]")
        values = dict(zip(LINK_FIELDS, raw[:5], strict=True))
        link_type = raw[5] if len(raw) > 5 else "*"
    elif isinstance(raw, Mapping):
        missing = [key for key in LINK_FIELDS if key not in raw]
        if missing:
            raise fail(where, f"link {raw.get('id', '?')!r} lacks {', '.join(missing)}")
        values = {key: raw[key] for key in LINK_FIELDS}
        link_type = raw.get("type", "*")
    else:
        raise fail(where, f"each link must be an array or an object, got {type(raw).__name__}")
    link_id = read_id(values["id"], where, "link id")
    at = f"{where}, link {link_id}"
    return UiLink(
        id=link_id,
        origin_id=read_id(values["origin_id"], at, "origin_id"),
        origin_slot=read_slot_index(values["origin_slot"], at, "origin_slot"),
        target_id=read_id(values["target_id"], at, "target_id"),
        target_slot=read_slot_index(values["target_slot"], at, "target_slot"),
        type=read_slot_type(link_type),
    )


def read_links(raw: Any, where: str) -> dict[str, UiLink]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):  # very old editors kept links as {id: link}
        raw = list(raw.values())
    if not isinstance(raw, list):
        raise fail(where, f"'links' must be a list, got {type(raw).__name__}")
    links: dict[str, UiLink] = {}
    for entry in raw:
        if entry is None:  # deleted links leave holes in old saves
            continue
        link = _read_link(entry, where)
        links[link.id] = link
    return links
