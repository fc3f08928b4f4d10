"""Rate limits and quotas per API key, against a real server on loopback, in-process and through Redis."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from limits_support import BACKENDS, NO_LIMITS, backend_settings, limited_server, set_key_limits
from live_server import Server, running_server
from sqlalchemy import update

from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.models import Run
from comfygate.platform.services import accounts
from comfygate.settings import Settings
from deployment import free_port

CARD = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "gradient_card.json").read_text())


@pytest.fixture(params=BACKENDS)
def limits_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    yield from backend_settings(request)


def upload_card(server: Server) -> None:
    response = server.call("POST", "/v1/workflows", json={"name": "card", "workflow": CARD})
    assert response.status_code in (200, 201), response.text


def start_run(server: Server, key: str = "admin") -> requests.Response:
    return server.call("POST", "/v1/workflows/card/runs", key=key, json={"inputs": {}})


def assert_limited(response: requests.Response, limit: str, value: float, phrase: str) -> int:
    """The 429 a user reads: the limit named with its value, and when to retry, in the header and the body."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    assert error["code"] == "rate_limited"
    assert error["details"] == {"limit": limit, "value": value, "retry_after": retry_after}
    assert phrase in error["message"] and f"retry in {retry_after} s" in error["message"], error["message"]
    return retry_after


def test_a_burst_over_the_request_rate_gets_429_and_other_keys_are_not_held_back(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend, rate_limit_requests_per_second=3) as server:
        answers = [server.call("GET", "/v1/workflows") for _ in range(25)]
        # The bucket holds two seconds' worth: the first 6 pass whatever the pace.
        assert [a.status_code for a in answers[:6]] == [200] * 6
        refused = [a for a in answers if a.status_code == 429]
        assert refused, "25 requests at full speed all passed a limit of 3 per second"
        assert {a.status_code for a in answers} == {200, 429}
        assert_limited(refused[0], "requests_per_second", 3, "rate limit: 3 requests per second for this key")
        # The budget is the key's: another key still gets through.
        assert server.call("GET", "/v1/workflows", key="user").status_code == 200


def test_runs_per_minute(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend, rate_limit_runs_per_minute=3) as server:
        upload_card(server)
        answers = [start_run(server) for _ in range(5)]
        assert [a.status_code for a in answers[:3]] == [202] * 3
        retry_after = assert_limited(answers[3], "runs_per_minute", 3, "rate limit: 3 runs per minute for this key")
        # One run comes back every 20 s.
        assert retry_after <= 20
        assert answers[4].status_code == 429
        # Reading is not starting: the key can still see its runs.
        assert server.call("GET", f"/v1/runs/{answers[0].json()['id']}").status_code == 200


