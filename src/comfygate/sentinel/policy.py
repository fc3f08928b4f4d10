"""Which checks run on a workflow version's outputs, with what threshold, and what a failure does.

A policy is stored as JSON next to the workflow version::

    {
      "checks": {
        "decode":         {"enabled": true, "action": "reject"},
        "finite":         {"enabled": true, "action": "reject"},
        "blank":          {"enabled": true, "action": "reject", "threshold": 0.02},
        "noise":          {"enabled": true, "action": "reject", "threshold": 0.2},
        "clip_alignment": {"enabled": true, "action": "reject", "threshold": 0.2}
      },
      "prompt_input": "prompt"
    }

Keys left out take the defaults above (``from_dict({})`` is the default policy); keys that are not known,
values of the wrong type and thresholds outside 0..1 raise ``PolicyInvalid`` naming the key path. Nothing
is corrected silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from .errors import PolicyInvalid
from .verdict import Action

__all__ = ["Policy", "CheckSettings", "CHECK_NAMES", "ACTIONS", "DEFAULT_THRESHOLDS"]

# Order is the order checks run and are reported in.
CHECK_NAMES: tuple[str, ...] = ("decode", "finite", "blank", "noise", "clip_alignment")
ACTIONS: tuple[str, ...] = ("reject", "flag")
# Checks that compare a score with a threshold; decode and finite are yes/no and take none.
DEFAULT_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {"blank": 0.02, "noise": 0.2, "clip_alignment": 0.2}
)
DEFAULT_PROMPT_INPUT = "prompt"
_INTEGRITY_CHECKS = frozenset({"decode", "finite", "blank", "noise"})


@dataclass(frozen=True)
class CheckSettings:
    """How one check is run: whether at all, what its failure does, and its threshold (if it has one)."""

    enabled: bool = True
    action: Action = "reject"
    threshold: float | None = None

    def to_dict(self) -> dict:
        out: dict = {"enabled": self.enabled, "action": self.action}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


def _default_settings(name: str) -> CheckSettings:
    return CheckSettings(threshold=DEFAULT_THRESHOLDS.get(name))


class Policy:
    """Per-check settings plus the name of the exposed input that holds the prompt text for CLIP.

    Build one with ``from_dict`` (validates) or ``integrity_only``; ``to_dict`` gives the complete JSON
    form, which ``from_dict`` reads back unchanged.
    """

    __slots__ = ("_checks", "prompt_input")

    def __init__(self, checks: Mapping[str, CheckSettings], prompt_input: str | None = DEFAULT_PROMPT_INPUT):
        unknown = set(checks) - set(CHECK_NAMES)
        if unknown:
            raise PolicyInvalid("checks", f"unknown check(s) {sorted(unknown)}")
        self._checks = MappingProxyType(
            {name: checks.get(name, _default_settings(name)) for name in CHECK_NAMES}
        )
        self.prompt_input = prompt_input

    @property
    def checks(self) -> Mapping[str, CheckSettings]:
        return self._checks

    def settings(self, name: str) -> CheckSettings:
        return self._checks[name]

    def enabled(self, name: str) -> bool:
        return self._checks[name].enabled

    @property
    def uses_clip(self) -> bool:
        """Whether the prompt-alignment check is on, i.e. whether a CLIP model is worth loading."""
        return self._checks["clip_alignment"].enabled

    @classmethod
    def default(cls) -> Policy:
        return cls({})

    @classmethod
    def integrity_only(cls) -> Policy:
        """decode + finite + blank + noise with default settings; no CLIP, so no model and no prompt."""
        checks = {
            name: replace(_default_settings(name), enabled=name in _INTEGRITY_CHECKS) for name in CHECK_NAMES
        }
        return cls(checks, prompt_input=None)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Policy:
        """Parse a stored policy; ``None`` gives the default policy. Raises ``PolicyInvalid``."""
        if d is None:
            return cls.default()
        if not isinstance(d, Mapping):
            raise PolicyInvalid("", f"a policy must be a JSON object, got {type(d).__name__}")
        _reject_unknown_keys(d, {"checks", "prompt_input"}, "")

        prompt_input = d.get("prompt_input", DEFAULT_PROMPT_INPUT)
        if prompt_input is not None and not (isinstance(prompt_input, str) and prompt_input):
            raise PolicyInvalid("prompt_input", f"must be a non-empty string or null, got {prompt_input!r}")

        raw_checks = d.get("checks", {})
        if not isinstance(raw_checks, Mapping):
            raise PolicyInvalid("checks", f"must be an object, got {type(raw_checks).__name__}")
        checks = {}
        for name, raw in raw_checks.items():
            if name not in CHECK_NAMES:
                known = ", ".join(CHECK_NAMES)
                raise PolicyInvalid(f"checks.{name}", f"unknown check; known checks: {known}")
            checks[name] = _parse_check(name, raw)
        return cls(checks, prompt_input=prompt_input)

    def to_dict(self) -> dict:
        return {
            "checks": {name: settings.to_dict() for name, settings in self._checks.items()},
            "prompt_input": self.prompt_input,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # equality by value; not meant as a dict key

    def __repr__(self) -> str:
        return f"Policy({self.to_dict()!r})"


def _reject_unknown_keys(d: Mapping, allowed: set[str], path: str) -> None:
    for key in d:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise PolicyInvalid(where, f"unknown key; allowed keys: {', '.join(sorted(allowed))}")


def _parse_check(name: str, raw: object) -> CheckSettings:
    path = f"checks.{name}"
    if not isinstance(raw, Mapping):
        raise PolicyInvalid(path, f"must be an object, got {type(raw).__name__}")
    has_threshold = name in DEFAULT_THRESHOLDS
    allowed = {"enabled", "action", "threshold"} if has_threshold else {"enabled", "action"}
    _reject_unknown_keys(raw, allowed, path)
    settings = _default_settings(name)

    enabled = raw.get("enabled", settings.enabled)
    if not isinstance(enabled, bool):
        raise PolicyInvalid(f"{path}.enabled", f"must be true or false, got {enabled!r}")

    action = raw.get("action", settings.action)
    if action not in ACTIONS:
        raise PolicyInvalid(f"{path}.action", f"must be one of {', '.join(ACTIONS)}; got {action!r}")

    threshold = raw.get("threshold", settings.threshold)
    if has_threshold and not _is_unit_number(threshold):
        raise PolicyInvalid(f"{path}.threshold", f"must be a number between 0 and 1, got {threshold!r}")
    return CheckSettings(
        enabled=enabled, action=action, threshold=float(threshold) if threshold is not None else None
    )


def _is_unit_number(value: object) -> bool:
    # bool is an int subclass; `true` is not a threshold.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0.0 <= value <= 1.0
