"""Which limits apply to a caller, and the 429 that says which one it ran into.

The operator's settings give every key the same limits; a key's own ``ApiKey.limits`` overrides any of them
(0: no limit). Web-session callers (the admin console calling /v1) get the default request rate per user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from comfygate.platform.errors import TooManyRequests
from comfygate.settings import Settings

__all__ = ["CallerLimits", "LIMIT_NAMES", "MAX_LIMIT_VALUE", "is_limit_value", "over_limit"]


@dataclass(frozen=True)
class CallerLimits:
    requests_per_second: float
    runs_per_minute: int
    concurrent_runs: int
    runs_per_day: int

    @classmethod
    def defaults(cls, settings: Settings) -> CallerLimits:
        return cls(requests_per_second=settings.rate_limit_requests_per_second,
                   runs_per_minute=settings.rate_limit_runs_per_minute,
                   concurrent_runs=settings.rate_limit_concurrent_runs,
                   runs_per_day=settings.rate_limit_runs_per_day)

    def overridden(self, overrides: Mapping[str, Any] | None) -> CallerLimits:
        """These limits with a key's own values. The API validates ``ApiKey.limits`` when it writes it; a
        value edited into the database by hand that is not a number from 0 to MAX_LIMIT_VALUE is ignored, so
        that a typo there cannot lock a key out with errors on every request."""
        if not overrides:
            return self
        changes: dict[str, Any] = {}
        for field in fields(self):
            value = overrides.get(field.name)
            if is_limit_value(value):
                changes[field.name] = value if field.type == "float" else int(value)
        return self if not changes else CallerLimits(**{**self.__dict__, **changes})


LIMIT_NAMES = tuple(field.name for field in fields(CallerLimits))
# The largest value a key's limit may have: far above any real budget, small enough for float arithmetic.
MAX_LIMIT_VALUE = 1_000_000_000


def is_limit_value(value: Any) -> bool:
    """A number from 0 to MAX_LIMIT_VALUE. Ints are compared exactly: ``math.isfinite`` of a huge int raises."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and 0 <= value <= MAX_LIMIT_VALUE


_PHRASES = {
    "requests_per_second": ("rate limit", "{} requests per second"),
    "runs_per_minute": ("rate limit", "{} runs per minute"),
    "concurrent_runs": ("quota", "{} concurrent runs (queued or running)"),
    "runs_per_day": ("quota", "{} runs in 24 hours"),
}


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def over_limit(limit: str, value: float, retry_after: float, whose: str = "key") -> TooManyRequests:
    """The 429 for ``limit``: "rate limit: 120 runs per minute for this key; retry in 3 s"."""
    seconds = max(1, math.ceil(retry_after))
    kind, amount = _PHRASES[limit]
    return TooManyRequests(f"{kind}: {amount.format(_plain(value))} for this {whose}; retry in {seconds} s",
                           details={"limit": limit, "value": _plain(value), "retry_after": seconds},
                           retry_after=seconds)
