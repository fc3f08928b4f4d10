import copy

import pytest

from comfygate.platform.db import session_scope
from comfygate.platform.errors import NotFound, Unprocessable
from comfygate.platform.services import workflows as service


def push(sessions, registry, **kwargs):
    with session_scope(sessions) as session:
        result = service.push_version(session, registry, **kwargs)
        return service.version_summary(result.version), result.created


def test_versions_are_content_addressed(sessions, registry, card_workflow):
    first, created = push(sessions, registry, name="card", workflow=card_workflow)
    assert created and first["version"] == 1
    assert first["run_url"] == "/v1/workflows/card/versions/1/runs"

    again, created = push(sessions, registry, name="card", workflow=copy.deepcopy(card_workflow))
    assert not created and again["version"] == 1

    changed = copy.deepcopy(card_workflow)
    changed["1"]["inputs"]["width"] = 96
    second, created = push(sessions, registry, name="card", workflow=changed)
    assert created and second["version"] == 2

    with session_scope(sessions) as session:
        assert service.get_version(session, "card").number == 2
        assert service.get_version(session, "card", 1).graph["1"]["inputs"]["width"] == 128


def test_exposed_inputs_make_the_input_schema(sessions, registry, card_workflow):
    summary, _ = push(sessions, registry, name="card", workflow=card_workflow,
                      inputs_spec={"background": {"node": "1", "input": "color"},
                                   "blur": {"node": "7", "input": "sigma"}})
    props = summary["input_schema"]["properties"]
    assert set(props) == {"background", "blur"}
    assert props["background"]["type"] == "integer"
    assert props["background"]["maximum"] == 16777215
    assert props["blur"]["type"] == "number"


def test_without_a_spec_every_constant_widget_input_but_output_paths_is_exposed(sessions, registry, card_workflow):
    summary, _ = push(sessions, registry, name="card", workflow=card_workflow)
    props = summary["input_schema"]["properties"]
    assert "1.color" in props and "7.sigma" in props
    assert "8.images" not in props  # a link, not a widget
    assert "8.filename_prefix" not in props  # where the save node writes is not the caller's choice


def test_invalid_workflow_names_node_and_input(sessions, registry, card_workflow):
    card_workflow["1"]["inputs"]["width"] = 0
    with pytest.raises(Unprocessable) as caught:
        push(sessions, registry, name="card", workflow=card_workflow)
    node_errors = caught.value.details["node_errors"]
    assert node_errors["1"]["class_type"] == "EmptyImage"
    assert node_errors["1"]["errors"][0]["extra_info"]["input_name"] == "width"
    with session_scope(sessions) as session, pytest.raises(NotFound):
        service.get_version(session, "card")


@pytest.mark.parametrize("name", ["", "Card", "../x", "a b", "x" * 200, 5])
def test_bad_names_are_refused(sessions, registry, card_workflow, name):
    with pytest.raises(Unprocessable, match="name"):
        push(sessions, registry, name=name, workflow=card_workflow)


@pytest.mark.parametrize(("spec", "where"), [
    ({"p": {"node": "99", "input": "color"}}, "99"),
    ({"p": {"node": "1", "input": "nope"}}, "nope"),
    ({"p": {"node": "8", "input": "images"}}, "images"),
    ({"p": "1.color"}, "inputs.p"),
])
def test_bad_input_specs_name_what_is_wrong(sessions, registry, card_workflow, spec, where):
    with pytest.raises(Unprocessable) as caught:
        push(sessions, registry, name="card", workflow=card_workflow, inputs_spec=spec)
    assert where in str(caught.value) + str(caught.value.details)


def test_bad_policy_is_refused_with_its_key(sessions, registry, card_workflow):
    with pytest.raises(Unprocessable, match="policy") as caught:
        push(sessions, registry, name="card", workflow=card_workflow,
             policy={"checks": {"blank": {"reject": "high"}}})
    assert caught.value.details == {"field": "policy.checks.blank.reject"}


def test_a_v1_policy_upload_is_refused_naming_the_old_key(sessions, registry, card_workflow):
    with pytest.raises(Unprocessable, match="policy format changed") as caught:
        push(sessions, registry, name="card", workflow=card_workflow,
             policy={"checks": {"blank": {"enabled": True, "threshold": 0.1}}})
    assert caught.value.details["field"].startswith("policy.checks.blank.")


def test_a_version_starts_at_policy_revision_one_with_the_normalised_policy(sessions, registry, card_workflow):
    summary, _ = push(sessions, registry, name="card", workflow=card_workflow,
                      policy={"checks": {"blank": {"reject": 0.05}}, "retries": 2})
    assert summary["policy_revision"] == 1
    assert summary["policy_url"] == "/v1/workflows/card/versions/1/policy"
    with session_scope(sessions) as session:
        current = service.get_policy(session, "card", 1)
    assert (current["revision"], current["updated_at"]) == (1, None)
    policy = current["policy"]
    assert policy["checks"]["blank"] == {"reject": 0.05} and policy["retries"] == 2
    assert policy["checks"]["decode"] == "reject" and policy["best_of"] == 1  # defaults written out


