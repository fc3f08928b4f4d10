"""The audit log through a real server on SQLite and PostgreSQL: what is recorded, who reads it, paging."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from access_world import BLANK, PASSWORD, World, access_world

from comfygate.settings import Settings


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, max_upload_bytes=200_000,
                        watchdog_seconds=60)
    with access_world(settings) as running:
        yield running


def login(world: World, username: str, password: str) -> int:
    response = requests.post(world.server.url + "/login", data={"username": username, "password": password},
                             allow_redirects=False, timeout=30)
    return response.status_code


def entries(world: World, query: str = "", key: str = "root") -> list[dict]:
    response = world.call("GET", "/v1/audit" + query, key)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def test_changes_and_logins_are_recorded_with_who_and_from_where(world: World):
    dev_prefix = world.keys["dev_a"].split("_")[1]
    assert login(world, "dev_a", PASSWORD) == 303
    assert login(world, "dev_a", "wrong password") == 401
    assert world.call("POST", "/v1/workflows", "dev_a", json={"name": "wa", "workflow": BLANK,
                                                              "policy": {"retries": 1}}).status_code == 201
    made = world.call("POST", "/v1/keys", "dev_a", json={"name": "ci", "scopes": {"actions": ["run"]}}).json()
    assert world.call("DELETE", f"/v1/keys/{made['prefix']}", "dev_a").status_code == 200
    output_id = world.withhold_output(world.start_run("dev_a"))
    assert world.call("POST", f"/v1/review/{output_id}", "rev_a", json={"decision": "reject",
                                                                        "note": "smudged"}).status_code == 200

    log = entries(world)
    assert all(e["address"] == "127.0.0.1" for e in log if e["actor"] != "cli")
    by_action = {e["action"]: e for e in log}
    assert by_action["login.success"]["actor"] == "user:dev_a"
    assert by_action["login.failure"]["details"] == {"username": "dev_a"}
    publish = [e for e in log if e["action"] == "workflow.publish" and e["target"] == "wa v2"]
    assert publish and publish[0]["actor"] == f"key:dev_a ({dev_prefix})" and publish[0]["project"] == "alpha"
    assert by_action["policy.change"]["details"]["after"]["retries"] == 1
    assert by_action["key.create"]["target"] == f"ci ({made['prefix']})"
    assert by_action["key.create"]["details"]["scopes"]["actions"] == ["run"]
    assert by_action["key.revoke"]["target"] == f"ci ({made['prefix']})"
    decision = by_action["review.decision"]
    assert decision["details"]["decision"] == "reject" and decision["details"]["note"] == "smudged"
    assert decision["project"] == "alpha" and decision["actor"].startswith("key:rev_a")
    assert {"project.create", "user.create", "membership.set"} <= set(by_action)
    cli = [e for e in log if e["action"] == "project.create"]
    assert {e["actor"] for e in cli} == {"cli"} and {e["address"] for e in cli} == {None}


def test_who_reads_the_audit_log_and_paging(world: World):
    assert world.call("GET", "/v1/audit", "dev_a").status_code == 403
    assert world.call("GET", "/v1/audit", "call_a").status_code == 403
    # A project admin reads its project's entries only: no logins, no other project's publishes.
    mine = entries(world, key="adm_a")
    assert mine and {e["project"] for e in mine} == {"alpha"}
    assert world.call("GET", "/v1/audit?project=beta", "adm_a").status_code == 404
    assert {e["project"] for e in entries(world, "?project=beta")} == {"beta"}
    # Newest first, with a cursor to the older ones.
    everything = entries(world, "?limit=500")
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    page = world.call("GET", "/v1/audit?limit=2&action=membership.set", "root").json()
    assert [e["id"] for e in page["entries"]] == [e["id"] for e in everything
                                                    if e["action"] == "membership.set"][:2]
    older = world.call("GET", page["next"], "root").json()["entries"]
    assert older and all(e["id"] < page["entries"][-1]["id"] and e["action"] == "membership.set" for e in older)
    for query, field in (("?limit=0", "limit"), ("?limit=501", "limit"), ("?before=x", "before")):
        refused = world.call("GET", "/v1/audit" + query, "root")
        assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == field
