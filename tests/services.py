"""Reaching the local services the tests need, and what to do when one is missing."""

from __future__ import annotations

import os
import socket

import pytest

__all__ = ["service_missing", "port_open"]


def service_missing(what: str, why: str) -> None:
    """Skip with the reason on a developer's machine; fail loudly under CI=true, where it must be there."""
    message = f"{what} is not reachable ({why})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