def test_editing_a_policy_bumps_its_revision_and_keeps_the_version(sessions, registry, card_workflow):
    push(sessions, registry, name="card", workflow=card_workflow)
    edited = {"checks": {"blank": {"reject": 0.05, "review": 0.1}, "noise": "off"}, "retries": 3}
    with session_scope(sessions) as session:
        version = service.update_policy(session, "card", 1, edited)
        assert version.policy_revision == 2 and version.policy_updated_at is not None
    with session_scope(sessions) as session:
        service.update_policy(session, "card", 1, {**edited, "retries": 4})
    with session_scope(sessions) as session:
        current = service.get_policy(session, "card", 1)
        summary = service.version_summary(service.get_version(session, "card", 1))
    assert current["revision"] == 3 and current["updated_at"].endswith("Z")
    assert current["policy"]["checks"]["blank"] == {"reject": 0.05, "review": 0.1}
    assert current["policy"]["checks"]["noise"] == "off" and current["policy"]["retries"] == 4
    assert summary["policy"] == current["policy"] and summary["policy_revision"] == 3
    # The graph did not change, so pushing it again is still version 1 (the edit made no new version).
    again, created = push(sessions, registry, name="card", workflow=copy.deepcopy(card_workflow))
    assert not created and again["version"] == 1 and again["policy_revision"] == 3


BAD_POLICY_EDITS = [
    ({"checks": {"blank": {"reject": "high"}}}, "policy.checks.blank.reject"),
    ({"checks": {"blank": {"reject": 1.5}}}, "policy.checks.blank.reject"),
    ({"checks": {"sharpness": "reject"}}, "policy.checks.sharpness"),
    ({"retries": 11}, "policy.retries"),
    ({"prompt_input": "1.colour"}, "policy.prompt_input"),
    ([1], "policy"),
]


def test_a_bad_policy_edit_names_the_key_and_changes_nothing(sessions, registry, card_workflow):
    push(sessions, registry, name="card", workflow=card_workflow)
    for policy, field in BAD_POLICY_EDITS:
        with session_scope(sessions) as session, pytest.raises(Unprocessable) as caught:
            service.update_policy(session, "card", 1, policy)
        assert caught.value.details == {"field": field}, policy
    with session_scope(sessions) as session, pytest.raises(NotFound, match="no version 7"):
        service.update_policy(session, "card", 7, {})
    with session_scope(sessions) as session:
        assert service.get_policy(session, "card", 1)["revision"] == 1


def test_prompt_input_may_name_an_exposed_input(sessions, registry, card_workflow):
    push(sessions, registry, name="card", workflow=card_workflow,
         inputs_spec={"title": {"node": "8", "input": "filename_prefix"}})
    with session_scope(sessions) as session:
        assert service.update_policy(session, "card", 1, {"prompt_input": "title"}).policy["prompt_input"] == "title"
    with session_scope(sessions) as session, pytest.raises(Unprocessable, match="'prompt'.*exposed inputs"):
        service.update_policy(session, "card", 1, {"prompt_input": "prompt"})


def test_policy_over_http(server, card_workflow):
    # The plain key may publish, so it reads policies; who may not is tested in test_access.py.
    assert server.call("POST", "/v1/workflows", json={"name": "pol", "workflow": card_workflow}).ok
    path = "/v1/workflows/pol/versions/1/policy"
    assert server.call("GET", path, key="user").status_code == 200
    before = server.call("GET", path).json()
    assert before["workflow"] == "pol" and before["version"] == 1 and before["policy"]["checks"]["decode"] == "reject"

    bad = server.call("PUT", path, json={"checks": {"blank": {"reject": "high"}}})
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert error["details"] == {"field": "policy.checks.blank.reject"} and "blank" in error["message"]
    assert server.call("PUT", path, data=b"[1]").status_code == 400

    saved = server.call("PUT", path, json={"checks": {"blank": {"reject": 0.07}}})
    assert saved.status_code == 200, saved.text
    assert saved.json()["revision"] == before["revision"] + 1
    after = server.call("GET", path).json()
    assert after["policy"]["checks"]["blank"] == {"reject": 0.07} and after["revision"] == saved.json()["revision"]
    assert server.call("GET", "/v1/workflows/pol/versions/1").json()["policy_revision"] == after["revision"]
    assert server.call("GET", "/v1/workflows/pol/versions/2/policy").status_code == 404
