"""Which checks run on a workflow version's outputs, with which bands, and how a run retries and ranks.

A policy is stored as JSON with the workflow version (format v2)::

    {
      "checks": {
        "decode": "reject",                    yes/no checks: "reject" | "review" | "off"
        "finite": "reject",
        "blank": {"reject": 0.02},             scored checks: "off" | {"reject": T?, "review": T?}
        "noise": {"reject": 0.2},
        "silence": {"reject": -60.0},          audio only: RMS level in dBFS (-150..0)
        "duplicate": {"reject": 2, "window": 200},
        "clip_alignment": {"reject": 0.2},
        "aesthetic": "off",
        "nsfw": "off",
        "blur": {"flag": 10.0},                soft checks: "off" | {"flag": T}; never reject or hold
        "colour_entropy": {"flag": 1.0}
      },
      "prompt_input": "prompt", "retries": 0, "best_of": 1, "rank_by": null, "review_sample_rate": 0.0
    }

A threshold T is a number, or ``{"percentile": P, "min_samples": N, "fallback": F}``: the P-th percentile of
the endpoint's recent scores for that check (for nsfw, where lower is better, the (100-P)-th), or F while
fewer than N (default 50) scores are known. ``Policy.resolve(recent_scores)`` turns every threshold into a
number and records where each came from. For a check where higher is better, a score below the reject
threshold rejects, else a score below the review threshold holds the output for review; nsfw is the mirror.

Checks left out take the defaults above (``from_dict({})`` is the default policy); a check that is given
replaces its default whole. Unknown keys, wrong types and out-of-range numbers raise ``PolicyInvalid`` naming
the dotted key path. Nothing is corrected silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from .check_specs import CHECK_NAMES, CHECKS, CheckSpec
from .errors import PolicyInvalid

__all__ = [
    "Policy",
    "ResolvedPolicy",
    "CheckConfig",
    "ResolvedCheck",
    "Percentile",
    "DEFAULT_POLICY",
]

Action = Literal["reject", "review"]

DEFAULT_POLICY: Mapping = MappingProxyType({
    "checks": MappingProxyType({
        "decode": "reject",
        "finite": "reject",
        "blank": {"reject": 0.02},
        "noise": {"reject": 0.2},
        # Audio only: an RMS level below -60 dBFS is silence (or a hiss far below any content).
        "silence": {"reject": -60.0},
        # An exact or near-exact repeat of a *different* request's output.
        "duplicate": {"reject": 2, "window": 200},
        # Reports not_run when no CLIP model is configured or the run has no prompt text.
        "clip_alignment": {"reject": 0.2},
        "aesthetic": "off",
        "nsfw": "off",
        "blur": {"flag": 10.0},
        "colour_entropy": {"flag": 1.0},
    }),
    "prompt_input": "prompt",
    "retries": 0,
    "best_of": 1,
    "rank_by": None,
    "review_sample_rate": 0.0,
})
_INTEGRITY_CHECKS = ("decode", "finite", "blank", "noise", "silence")
_TOP_KEYS = ("checks", "prompt_input", "retries", "best_of", "rank_by", "review_sample_rate")
_V1_KEYS = ("enabled", "action", "threshold")
_V1_MESSAGE = 'policy format changed: use "reject"/"review" bands (e.g. {"reject": 0.02}) or "off"'
# min_samples: the platform reads the scores of the last 1000 runs, so a larger count could never resolve.
_MAX_RETRIES, _MAX_BEST_OF, _MAX_WINDOW, _MAX_MIN_SAMPLES = 10, 8, 10_000, 1000


@dataclass(frozen=True)
class Percentile:
    """A threshold taken from the endpoint's recent scores, with a fixed fallback while they are few."""

    percentile: float
    fallback: float
    min_samples: int = 50

    def to_dict(self) -> dict:
        return {"percentile": self.percentile, "min_samples": self.min_samples, "fallback": self.fallback}


@dataclass(frozen=True)
class CheckConfig:
    """One check under a policy: ``action`` for yes/no checks, ``bands`` (band -> threshold) for the others.

    Off is ``action=None`` (yes/no) or no bands (scored, soft). ``window`` is how many recent outputs the
    duplicate check compares with (0 for other checks).
    """

    name: str
    action: Action | None = None
    bands: Mapping[str, float | Percentile] = field(default_factory=dict)
    window: int = 0

    @property
    def spec(self) -> CheckSpec:
        return CHECKS[self.name]

    @property
    def on(self) -> bool:
        return self.action is not None if self.spec.kind == "yesno" else bool(self.bands)

    def to_json(self) -> str | dict:
        if not self.on:
            return "off"
        if self.spec.kind == "yesno":
            assert self.action is not None
            return self.action
        out: dict = {
            band: threshold.to_dict() if isinstance(threshold, Percentile) else threshold
            for band, threshold in self.bands.items()
        }
        if self.name == "duplicate":
            out["window"] = self.window
        return out


