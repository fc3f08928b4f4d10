"""Shared fixtures: real services (PostgreSQL, Redis, an S3 server), shrunk.

A service that is not reachable skips its tests with the reason on a developer's machine, and fails them
loudly under CI=true, where it must be there (``services.service_missing``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_clip import build_tiny_clip

from services import port_open, service_missing

pytest_plugins = ["s3server"]

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not port_open("127.0.0.1", 5432):
        service_missing("PostgreSQL at 127.0.0.1:5432", "connection refused")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database per test, dropped afterwards."""
    import psycopg

    name = f"comfygate_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not port_open(REDIS_HOST, REDIS_PORT):
        service_missing(f"Redis at {REDIS_HOST}:{REDIS_PORT}", "connection refused")
    # Tests use unique queue names (pool per deployment), so they can share database 0 safely.
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(model name, weights path) of a tiny open_clip model trained on colours x shapes (~5 s on one CPU thread)."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
