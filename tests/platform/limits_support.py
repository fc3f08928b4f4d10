"""What the rate-limit and login-throttle tests share: the two backends, and a server with chosen limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from live_server import Server, running_server
from sqlalchemy import update

from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.models import ApiKey
from comfygate.settings import Settings

__all__ = ["BACKENDS", "backend_settings", "limited_server", "set_key_limits", "NO_LIMITS"]

NO_LIMITS = {"rate_limit_requests_per_second": 0, "rate_limit_runs_per_minute": 0,
             "rate_limit_concurrent_runs": 0, "rate_limit_runs_per_day": 0}


BACKENDS = ["in-process", "redis"]


def backend_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """For a fixture parametrized with BACKENDS: settings that choose the backend. Redis: the shared server,
    under a prefix of this test's own, whose keys (and only those) are deleted afterwards."""
    if request.param == "in-process":
        yield {"limits_redis_url": ""}
        return
    import redis

    url = request.getfixturevalue("redis_url")
    prefix = f"comfygate-test-limits-{uuid.uuid4().hex[:12]}:"
    yield {"limits_redis_url": url, "limits_redis_prefix": prefix}
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def limited_server(tmp_path: Path, backend: dict[str, Any], **limits: Any) -> AbstractContextManager[Server]:
    """A real API server (no worker) with every limit off except ``limits``."""
    settings = Settings(data_dir=tmp_path, watchdog_seconds=60, **{**NO_LIMITS, **backend, **limits})
    return running_server(settings)


def set_key_limits(tmp_path: Path, key_name: str, limits: dict[str, Any]) -> None:
    """Write ``ApiKey.limits`` straight into the server's database (before the key's first request: verified
    keys are cached for a few seconds)."""
    engine = make_engine(Settings(data_dir=tmp_path).database_url)
    with session_scope(make_session_factory(engine)) as session:
        session.execute(update(ApiKey).where(ApiKey.name == key_name).values(limits=limits))
    engine.dispose()
