"""A real S3-compatible server on loopback for tests: moto's server mode, run as a subprocess.

Fixtures (load this module as a plugin: ``pytest_plugins = ["s3server"]`` in tests/conftest.py):

``aws_test_env`` (session)
    Fake AWS credentials and region in ``os.environ`` for the whole run; boto3 never sees real ones.
``s3_server`` (session)
    The endpoint URL (``http://127.0.0.1:<port>``) of a moto server started once per test session.
``s3_bucket`` (function)
    ``S3Bucket(endpoint_url, bucket)``: a fresh, empty bucket on that server for each test, e.g.
    ``open_storage(f"s3://{s3_bucket.bucket}/outputs", s3_bucket.endpoint_url)``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import boto3
import pytest

__all__ = ["S3Bucket", "aws_test_env", "s3_server", "s3_bucket"]

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would make boto3 read the developer's own AWS setup instead of the fake values.
_AWS_ENV_TO_HIDE = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL")
_STARTUP_SECONDS = 30.0


class S3Bucket(NamedTuple):
    endpoint_url: str
    bucket: str


@pytest.fixture(scope="session")
def aws_test_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    missing = tmp_path_factory.mktemp("aws") / "absent"
    env = {**FAKE_AWS_ENV, "AWS_CONFIG_FILE": str(missing), "AWS_SHARED_CREDENTIALS_FILE": str(missing)}
    with pytest.MonkeyPatch.context() as patch:
        for name in _AWS_ENV_TO_HIDE:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + _STARTUP_SECONDS
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"moto server did not listen on port {port} within {_STARTUP_SECONDS}s:\n"
                f"{log_path.read_text(errors='replace')}"
            )
        # Waiting on the process doubles as the pause between attempts and notices a crash at once.
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(
            f"moto server exited with status {proc.returncode}:\n{log_path.read_text(errors='replace')}"
        )


@pytest.fixture(scope="session")
def s3_server(aws_test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **aws_test_env},
        )
    try:
        _wait_until_listening(proc, port, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_bucket(s3_server: str) -> S3Bucket:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return S3Bucket(s3_server, bucket)