@dataclass(frozen=True)
class ResolvedCheck:
    """A check with every threshold a number: ``thresholds`` and ``sources`` are keyed by band."""

    name: str
    on: bool
    action: Action | None
    thresholds: Mapping[str, float]
    sources: Mapping[str, str]
    window: int


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy. Build one with ``from_dict`` (or ``default`` / ``integrity_only``).

    ``to_dict`` gives the complete normalised JSON form, which ``from_dict`` reads back equal.
    """

    checks: Mapping[str, CheckConfig]
    prompt_input: str | None
    retries: int
    best_of: int
    rank_by: str | None  # as written; None means "choose automatically" (see rank_by_check)
    review_sample_rate: float

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Policy:
        return cls.from_dict({})

    @classmethod
    def integrity_only(cls) -> Policy:
        """decode, finite, blank, noise and silence with their defaults; every other check off; no prompt
        input."""
        checks = {name: "off" for name in CHECK_NAMES if name not in _INTEGRITY_CHECKS}
        return cls.from_dict({"checks": checks, "prompt_input": None})

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Policy:
        """Parse a stored or submitted policy; ``None`` gives the default. Raises ``PolicyInvalid``."""
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise PolicyInvalid("", f"a policy must be a JSON object, got {type(d).__name__}")
        _refuse_unknown_keys(d, _TOP_KEYS, "")

        raw_checks = d.get("checks", {})
        if not isinstance(raw_checks, Mapping):
            raise PolicyInvalid("checks", f"must be an object, got {type(raw_checks).__name__}")
        for name in raw_checks:
            if name not in CHECKS:
                raise PolicyInvalid(f"checks.{name}", f"unknown check; known checks: {', '.join(CHECK_NAMES)}")
        defaults = DEFAULT_POLICY["checks"]
        checks = {
            name: _parse_check(CHECKS[name], raw_checks[name] if name in raw_checks else defaults[name])
            for name in CHECK_NAMES
        }

        prompt_input = d.get("prompt_input", DEFAULT_POLICY["prompt_input"])
        if prompt_input is not None and not (isinstance(prompt_input, str) and prompt_input):
            raise PolicyInvalid("prompt_input", f"must be a non-empty string or null, got {_show(prompt_input)}")
        retries = _integer(d.get("retries", DEFAULT_POLICY["retries"]), "retries", 0, _MAX_RETRIES)
        best_of = _integer(d.get("best_of", DEFAULT_POLICY["best_of"]), "best_of", 1, _MAX_BEST_OF)
        rate = _number(d.get("review_sample_rate", DEFAULT_POLICY["review_sample_rate"]), "review_sample_rate",
                       0.0, 1.0)
        rank_by = d.get("rank_by", DEFAULT_POLICY["rank_by"])
        if rank_by is not None:
            _check_rank_by(rank_by, checks)
        return cls(MappingProxyType(checks), prompt_input, retries, best_of, rank_by, rate)

    def to_dict(self) -> dict:
        return {
            "checks": {name: config.to_json() for name, config in self.checks.items()},
            "prompt_input": self.prompt_input,
            "retries": self.retries,
            "best_of": self.best_of,
            "rank_by": self.rank_by,
            "review_sample_rate": self.review_sample_rate,
        }

    # ---- what the gate and the platform ask -----------------------------------------------------------

    def check(self, name: str) -> CheckConfig:
        return self.checks[name]

    def on(self, name: str) -> bool:
        return self.checks[name].on

    @property
    def rank_by_check(self) -> str | None:
        """The check whose score ranks passing attempts for best_of: ``rank_by`` when given, else aesthetic
        when on, else clip_alignment when on, else None."""
        if self.rank_by is not None:
            return self.rank_by
        return next((name for name in ("aesthetic", "clip_alignment") if self.on(name)), None)

    @property
    def duplicate_window(self) -> int:
        """How many recent outputs of the endpoint the duplicate check compares with (0 when it is off)."""
        duplicate = self.checks["duplicate"]
        return duplicate.window if duplicate.on else 0

    @property
    def uses_clip(self) -> bool:
        """Whether any check on needs CLIP image embeddings (clip_alignment, aesthetic, nsfw)."""
        return any(self.on(name) for name in CHECK_NAMES if CHECKS[name].uses_clip)

    @property
    def uses_aesthetic(self) -> bool:
        return self.on("aesthetic")

    @property
    def uses_nsfw(self) -> bool:
        return self.on("nsfw")

    @property
    def percentile_checks(self) -> frozenset[str]:
        """Checks on whose thresholds come from recent scores: resolving them needs the endpoint's history."""
        return frozenset(
            name for name, config in self.checks.items()
            if config.on and any(isinstance(t, Percentile) for t in config.bands.values())
        )

    def resolve(self, recent_scores: Mapping[str, Sequence[float | None]] | None = None) -> ResolvedPolicy:
        """Every threshold as a number, using ``recent_scores`` (check name -> the endpoint's recent scores)
        for percentile thresholds. Non-finite and missing (None) scores are ignored."""
        recent_scores = recent_scores or {}
        needs_history = self.percentile_checks
        resolved = {}
        for name, config in self.checks.items():
            thresholds: dict[str, float] = {}
            sources: dict[str, str] = {}
            if config.on:
                history = _finite(recent_scores.get(name, ())) if name in needs_history else []
                for band, threshold in config.bands.items():
                    thresholds[band], sources[band] = _resolve_threshold(threshold, config.spec, history)
            resolved[name] = ResolvedCheck(
                name, config.on, config.action, MappingProxyType(thresholds), MappingProxyType(sources),
                config.window,
            )
        return ResolvedPolicy(self, MappingProxyType(resolved))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # equality by value; not meant as a dict key

    def __repr__(self) -> str:
        return f"Policy({self.to_dict()!r})"