def test_concurrent_runs_count_queued_and_running_runs(tmp_path, limits_backend):
    # No worker: runs stay queued until canceled.
    with limited_server(tmp_path, limits_backend, rate_limit_concurrent_runs=2) as server:
        upload_card(server)
        first, second = start_run(server), start_run(server)
        assert (first.status_code, second.status_code) == (202, 202)
        assert_limited(start_run(server), "concurrent_runs", 2, "quota: 2 concurrent runs (queued or running)")
        canceled = server.call("POST", f"/v1/runs/{first.json()['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert start_run(server).status_code == 202
        assert start_run(server).status_code == 429


def test_runs_per_day_counts_every_run_started_in_the_last_24_hours(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend, rate_limit_runs_per_day=2) as server:
        upload_card(server)
        first, second = start_run(server), start_run(server)
        assert (first.status_code, second.status_code) == (202, 202)
        retry_after = assert_limited(start_run(server), "runs_per_day", 2, "quota: 2 runs in 24 hours")
        # The first run leaves the window a day after it started, not before.
        assert 23 * 3600 < retry_after <= 24 * 3600
        # Unlike the concurrent quota, a run that ended still counts.
        assert server.call("POST", f"/v1/runs/{first.json()['id']}/cancel").status_code == 200
        assert start_run(server).status_code == 429
        # A day later (the run table says so), there is room for one more.
        engine = make_engine(Settings(data_dir=tmp_path).database_url)
        with session_scope(make_session_factory(engine)) as session:
            started = session.get(Run, first.json()["id"])
            session.execute(update(Run).where(Run.id == started.id)
                            .values(queued_at=started.queued_at - timedelta(hours=24, seconds=1)))
        engine.dispose()
        assert start_run(server).status_code == 202
        assert start_run(server).status_code == 429


def test_a_key_of_its_own_limits_overrides_the_defaults(tmp_path, limits_backend):
    # Written into the database before the server sees either key.
    with limited_server(tmp_path, limits_backend, rate_limit_requests_per_second=3,
                        rate_limit_concurrent_runs=5) as server:
        set_key_limits(tmp_path, "user", {"concurrent_runs": 1, "requests_per_second": 0})
        upload_card(server)
        assert start_run(server, key="user").status_code == 202
        assert_limited(start_run(server, key="user"), "concurrent_runs", 1, "quota: 1 concurrent runs")
        # requests_per_second 0: no limit for this key, while the admin key has the default 3.
        assert {server.call("GET", "/v1/workflows", key="user").status_code for _ in range(25)} == {200}
        assert 429 in {server.call("GET", "/v1/workflows").status_code for _ in range(25)}


def test_a_console_session_is_limited_per_user(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend, rate_limit_requests_per_second=3) as server:
        engine = make_engine(Settings(data_dir=tmp_path).database_url)
        with session_scope(make_session_factory(engine)) as session:
            accounts.create_user(session, "carol", "a long password", is_admin=True)
        engine.dispose()
        browser = requests.Session()
        logged_in = browser.post(server.url + "/login", data={"username": "carol", "password": "a long password"},
                                 allow_redirects=False, timeout=30)
        assert logged_in.status_code == 303
        answers = [browser.get(server.url + "/v1/workflows", timeout=30) for _ in range(25)]
        assert [a.status_code for a in answers[:6]] == [200] * 6
        refused = [a for a in answers if a.status_code == 429]
        assert refused
        assert_limited(refused[0], "requests_per_second", 3, "3 requests per second for this user")


def test_two_api_processes_on_one_redis_share_a_key_s_budget(tmp_path, redis_url):
    import redis

    prefix = f"comfygate-test-limits-{uuid.uuid4().hex[:12]}:"
    settings = Settings(data_dir=tmp_path, watchdog_seconds=60,
                        **{**NO_LIMITS, "rate_limit_runs_per_minute": 4, "limits_redis_url": redis_url,
                           "limits_redis_prefix": prefix})
    try:
        with running_server(settings) as first, running_server(settings) as second:
            upload_card(first)
            # One key (first's admin key, in the database both servers read), runs started on both in turn.
            other = Server(second.url, first.admin_key, first.user_key)
            answers = [start_run(server).status_code for _ in range(5) for server in (first, other)]
            # Two runs accepted by each process, then both refuse: 4 in all, where each alone would allow 4.
            assert answers == [202] * 4 + [429] * 6
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def test_an_unreachable_redis_is_no_outage_and_still_limits(tmp_path, caplog):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="comfygate.platform.limits"), \
            limited_server(tmp_path, {"limits_redis_url": dead_redis}, rate_limit_requests_per_second=3) as server:
        answers = [server.call("GET", "/v1/workflows") for _ in range(25)]
    assert [a.status_code for a in answers[:6]] == [200] * 6
    assert {a.status_code for a in answers} == {200, 429}
    assert any("unreachable" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("name", sorted(NO_LIMITS))
def test_negative_limits_are_refused_when_the_server_starts(name):
    env = {"COMFYGATE_" + name.upper(): "-1"}
    with pytest.raises(ValueError, match="COMFYGATE_" + name.upper()):
        Settings.from_env(env)


def test_requests_with_unknown_keys_are_limited_per_address(tmp_path, limits_backend):
    with limited_server(tmp_path, limits_backend, rate_limit_requests_per_second=3) as server:
        bad = {"Authorization": "Bearer cg_0123456789ab_guessed"}
        answers = [requests.get(server.url + "/v1/workflows", headers=bad, timeout=30) for _ in range(25)]
        # Two seconds' worth of 401s, then the address is over the rate: guessing keys is no faster than a key.
        assert [a.status_code for a in answers[:6]] == [401] * 6
        refused = [a for a in answers if a.status_code == 429]
        assert refused, "25 guessed keys at full speed were all answered 401"
        assert_limited(refused[0], "requests_per_second", 3, "rate limit: 3 requests per second for this address")
        # A valid key from the same address has its own budget.
        assert server.call("GET", "/v1/workflows").status_code == 200
