import pytest

from comfygate.comfy_runtime import WorkflowFormatError, parse_workflow


def test_api_format_is_copied():
    data = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}, "_meta": {"title": "bg"}}}
    prompt = parse_workflow(data)
    assert prompt == data and prompt is not data
    prompt["1"]["inputs"]["width"] = 9
    assert data["1"]["inputs"]["width"] == 8


def test_json_text_is_accepted():
    expected = {"1": {"class_type": "X", "inputs": {}}}
    assert parse_workflow('{"1": {"class_type": "X", "inputs": {}}}') == expected


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "JSON object"),
        ("{not json", "not valid JSON"),
        ({}, "empty"),
        ({"1": "EmptyImage"}, "node '1'.*object"),
        ({"1": {"inputs": {}}}, "node '1'.*class_type"),
        ({"1": {"class_type": "EmptyImage", "inputs": []}}, "node '1'.*inputs"),
        ({"1": {"class_type": "EmptyImage"}}, "node '1'.*inputs"),
        ({1: {"class_type": "EmptyImage", "inputs": {}}}, "node ids"),
    ],
)
def test_rejections_say_what_and_where(data, match):
    with pytest.raises(WorkflowFormatError, match=match):
        parse_workflow(data)


def test_parse_workflow_sends_ui_documents_to_load_workflow():
    ui_export = {"last_node_id": 2, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": [], "version": 0.4}
    with pytest.raises(WorkflowFormatError, match=r"UI-format workflow.*load_workflow"):
        parse_workflow(ui_export)


def test_a_comfyui_prompt_request_body_gets_a_hint():
    with pytest.raises(WorkflowFormatError, match=r"body of a ComfyUI /prompt request"):
        parse_workflow({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}, "client_id": "x"})