@dataclass(frozen=True, eq=False)
class ResolvedPolicy:
    """A policy with every threshold a number, ready for the gate. ``policy`` is the policy it came from."""

    policy: Policy
    checks: Mapping[str, ResolvedCheck]

    def check(self, name: str) -> ResolvedCheck:
        return self.checks[name]

    @property
    def thresholds(self) -> dict[str, dict[str, float]]:
        """check -> band -> number, for every check on that has bands."""
        return {name: dict(check.thresholds) for name, check in self.checks.items() if check.thresholds}

    @property
    def threshold_sources(self) -> dict[str, dict[str, str]]:
        """check -> band -> where the number came from: ``"fixed"``, ``"p10 of 240 recent"``,
        ``"fallback (12 of 50 recent)"``."""
        return {name: dict(check.sources) for name, check in self.checks.items() if check.sources}


# ---- parsing helpers -------------------------------------------------------------------------------------

def _parse_check(spec: CheckSpec, raw: object) -> CheckConfig:
    path = f"checks.{spec.name}"
    if isinstance(raw, Mapping):
        for key in raw:
            if key in _V1_KEYS:
                raise PolicyInvalid(f"{path}.{key}", f"unknown key; {_V1_MESSAGE}")
    if spec.kind == "yesno":
        if isinstance(raw, str) and raw in ("reject", "review", "off"):
            return CheckConfig(spec.name, action=None if raw == "off" else raw)  # type: ignore[arg-type]
        raise PolicyInvalid(path, f'must be "reject", "review" or "off", got {_show(raw)}')
    if isinstance(raw, str) and raw == "off":
        return CheckConfig(spec.name)

    band_names = ("flag",) if spec.kind == "soft" else ("reject", "review")
    example = '{"flag": T}' if spec.kind == "soft" else '{"reject": T, "review": T}'
    if not isinstance(raw, Mapping):
        raise PolicyInvalid(path, f'must be "off" or an object like {example}, got {_show(raw)}')
    allowed = (*band_names, "window") if spec.name == "duplicate" else band_names
    for key in raw:
        if key not in allowed:
            why = "; soft checks only flag, they never reject or hold" if key in ("reject", "review") else ""
            raise PolicyInvalid(f"{path}.{key}", f"unknown key{why}; allowed keys: {', '.join(allowed)}")
    bands = {band: _parse_threshold(raw[band], f"{path}.{band}", spec) for band in band_names if band in raw}
    if not bands:
        raise PolicyInvalid(path, f'give at least one of {", ".join(band_names)}, or "off"')
    _check_band_order(spec, bands, path)
    window = 0
    if spec.name == "duplicate":
        window = _integer(raw.get("window", DEFAULT_POLICY["checks"]["duplicate"]["window"]), f"{path}.window",
                          1, _MAX_WINDOW)
    return CheckConfig(spec.name, bands=MappingProxyType(bands), window=window)


