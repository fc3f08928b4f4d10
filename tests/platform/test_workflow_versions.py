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


def test_without_a_spec_every_constant_widget_input_is_exposed(sessions, registry, card_workflow):
    summary, _ = push(sessions, registry, name="card", workflow=card_workflow)
    props = summary["input_schema"]["properties"]
    assert "1.color" in props and "8.filename_prefix" in props
    assert "8.images" not in props  # a link, not a widget


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
    with pytest.raises(Unprocessable, match="policy"):
        push(sessions, registry, name="card", workflow=card_workflow,
             policy={"checks": {"blank": {"threshold": "high"}}})
