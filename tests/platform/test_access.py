"""Who sees and does what, through a real server on SQLite and PostgreSQL: two projects, a user of every role,
keys with narrow scopes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from access_world import BLANK, World, access_world

from comfygate.settings import Settings


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, max_upload_bytes=200_000,
                        watchdog_seconds=60)
    with access_world(settings) as running:
        yield running


def create(world: World, key: str, body: dict) -> tuple[int, str | None]:
    """POST /v1/keys as ``key``: (201, None), or the status and the field the error names."""
    response = world.call("POST", "/v1/keys", key, json=body)
    if response.status_code == 201:
        return 201, None
    return response.status_code, response.json()["error"]["details"]["field"]


def missing_run_body(world: World, key: str) -> dict:
    response = world.call("GET", "/v1/runs/" + "0" * 32, key)
    assert response.status_code == 404
    return response.json()


def test_runs_outputs_webhooks_and_review_items_of_another_project_are_not_found(world: World):
    run_id = world.start_run("dev_a")
    output_id = world.withhold_output(run_id)
    nothing = missing_run_body(world, "dev_b")["error"]["message"].replace("0" * 32, run_id)
    for method, path in [("GET", f"/v1/runs/{run_id}"), ("GET", f"/v1/runs/{run_id}?wait=1"),
                         ("GET", f"/v1/runs/{run_id}/outputs/0"), ("POST", f"/v1/runs/{run_id}/cancel"),
                         ("GET", f"/v1/webhooks?run={run_id}")]:
        refused = world.call(method, path, "dev_b")
        assert refused.status_code == 404, (path, refused.text)
        assert refused.json()["error"]["message"] == nothing, path
    # A reviewer of the other project neither lists, sees nor decides alpha's output.
    assert world.call("GET", "/v1/review", "rev_b").json()["items"] == []
    assert world.call("GET", f"/v1/review/{output_id}/image", "rev_b").status_code == 404
    assert world.call("POST", f"/v1/review/{output_id}", "rev_b", json={"decision": "approve"}).status_code == 404
    # The project's own people do.
    assert world.call("GET", f"/v1/runs/{run_id}", "dev_a").json()["status"] == "held"
    assert world.call("GET", f"/v1/runs/{run_id}/outputs/0", "dev_a").json()["error"]["code"] == "output_withheld"
    assert [i["output_id"] for i in world.call("GET", "/v1/review", "rev_a").json()["items"]] == [output_id]
    decided = world.call("POST", f"/v1/review/{output_id}", "rev_a", json={"decision": "approve"})
    assert decided.status_code == 200 and decided.json()["released"] is True
    # A developer may read the run but not review it: that is a 403 naming the right.
    refused = world.call("POST", f"/v1/review/{output_id}", "dev_a", json={"decision": "reject"})
    assert refused.status_code == 403 and "'review'" in refused.json()["error"]["message"]


def test_a_caller_key_sees_only_its_own_runs_and_cannot_publish(world: World):
    mine = world.start_run("call_a")
    assert world.call("GET", f"/v1/runs/{mine}", "call_a").status_code == 200
    assert world.call("GET", f"/v1/runs/{mine}", "call_a2").status_code == 404  # the same user's other key
    assert world.call("POST", f"/v1/runs/{mine}/cancel", "call_a2").status_code == 404
    assert world.call("GET", f"/v1/runs/{mine}", "dev_a").status_code == 200  # a developer reads every run
    theirs = world.start_run("dev_a")
    assert world.call("GET", f"/v1/runs/{theirs}", "call_a").status_code == 404
    # Switching the gate off takes publish: the caller sees the workflow but may not upload or edit its policy.
    off = {"checks": {"decode": "off", "finite": "off", "blank": "off", "noise": "off", "duplicate": "off"}}
    upload = world.call("POST", "/v1/workflows", "call_a", json={"name": "wa", "workflow": BLANK, "policy": off})
    assert upload.status_code == 403
    assert upload.json()["error"]["details"] == {"action": "publish", "project": "alpha"}
    assert world.call("PUT", "/v1/workflows/wa/versions/1/policy", "call_a", json=off).status_code == 403
    assert world.call("GET", "/v1/workflows/wa", "dev_a").json()["latest_version"] == 1
    assert world.call("POST", f"/v1/runs/{mine}/cancel", "call_a").status_code == 200


def test_policies_need_publish_to_change_and_publish_or_review_to_read(world: World):
    policy = {"checks": {"blank": "off"}}
    assert world.call("PUT", "/v1/workflows/wa/versions/1/policy", "rev_a", json=policy).status_code == 403
    assert world.call("GET", "/v1/workflows/wa/versions/1/policy", "rev_a").status_code == 200
    assert world.call("GET", "/v1/workflows/wa/versions/1/policy", "call_a").status_code == 403
    assert world.call("GET", "/v1/workflows/wa/versions/1/policy", "dev_b").status_code == 404
    saved = world.call("PUT", "/v1/workflows/wa/versions/1/policy", "dev_a", json=policy)
    assert saved.status_code == 200 and saved.json()["revision"] == 2
    upload = world.call("POST", "/v1/workflows", "dev_a", json={"name": "wa", "workflow": BLANK,
                                                               "policy": {"checks": {"noise": "off"}}})
    assert upload.status_code == 201 and upload.json()["version"] == 2
    changes = world.call("GET", "/v1/audit?action=policy.change", "adm_a").json()["entries"]
    assert [(c["details"]["by"], c["details"]["version"], c["actor"]) for c in changes] == [
        ("upload", 2, f"key:dev_a ({world.keys['dev_a'].split('_')[1]})"),
        ("edit", 1, f"key:dev_a ({world.keys['dev_a'].split('_')[1]})")]
    assert changes[1]["details"]["after"]["checks"]["blank"] == "off"
    assert changes[1]["details"]["before"]["checks"]["blank"] != "off"
    assert changes[0]["project"] == "alpha" and changes[0]["address"] == "127.0.0.1"


def test_workflows_of_other_projects_are_invisible_and_their_names_taken(world: World):
    assert [w["workflow"] for w in world.call("GET", "/v1/workflows", "dev_b").json()["workflows"]] == ["wb"]
    assert {w["workflow"] for w in world.call("GET", "/v1/workflows", "root").json()["workflows"]} == {"wa", "wb"}
    for path in ("/v1/workflows/wa", "/v1/workflows/wa/versions/1", "/v1/workflows/wa/versions/1/source",
                 "/v1/calibration/wa"):
        assert world.call("GET", path, "dev_b").status_code == 404, path
    assert world.call("POST", "/v1/workflows/wa/runs", "dev_b", json={"inputs": {}}).status_code == 404
    taken = world.call("POST", "/v1/workflows", "dev_b", json={"name": "wa", "workflow": BLANK})
    assert taken.status_code == 409 and "workflow name taken" in taken.json()["error"]["message"]
    assert "alpha" not in taken.text
    # A new workflow goes to the only project its publisher may publish in; a project it cannot see is not found.
    created = world.call("POST", "/v1/workflows", "dev_b", json={"name": "wb2", "workflow": BLANK})
    assert created.status_code == 201
    assert world.call("GET", "/v1/workflows/wb2", "dev_b").json()["project"] == "beta"
    elsewhere = world.call("POST", "/v1/workflows", "dev_b", json={"name": "wb3", "workflow": BLANK,
                                                                   "project": "alpha"})
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["details"]["field"] == "project"
    # A server admin may publish anywhere, so a new workflow must name its project... or go to "default".
    assert world.call("POST", "/v1/workflows", "root", json={"name": "wr", "workflow": BLANK}).status_code == 201
    assert world.call("GET", "/v1/workflows/wr", "root").json()["project"] == "default"


def test_key_scopes_narrow_what_the_role_allows(world: World):
    world.add_key("dev_a_wa_only", "dev_a", {"projects": None, "workflows": ["wa"], "actions": None})
    world.add_key("dev_a_read_only", "dev_a", {"projects": ["alpha"], "workflows": None, "actions": ["read"]})
    assert world.call("POST", "/v1/workflows", "dev_a", json={"name": "wa2", "workflow": BLANK}).status_code == 201
    run_id = world.start_run("dev_a_wa_only")
    assert world.call("POST", "/v1/workflows/wa2/runs", "dev_a_wa_only", json={"inputs": {}}).status_code == 404
    assert world.call("GET", "/v1/workflows/wa2", "dev_a_wa_only").status_code == 404
    listed = world.call("GET", "/v1/workflows", "dev_a_wa_only").json()["workflows"]
    assert [w["workflow"] for w in listed] == ["wa"]
    read_only = world.call("POST", "/v1/workflows/wa/runs", "dev_a_read_only", json={"inputs": {}})
    assert read_only.status_code == 403 and read_only.json()["error"]["details"]["action"] == "run"
    assert world.call("GET", f"/v1/runs/{run_id}", "dev_a_read_only").status_code == 200
    assert world.call("POST", "/v1/workflows", "dev_a_read_only",
                      json={"name": "wa", "workflow": BLANK, "policy": {"retries": 0}}).status_code == 403


def test_a_revoked_key_and_a_removed_role_stop_working(world: World):
    world.add_key("temp", "dev_a")
    prefix = world.keys["temp"].split("_")[1]
    assert world.call("GET", "/v1/workflows/wa", "temp").status_code == 200
    assert world.call("DELETE", f"/v1/keys/{prefix}", "rev_a").status_code == 404  # not rev_a's key
    revoked = world.call("DELETE", f"/v1/keys/{prefix}", "dev_a")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    removed = world.call("DELETE", "/v1/projects/alpha/members/rev_a", "adm_a")
    assert removed.status_code == 200
    # Servers trust a verified key for the key cache's 5 s; well after that both are refused.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        statuses = (world.call("GET", "/v1/workflows/wa", "temp").status_code,
                    world.call("GET", "/v1/workflows/wa", "rev_a").status_code)
        if statuses == (401, 404):
            break
        time.sleep(0.5)
    assert statuses == (401, 404)


def test_keys_cannot_be_wider_than_their_creator_or_owner(world: World):
    assert create(world, "call_a", {"name": "x", "scopes": {"actions": ["publish"]}}) == (422, "scopes.actions[0]")
    assert create(world, "dev_a", {"name": "x", "scopes": {"projects": ["beta"]}}) == (422, "scopes.projects[0]")
    assert create(world, "dev_a", {"name": "x", "admin": True}) == (422, "admin")
    assert create(world, "dev_a", {"name": "x", "user": "rev_a"}) == (422, "scopes.projects")
    assert create(world, "dev_a", {"name": "x", "user": "rev_a", "scopes": {"projects": ["alpha"]}}) == (
        422, "scopes.projects")
    assert create(world, "root", {"name": "x", "limits": {"runs_per_minute": -1}}) == (422, "limits.runs_per_minute")
    assert create(world, "root", {"name": "x", "limits": {"runs_per_hour": 3}}) == (422, "limits.runs_per_hour")
    world.add_key("dev_a_run", "dev_a", {"projects": None, "workflows": None, "actions": ["run", "read"]})
    assert create(world, "dev_a_run", {"name": "wider"}) == (422, "scopes")
    assert create(world, "dev_a_run", {"name": "same", "scopes": {"actions": ["run"]}}) == (201, None)
    made = world.call("POST", "/v1/keys", "adm_a", json={"name": "for-caller", "user": "call_a",
                                                         "scopes": {"projects": ["alpha"]}})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret"].startswith("cg_") and body["user"] == "call_a" and body["limits"] is None
    listed = world.call("GET", "/v1/keys", "adm_a").json()["keys"]
    assert "for-caller" in {k["name"] for k in listed} and all("secret" not in k for k in listed)
    assert {k["name"] for k in world.call("GET", "/v1/keys", "call_a").json()["keys"]} == {
        "call_a", "call_a2", "for-caller"}


def test_management_api(world: World):
    me = world.call("GET", "/v1/me", "call_a").json()
    assert me["user"] == "call_a" and not me["server_admin"]
    assert [(p["project"], p["role"], p["own_runs_only"]) for p in me["projects"]] == [("alpha", "caller", True)]
    assert world.call("POST", "/v1/projects", "adm_a", json={"name": "gamma"}).status_code == 403
    assert world.call("POST", "/v1/projects", "root", json={"name": "Gamma!"}).json()["error"]["details"] == {
        "field": "name"}
    assert world.call("POST", "/v1/projects", "root", json={"name": "gamma"}).status_code == 201
    assert world.call("GET", "/v1/users", "adm_a").status_code == 403
    made = world.call("POST", "/v1/users", "root", json={"username": "eve", "projects": {"gamma": "reviewer"}})
    assert made.status_code == 201 and len(made.json()["password"]) >= 12
    assert made.json()["projects"] == {"gamma": "reviewer"}
    bad_role = world.call("POST", "/v1/users", "root", json={"username": "eve2", "projects": {"gamma": "boss"}})
    assert bad_role.json()["error"]["details"]["field"] == "projects.gamma"
    # A project admin manages its own project's members, not another's.
    assert world.call("PUT", "/v1/projects/alpha/members/eve", "adm_a", json={"role": "caller"}).status_code == 200
    assert world.call("PUT", "/v1/projects/beta/members/eve", "adm_a", json={"role": "caller"}).status_code == 404
    assert world.call("PUT", "/v1/projects/alpha/members/eve", "dev_a", json={"role": "admin"}).status_code == 403
    users = {u["username"]: u for u in world.call("GET", "/v1/users", "root").json()["users"]}
    assert users["eve"]["projects"] == {"alpha": "caller", "gamma": "reviewer"}
    assert world.call("GET", "/v1/node-packs", "adm_a").status_code == 403
    assert world.call("GET", "/v1/node-packs", "root").status_code == 200
    assert world.call("GET", "/v1/nodes", "call_a").status_code == 200
    assert world.call("GET", "/v1/pools", "call_a").status_code == 200


def test_first_start_makes_the_admin_admin_of_the_default_project(sessions):
    from comfygate.platform.access.build import access_for_key
    from comfygate.platform.db import session_scope
    from comfygate.platform.models import ApiKey
    from comfygate.platform.services import accounts

    with session_scope(sessions) as session:
        first = accounts.bootstrap_admin(session)
        assert first is not None
        access = access_for_key(session, session.get(ApiKey, first.key.id))
    assert access.server_admin and access.username == "admin"
    assert {access.name_of(p): role for p, role in access.roles.items()} == {"default": "admin"}


def test_only_server_admins_set_limits_and_a_limited_key_makes_only_limited_keys(world: World):
    refused = world.call("POST", "/v1/keys", "dev_a", json={"name": "fast", "limits": {"runs_per_minute": 0}})
    assert refused.status_code == 403 and refused.json()["error"]["details"] == {"field": "limits"}
    assert "limits" in refused.json()["error"]["message"]
    assert create(world, "adm_a", {"name": "fast", "user": "dev_a", "scopes": {"projects": ["alpha"]},
                                   "limits": {"runs_per_minute": 1000}}) == (403, "limits")
    slow = world.call("POST", "/v1/keys", "root", json={"name": "slow", "user": "dev_a",
                                                        "scopes": {"projects": ["alpha"]},
                                                        "limits": {"runs_per_minute": 3, "requests_per_second": 2.5}})
    assert slow.status_code == 201, slow.text
    assert slow.json()["limits"] == {"runs_per_minute": 3, "requests_per_second": 2.5}
    world.keys["slow"] = slow.json()["secret"]
    # A key made by the limited key carries the same limits, and cannot lift them.
    child = world.call("POST", "/v1/keys", "slow", json={"name": "child"})
    assert child.status_code == 201, child.text
    assert child.json()["limits"] == {"runs_per_minute": 3, "requests_per_second": 2.5}
    world.keys["child"] = child.json()["secret"]
    listed = {k["name"]: k["limits"] for k in world.call("GET", "/v1/keys", "child").json()["keys"]}
    assert listed["child"] == {"runs_per_minute": 3, "requests_per_second": 2.5}
    assert create(world, "slow", {"name": "lifted", "limits": {"runs_per_minute": 0}}) == (403, "limits")
    # An unlimited key's keys stay unlimited (the operator's defaults apply).
    plain = world.call("POST", "/v1/keys", "dev_a", json={"name": "plain"})
    assert plain.status_code == 201 and plain.json()["limits"] is None


@pytest.mark.parametrize("value", [10**401, 1e300, 1_000_000_001, float("1e9") + 0.5],
                         ids=["401-digit int", "1e300", "1e9+1", "1e9+0.5"])
def test_limits_beyond_a_billion_are_refused_by_name(world: World, value):
    body = {"name": "huge", "limits": {"runs_per_minute": 30, "requests_per_second": value}}
    response = world.call("POST", "/v1/keys", "root", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"] == {"field": "limits.requests_per_second"}
    assert "1000000000" in response.json()["error"]["message"]
    assert create(world, "root", {"name": "big", "limits": {"runs_per_day": 10**9}}) == (201, None)


def test_a_huge_limit_written_into_the_database_is_ignored_not_a_500(world: World):
    from comfygate.platform.db import session_scope
    from comfygate.platform.models import ApiKey

    world.add_key("edited", "dev_a")
    factory = world.sessions()
    with session_scope(factory) as session:
        key = session.query(ApiKey).filter_by(name="edited").one()
        key.limits = {"runs_per_minute": 10**400, "requests_per_second": 10**400}
    factory.kw["bind"].dispose()
    assert world.call("GET", "/v1/workflows/wa", "edited").status_code == 200
    assert world.start_run("edited")


def test_project_admins_manage_only_member_keys_bound_to_their_projects(world: World):
    made = world.call("POST", "/v1/users", "root", json={"username": "both",
                                                         "projects": {"alpha": "developer", "beta": "developer"}})
    assert made.status_code == 201
    boss = world.call("POST", "/v1/users", "root", json={"username": "boss", "admin": True,
                                                         "projects": {"alpha": "admin"}})
    assert boss.status_code == 201
    world.add_key("both_any", "both")
    world.add_key("both_beta", "both", {"projects": ["beta"], "workflows": None, "actions": None})
    world.add_key("both_ab", "both", {"projects": ["alpha", "beta"], "workflows": None, "actions": None})
    world.add_key("both_alpha", "both", {"projects": ["alpha"], "workflows": None, "actions": ["read"]})
    world.add_key("boss_alpha", "boss", {"projects": ["alpha"], "workflows": None, "actions": None})
    listed = {k["name"] for k in world.call("GET", "/v1/keys", "adm_a").json()["keys"]}
    assert listed == {"adm_a", "both_alpha"}
    for name in ("root", "boss_alpha", "both_any", "both_beta", "both_ab", "dev_b"):
        prefix = world.keys[name].split("_")[1]
        assert world.call("DELETE", f"/v1/keys/{prefix}", "adm_a").status_code == 404, name
    assert world.call("GET", "/v1/workflows/wb", "both_beta").status_code == 200  # still works
    revoked = world.call("DELETE", f"/v1/keys/{world.keys['both_alpha'].split('_')[1]}", "adm_a")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # A server admin still sees and manages every key.
    every = {k["name"] for k in world.call("GET", "/v1/keys", "root").json()["keys"]}
    assert {"both_any", "boss_alpha", "root"} <= every


def test_a_project_admin_makes_keys_for_others_only_within_projects_they_administer(world: World):
    assert world.call("POST", "/v1/users", "root", json={
        "username": "both", "projects": {"alpha": "developer", "beta": "developer"}}).status_code == 201
    assert world.call("POST", "/v1/users", "root", json={
        "username": "boss", "admin": True, "projects": {"alpha": "admin"}}).status_code == 201
    in_alpha = {"projects": ["alpha"]}
    assert create(world, "adm_a", {"name": "x", "user": "root", "scopes": in_alpha}) == (403, "user")
    assert create(world, "adm_a", {"name": "x", "user": "boss", "scopes": in_alpha}) == (403, "user")
    assert create(world, "adm_a", {"name": "x", "user": "both"}) == (422, "scopes.projects")
    assert create(world, "adm_a", {"name": "x", "user": "both", "scopes": {"projects": ["beta"]}}) == (
        422, "scopes.projects")
    assert create(world, "adm_a", {"name": "x", "user": "both", "scopes": {"projects": ["alpha", "beta"]}}) == (
        422, "scopes.projects")
    assert create(world, "adm_a", {"name": "x", "user": "dev_b", "scopes": in_alpha}) == (422, "scopes.projects[0]")
    made = world.call("POST", "/v1/keys", "adm_a", json={"name": "both-alpha", "user": "both", "scopes": in_alpha})
    assert made.status_code == 201, made.text
    assert made.json()["scopes"]["projects"] == ["alpha"]
    world.keys["both-alpha"] = made.json()["secret"]
    # The key works in alpha only, though its user also develops in beta.
    assert world.call("GET", "/v1/workflows/wa", "both-alpha").status_code == 200
    assert world.call("GET", "/v1/workflows/wb", "both-alpha").status_code == 404
    # A server admin may still make any member's key, unscoped or for a server admin.
    assert create(world, "root", {"name": "y", "user": "both"}) == (201, None)
    assert create(world, "root", {"name": "z", "user": "boss", "admin": True}) == (201, None)