def _parse_threshold(raw: object, path: str, spec: CheckSpec) -> float | Percentile:
    if isinstance(raw, Mapping):
        _refuse_unknown_keys(raw, ("percentile", "min_samples", "fallback"), path)
        for key in ("percentile", "fallback"):
            if key not in raw:
                raise PolicyInvalid(f"{path}.{key}", "is required in a percentile threshold")
        percentile = _number(raw["percentile"], f"{path}.percentile", 0.0, 100.0, exclusive=True)
        min_samples = _integer(raw.get("min_samples", 50), f"{path}.min_samples", 1, _MAX_MIN_SAMPLES)
        fallback = _check_value(raw["fallback"], f"{path}.fallback", spec)
        return Percentile(percentile, fallback, min_samples)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PolicyInvalid(
            path, f'must be a number or {{"percentile": P, "fallback": T, "min_samples": N}}, got {_show(raw)}'
        )
    return _check_value(raw, path, spec)


def _check_value(raw: object, path: str, spec: CheckSpec) -> float:
    if spec.integer:
        return _integer(raw, path, int(spec.low), int(spec.high))
    return _number(raw, path, spec.low, spec.high)


def _check_band_order(spec: CheckSpec, bands: Mapping[str, float | Percentile], path: str) -> None:
    reject, review = bands.get("reject"), bands.get("review")
    # Percentile thresholds are only known at resolve time; fixed ones can be compared now.
    if not isinstance(reject, int | float) or not isinstance(review, int | float):
        return
    if spec.higher_is_better and reject > review:
        raise PolicyInvalid(f"{path}.review", f"must be at least the reject threshold ({reject:g}): scores "
                                              "below reject are rejected, those below review are held")
    if not spec.higher_is_better and reject < review:
        raise PolicyInvalid(f"{path}.review", f"must be at most the reject threshold ({reject:g}): scores "
                                              "above reject are rejected, those above review are held")


def _check_rank_by(rank_by: object, checks: Mapping[str, CheckConfig]) -> None:
    rankable = [name for name in CHECK_NAMES if CHECKS[name].kind != "yesno" and CHECKS[name].higher_is_better]
    if not isinstance(rank_by, str) or rank_by not in rankable:
        raise PolicyInvalid("rank_by", f"must be null or one of {', '.join(rankable)} (checks where higher "
                                       f"is better), got {_show(rank_by)}")
    if not checks[rank_by].on:
        raise PolicyInvalid("rank_by", f"check {rank_by!r} is off in this policy, so it gives no score to rank by")


def _refuse_unknown_keys(d: Mapping, allowed: Iterable[str], path: str) -> None:
    allowed = tuple(allowed)
    for key in d:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise PolicyInvalid(where, f"unknown key; allowed keys: {', '.join(allowed)}")


def _number(raw: object, path: str, low: float, high: float, *, exclusive: bool = False) -> float:
    # bool is an int subclass: `true` is not a number here. Compare before float(): a huge int overflows it.
    ok = not isinstance(raw, bool) and isinstance(raw, int | float)
    if ok and isinstance(raw, float) and not math.isfinite(raw):
        ok = False
    if ok:
        ok = low < raw < high if exclusive else low <= raw <= high  # type: ignore[operator]
    if not ok:
        bounds = f"between {low:g} and {high:g} (exclusive)" if exclusive else f"from {low:g} to {high:g}"
        raise PolicyInvalid(path, f"must be a number {bounds}, got {_show(raw)}")
    return float(raw)  # type: ignore[arg-type]


def _integer(raw: object, path: str, low: int, high: int) -> int:
    ok = not isinstance(raw, bool) and (
        isinstance(raw, int) or (isinstance(raw, float) and math.isfinite(raw) and raw.is_integer())
    )
    if ok:
        ok = low <= raw <= high  # type: ignore[operator]
    if not ok:
        raise PolicyInvalid(path, f"must be a whole number from {low} to {high}, got {_show(raw)}")
    return int(raw)  # type: ignore[arg-type, call-overload]


def _show(value: object) -> str:
    """A short rendering of a bad value for an error message (a policy may be large)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# ---- resolving ---------------------------------------------------------------------------------------------

def _finite(values: Iterable[float | None]) -> list[float]:
    out = []
    for value in values:
        if value is not None and not isinstance(value, bool) and isinstance(value, int | float):
            number = float(value)
            if math.isfinite(number):
                out.append(number)
    return out


def _resolve_threshold(threshold: float | Percentile, spec: CheckSpec, history: list[float]) -> tuple[float, str]:
    if not isinstance(threshold, Percentile):
        return float(threshold), "fixed"
    if len(history) < threshold.min_samples:
        return threshold.fallback, f"fallback ({len(history)} of {threshold.min_samples} recent)"
    # For a lower-is-better check (nsfw) "the worst P%" is the top of the distribution.
    point = threshold.percentile if spec.higher_is_better else 100.0 - threshold.percentile
    value = float(np.percentile(np.asarray(history, dtype=np.float64), point))
    return value, f"p{point:g} of {len(history)} recent"
