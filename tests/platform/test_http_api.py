"""The REST API's answers to bad requests, from a real server on a loopback port (no worker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

CARD = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "gradient_card.json").read_text())


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/workflows"), ("POST", "/v1/workflows"), ("GET", "/v1/runs/x"), ("GET", "/v1/review"),
])
def test_every_v1_route_needs_a_key(server, method, path):
    response = server.call(method, path, key=None)
    assert response.status_code == 401
    assert "Bearer" in error_of(response)["message"]


def test_an_unknown_key_is_refused(server):
    response = requests.get(server.url + "/v1/workflows", headers={"Authorization": "Bearer cg_x_y"}, timeout=10)
    assert response.status_code == 401


@pytest.mark.parametrize(("body", "status", "phrase"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"", 400, "empty"),
    (json.dumps({"name": "x", "workflow": [1]}).encode(), 422, "workflow"),
    (json.dumps({"name": "x", "workflow": {"1": "EmptyImage"}}).encode(), 422, "1"),
    (json.dumps({"name": "x"}).encode(), 422, "'workflow' is required"),
    (json.dumps({"name": "x", "workflow": CARD, "extra": 1}).encode(), 422, "extra"),
    (b'{"name": "x", "workflow": {"1": {"class_type": "EmptyImage", "inputs": {}, "_meta": NaN}}}', 400, "NaN"),
    (b'{"name": "x", "n": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, 400, "nested"),
])
def test_malformed_uploads_get_a_clear_4xx(server, body, status, phrase):
    response = server.call("POST", "/v1/workflows", data=body)
    assert response.status_code == status
    assert phrase in json.dumps(error_of(response))


def test_an_invalid_workflow_gets_comfyui_shaped_node_errors(server):
    broken = json.loads(json.dumps(CARD))
    broken["3"]["inputs"]["source"] = ["42", 0]
    response = server.call("POST", "/v1/workflows", json={"name": "broken", "workflow": broken})
    assert response.status_code == 422
    node_errors = error_of(response)["details"]["node_errors"]
    assert node_errors["3"]["class_type"] == "ImageCompositeMasked"
    assert node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "source"


def test_upload_then_read_back(server):
    created = server.call("POST", "/v1/workflows", json={"name": "card", "workflow": CARD})
    assert created.status_code in (200, 201)
    again = server.call("POST", "/v1/workflows", json={"name": "card", "workflow": CARD})
    assert again.status_code == 200 and again.json()["version"] == created.json()["version"]
    detail = server.call("GET", "/v1/workflows/card").json()
    assert detail["latest_version"] == created.json()["version"]
    version = server.call("GET", f"/v1/workflows/card/versions/{detail['latest_version']}").json()
    assert version["graph"] == CARD


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/workflows/nope", 404), ("/v1/workflows/card/versions/99", 404), ("/v1/workflows/card/versions/x", 404),
    ("/v1/runs/nope", 404), ("/v1/runs/nope/outputs/0", 404), ("/v1/no-such-route", 404),
    ("/v1/runs/%00", 404), ("/v1/workflows/%00", 404), ("/v1/workflows/card/versions/" + "9" * 5000, 404),
    ("/v1/runs/" + "0" * 32 + "/outputs/" + "9" * 40, 404), ("/v1/review/" + "9" * 40 + "/image", 404),
])
def test_missing_things_are_404_with_a_json_body(server, path, status):
    server.call("POST", "/v1/workflows", json={"name": "card", "workflow": CARD})
    response = server.call("GET", path)
    assert response.status_code == status
    error_of(response)


def test_bad_run_requests_are_refused_before_queueing(server):
    server.call("POST", "/v1/workflows", json={"name": "card", "workflow": CARD,
                                               "inputs": {"background": {"node": "1", "input": "color"}}})
    cases = [
        ({"inputs": {"background": "red"}}, "", 422),
        ({"inputs": {"colour": 1}}, "", 422),
        ({"inputs": {}, "extra": 1}, "", 400),
        ({"inputs": {}}, "?wait=abc", 422),
        ({"inputs": {}}, "?wait=9999", 422),
    ]
    for body, query, status in cases:
        response = server.call("POST", f"/v1/workflows/card/runs{query}", json=body)
        assert response.status_code == status, (body, query, response.text)
        error_of(response)


def test_oversized_bodies_get_413(server):
    response = server.call("POST", "/v1/workflows", data=b"{" + b" " * 300_000 + b"}")
    assert response.status_code == 413
    error_of(response)


def test_review_needs_the_review_right(server):
    assert server.call("GET", "/v1/review", key="user").status_code == 403
    # A review item it may not review is answered like one that does not exist.
    assert server.call("POST", "/v1/review/1", key="user", json={"decision": "approve"}).status_code == 404
    assert server.call("GET", "/v1/review").json() == {"items": [], "count": 0}


def test_health_needs_no_key(server):
    assert requests.get(server.url + "/healthz", timeout=10).json() == {"ok": True}


@pytest.mark.parametrize(("headers", "body"), [
    ({"Content-Type": "application/x-www-form-urlencoded; charset=bogus"}, b"username=a&password=b"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"username=\xff\xfe&password=b"),
    ({"Content-Type": "multipart/form-data; boundary=xx"}, b"--xx\r\nno colon here\r\n\r\nv\r\n--xx--\r\n"),
])
def test_malformed_login_forms_are_400_not_500(server, headers, body):
    response = requests.post(server.url + "/login", data=body, headers=headers, timeout=10,
                             allow_redirects=False)
    assert response.status_code in (400, 401), response.text


def test_a_nul_in_the_login_name_is_refused_naming_the_field(server):
    response = requests.post(server.url + "/login", data={"username": "a\x00", "password": "b"}, timeout=10,
                             allow_redirects=False)
    assert response.status_code == 422
    assert "form field 'username' contains a NUL character" in response.text


CARD_UI = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "gradient_card.ui.json").read_text())


def test_a_ui_export_uploads_converted_and_keeps_the_document(server):
    created = server.call("POST", "/v1/workflows", json={"name": "card-ui", "workflow": CARD_UI})
    assert created.status_code in (200, 201), created.text
    summary = created.json()
    assert summary["source_format"] == "ui"
    version = server.call("GET", f"/v1/workflows/card-ui/versions/{summary['version']}").json()
    assert version["graph"] == CARD  # the editor's save runs exactly what Export (API) wrote
    source = server.call("GET", version["source_url"])
    assert source.status_code == 200 and source.json() == CARD_UI


def test_a_ui_export_of_an_uploaded_api_workflow_is_the_same_version(server):
    api = server.call("POST", "/v1/workflows", json={"name": "card-both", "workflow": CARD})
    ui = server.call("POST", "/v1/workflows", json={"name": "card-both", "workflow": CARD_UI})
    assert ui.status_code == 200 and ui.json()["version"] == api.json()["version"]


@pytest.mark.parametrize("as_ui", [False, True], ids=["api", "ui"])
def test_every_missing_node_type_is_listed_at_upload(server, as_ui):
    if as_ui:
        workflow = json.loads(json.dumps(CARD_UI))
        by_id = {n["id"]: n for n in workflow["nodes"]}
        by_id[7]["type"], by_id[6]["type"] = "FancyUpscaler", "MagicComposite"
    else:
        workflow = json.loads(json.dumps(CARD))
        workflow["7"]["class_type"], workflow["6"]["class_type"] = "FancyUpscaler", "MagicComposite"
    response = server.call("POST", "/v1/workflows", json={"name": "needs-packs", "workflow": workflow})
    assert response.status_code == 422
    error = error_of(response)
    assert "FancyUpscaler" in error["message"] and "MagicComposite" in error["message"]
    extra = error["details"]["error"]["extra_info"]
    assert extra["missing_node_types"] == ["FancyUpscaler", "MagicComposite"]
    assert extra["nodes"] == {"FancyUpscaler": ["7"], "MagicComposite": ["6"]}
    assert server.call("GET", "/v1/workflows/needs-packs").status_code == 404  # nothing stored


def _reroute_chain(length: int) -> dict:
    """EmptyImage -> `length` reroutes -> PreviewImage, as the editor saves it."""
    nodes = [{"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [8, 8, 1, 0],
              "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]}]
    nodes += [{"id": 1 + i, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": i}],
               "outputs": [{"name": "", "type": "IMAGE", "links": [i + 1]}]} for i in range(1, length + 1)]
    nodes.append({"id": length + 2, "type": "PreviewImage", "mode": 0,
                  "inputs": [{"name": "images", "type": "IMAGE", "link": length + 1}]})
    links = [[i, i, 0, i + 1, 0, "IMAGE"] for i in range(1, length + 2)]
    return {"nodes": nodes, "links": links, "version": 0.4}


@pytest.mark.parametrize(("workflow", "phrase"), [
    # "²".isdigit() is True but int("²") fails: such ids are names, not numbers.
    ({"²": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
      "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}, None),
    ({"nodes": [{"id": 1, "type": "EmptyImage", "mode": 4}, {"id": 2, "type": "PreviewImage", "mode": 0,
                                                          "inputs": [{"name": "images", "type": "IMAGE", "link": 5}]}],
      "links": [[5, 1, -1, 2, 0, "IMAGE"]]}, "non-negative integer"),
    (_reroute_chain(1000), "too many reroutes"),
], ids=["unicode-digit-id", "negative-slot", "long-reroute-chain"])
def test_odd_but_possible_documents_get_an_answer_not_a_500(server, workflow, phrase):
    response = server.call("POST", "/v1/workflows", json={"name": "odd", "workflow": workflow})
    if phrase is None:
        assert response.status_code in (200, 201), response.text
    else:
        assert response.status_code == 422 and phrase in error_of(response)["message"], response.text


def test_a_short_reroute_chain_converts(server):
    response = server.call("POST", "/v1/workflows", json={"name": "chain", "workflow": _reroute_chain(50)})
    assert response.status_code in (200, 201), response.text
