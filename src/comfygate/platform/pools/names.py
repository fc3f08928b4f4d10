"""Pool names: what a workflow version may name as the pool it runs on."""

from __future__ import annotations

import re
from typing import Any

from comfygate.platform.errors import Unprocessable

__all__ = ["DEFAULT_POOL", "POOL_NAME", "check_pool_name"]

DEFAULT_POOL = "default"
# Workflow names' rules, within the 64 characters of the pool columns; also part of a Celery queue name.
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_pool_name(value: Any, field: str = "pool") -> str:
    """``value`` when it can name a pool; Unprocessable naming ``field`` otherwise."""
    if not isinstance(value, str) or not POOL_NAME.match(value):
        shown = value if isinstance(value, str | int | float) and not isinstance(value, bool) else None
        raise Unprocessable(
            f"{field} must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit, "
            f"got {str(value)[:100]!r}", details={"field": field, "value": shown})
    return value
