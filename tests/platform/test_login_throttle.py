"""Login throttling per username and per client address, against a real server, in-process and through Redis.

Statuses and Retry-After values only: a blocked attempt is retried until the block is over, never timed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from limits_support import BACKENDS, backend_settings, limited_server

from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.limits.logins import ADDRESS_BACKOFF, USERNAME_BACKOFF
from comfygate.platform.limits.store import Backoff
from comfygate.platform.services import accounts
from comfygate.settings import Settings

PASSWORD = "correct horse battery"


@pytest.fixture(params=BACKENDS)
def limits_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    yield from backend_settings(request)


def add_user(data_dir: Path, username: str) -> None:
    engine = make_engine(Settings(data_dir=data_dir).database_url)
    with session_scope(make_session_factory(engine)) as session:
        accounts.create_user(session, username, PASSWORD)
    engine.dispose()


def log_in(url: str, username: str, password: str) -> requests.Response:
    return requests.post(url + "/login", data={"username": username, "password": password}, allow_redirects=False,
                         timeout=30)


def once_unblocked(url: str, username: str, password: str) -> requests.Response:
    """The first answer that is not 429 (blocked attempts are not counted, so retrying costs nothing)."""
    for _ in range(600):
        answer = log_in(url, username, password)
        if answer.status_code != 429:
            return answer
        threading.Event().wait(0.1)
    raise AssertionError(f"{username!r} still blocked after 600 tries")


def blocked_for(answer: requests.Response) -> int:
    assert answer.status_code == 429, answer.status_code
    assert "too many failed logins" in answer.text
    return int(answer.headers["Retry-After"])


def test_the_schedule_of_delays():
    assert [USERNAME_BACKOFF.block_after(n) for n in range(1, 10)] == [0, 0, 0, 0, 1, 2, 4, 8, 16]
    assert USERNAME_BACKOFF.block_after(15) == 15 * 60 == USERNAME_BACKOFF.block_after(10_000)
    assert Backoff(free_failures=2).block_after(2) == 1
    assert ADDRESS_BACKOFF.free_failures > USERNAME_BACKOFF.free_failures


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_failed_logins_of_a_username_get_growing_delays_whether_it_exists_or_not(tmp_path, limits_backend,
                                                                                 username):
    with limited_server(tmp_path, limits_backend) as server:
        add_user(tmp_path, "alice")
        first_answers = [log_in(server.url, username, "wrong").status_code for _ in range(5)]
        assert first_answers == [401] * 5
        # Blocked now, even with the right password: the answer says nothing about the name or password.
        blocked = log_in(server.url, username, PASSWORD)
        assert blocked_for(blocked) == 1
        assert once_unblocked(server.url, username, "wrong").status_code == 401
        assert blocked_for(log_in(server.url, username, "wrong")) == 2
        assert once_unblocked(server.url, username, "wrong").status_code == 401
        assert blocked_for(log_in(server.url, username, "wrong")) == 4
        # The login page shows it too, with the name kept in the form.
        assert 'value="' + username + '"' in blocked.text


def test_a_success_resets_the_username(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend) as server:
        add_user(tmp_path, "alice")
        assert [log_in(server.url, "alice", "wrong").status_code for _ in range(5)] == [401] * 5
        assert blocked_for(log_in(server.url, "alice", PASSWORD)) == 1
        assert once_unblocked(server.url, "alice", PASSWORD).status_code == 303
        # Counted from zero again: five more failures before the first block.
        assert [log_in(server.url, "alice", "wrong").status_code for _ in range(5)] == [401] * 5
        assert blocked_for(log_in(server.url, "alice", "wrong")) == 1


def test_failures_from_one_address_block_every_name_from_it(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend) as server:
        add_user(tmp_path, "alice")
        sprayed = [log_in(server.url, f"user{n}", "wrong").status_code
                   for n in range(ADDRESS_BACKOFF.free_failures)]
        assert sprayed == [401] * ADDRESS_BACKOFF.free_failures
        # No name failed more than once, but the address did: alice, right password and all, must wait.
        assert blocked_for(log_in(server.url, "alice", PASSWORD)) == 1
        assert blocked_for(log_in(server.url, "someone-new", "wrong")) == 1
        assert once_unblocked(server.url, "alice", PASSWORD).status_code == 303
        # alice's success does not clear the address: its next failure blocks for longer.
        assert log_in(server.url, "user0", "wrong").status_code == 401
        assert blocked_for(log_in(server.url, "alice", PASSWORD)) == 2


def test_wrong_passwords_sent_all_at_once_are_still_counted_one_by_one(tmp_path, limits_backend):
    # Without taking turns, every attempt of a burst would pass the block check before any failure was
    # counted: a burst of any size would be as many guesses.
    with limited_server(tmp_path, limits_backend) as server:
        add_user(tmp_path, "alice")
        statuses: list[int] = []
        burst = [threading.Thread(target=lambda: statuses.append(log_in(server.url, "alice", "wrong").status_code))
                 for _ in range(16)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(60)
        assert len(statuses) == 16
        # Five free failures, then blocked; a guess may slip in only when a block ran out mid-burst.
        assert statuses.count(401) < 10 and statuses.count(429) > 6, statuses
