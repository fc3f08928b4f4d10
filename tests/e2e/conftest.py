"""End-to-end fixtures: real comfygate processes on loopback, talked to over HTTP as a user would.

``production`` (module scope) starts stacks shaped like a production install: PostgreSQL (a fresh database),
Redis as the Celery broker, outputs on the loopback S3 server, ``comfygate serve --no-worker`` and separate
``comfygate worker`` processes. ``embedded`` starts the zero-setup default (SQLite, filesystem broker, local
files, ``comfygate serve --worker``). Both load the test node packs of ``tests/nodepacks/`` (``slow_nodes.py``
among them) and use a fast watchdog, so a killed worker is noticed within seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from e2e_support import FAST_WATCHDOG, NODE_PACKS_DIR, Stack

from deployment import Deployment


def _stop(stack: Stack) -> None:
    stack.deployment.stop()


@pytest.fixture(scope="module")
def production(postgres_server: str, redis_url: str, s3_server: str, aws_test_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """``start(**env) -> Stack``: a migrated production-shaped install with its API server up, no workers
    yet (``stack.deployment.start_worker()``). Everything it started is stopped and dropped at module end."""
    started: list[tuple[Stack, str]] = []

    def start(**env: str) -> Stack:
        db_name = f"comfygate_e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
        database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
        bucket = f"e2e-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
        deployment = Deployment(tmp_path_factory.mktemp("production"), env_overrides={
            "COMFYGATE_DATABASE_URL": database_url,
            "COMFYGATE_BROKER_URL": redis_url,
            "COMFYGATE_STORAGE_URL": f"s3://{bucket}/comfygate",
            "COMFYGATE_S3_ENDPOINT_URL": s3_server,
            "COMFYGATE_NODE_PACK_DIRS": str(NODE_PACKS_DIR),
            **FAST_WATCHDOG,
            **env,
        })
        stack = Stack(deployment, database_url)
        started.append((stack, db_name))
        deployment.migrate()
        deployment.start_server(with_worker=False)
        assert deployment.admin_key, f"no admin key printed on first start:\n{deployment.log('server.log')}"
        return stack

    yield start
    for stack, db_name in started:
        _stop(stack)
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    """The zero-setup default: ``comfygate serve`` with its supervised local worker, SQLite, files on disk."""
    deployment = Deployment(tmp_path / "data", env_overrides={
        "COMFYGATE_NODE_PACK_DIRS": str(NODE_PACKS_DIR),
        **FAST_WATCHDOG,
    })
    stack = Stack(deployment, f"sqlite:///{deployment.data_dir / 'comfygate.db'}")
    try:
        deployment.migrate()
        deployment.start_server(with_worker=True)
        yield stack
    finally:
        _stop(stack)
