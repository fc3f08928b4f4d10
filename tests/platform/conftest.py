"""Platform fixtures: a migrated database on SQLite and on PostgreSQL, and the services' collaborators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from limits_support import NO_LIMITS
from live_server import Server, running_server
from sqlalchemy.orm import Session, sessionmaker

from comfygate.comfy_runtime import NodeRegistry, create_registry
from comfygate.platform.db import make_engine, make_session_factory
from comfygate.platform.migrate import upgrade
from comfygate.settings import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'comfygate.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def registry() -> NodeRegistry:
    return create_registry()


@pytest.fixture
def card_workflow() -> dict:
    return json.loads((WORKFLOWS / "gradient_card.json").read_text())


@pytest.fixture
def blank_workflow() -> dict:
    return json.loads((WORKFLOWS / "blank.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Limits off: these tests send bursts from one key (the fuzz); tests of the limits start servers of their own.
    settings = Settings(data_dir=tmp_path_factory.mktemp("api"), max_upload_bytes=200_000, watchdog_seconds=60,
                        **NO_LIMITS)
    with running_server(settings) as running:
        yield running
