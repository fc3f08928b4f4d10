"""Issue 2's steps 2-7 over HTTP against a production-shaped install.

One stack for the module: ``comfygate serve --no-worker`` and one ``comfygate worker`` (concurrency 1) on
Redis, PostgreSQL for the run table, outputs on the loopback S3 server. Each test pushes the workflows it
needs (pushing the same JSON again is a no-op), so the tests do not depend on each other's order.
"""

from __future__ import annotations

import copy
import io
import time
from typing import Any

import pytest
import requests
from e2e_support import SLOW_INPUTS, SLOW_POLICY, Stack, b64, decode_png, gradient_png, load_workflow, slow_workflow
from PIL import ImageChops

pytestmark = pytest.mark.e2e

MAX_UPLOAD = 1024 * 1024

CARD_INPUTS = {
    "width": {"node": "1", "input": "width"},
    "height": {"node": "1", "input": "height"},
    "sigma": {"node": "7", "input": "sigma"},
    "card_color": {"node": "2", "input": "color"},
}

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
}


@pytest.fixture(scope="module")
def stack(production) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = production(COMFYGATE_WORKER_CONCURRENCY="1", COMFYGATE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD))
    stack.deployment.start_worker()
    return stack


@pytest.fixture(scope="module")
def card(stack: Stack) -> dict[str, Any]:
    return stack.push_ok("card", load_workflow("gradient_card.json"), CARD_INPUTS)


def assert_error(response: Any, status: int) -> dict[str, Any]:
    """A client error in the one JSON shape, never a 500."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


# --- step 2/3: upload ----------------------------------------------------------------------------------


def test_upload_gives_versioned_endpoint_with_typed_schema(stack: Stack) -> None:
    workflow = load_workflow("gradient_card.json")
    first = stack.push("gradient-card", workflow, CARD_INPUTS)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["workflow"] == "gradient-card"
    assert body["version"] == 1
    assert body["run_url"] == "/v1/workflows/gradient-card/versions/1/runs"
    schema = body["input_schema"]
    assert set(schema["properties"]) == set(CARD_INPUTS)
    width = schema["properties"]["width"]
    assert (width["type"], width["minimum"], width["maximum"], width["default"]) == ("integer", 1, 16384, 128)
    sigma = schema["properties"]["sigma"]
    assert (sigma["type"], sigma["minimum"], sigma["maximum"], sigma["default"]) == ("number", 0.1, 10.0, 3.0)
    assert schema["properties"]["card_color"]["maximum"] == 0xFFFFFF

    again = stack.push("gradient-card", workflow, CARD_INPUTS)
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 1

    # Changed JSON is a new version: scale the result, and expose the scaling method (a COMBO).
    changed = copy.deepcopy(workflow)
    changed["9"] = {"class_type": "ImageScale", "inputs": {"image": ["7", 0], "upscale_method": "bilinear",
                                                          "width": 96, "height": 80, "crop": "disabled"}}
    changed["8"]["inputs"]["images"] = ["9", 0]
    second = stack.push("gradient-card", changed, {**CARD_INPUTS, "method": {"node": "9", "input": "upscale_method"}})
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2
    assert second.json()["run_url"] == "/v1/workflows/gradient-card/versions/2/runs"
    method = second.json()["input_schema"]["properties"]["method"]
    assert method["enum"] == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert method["default"] == "bilinear"

    listed = stack.get("/v1/workflows/gradient-card").json()
    assert listed["latest_version"] == 2
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    # Version 1 is immutable and still runnable at its own URL; the newest version answers the short URL.
    run = stack.post("/v1/workflows/gradient-card/versions/1/runs?wait=30", {"inputs": {}}).json()
    assert (run["version"], run["status"], run["outputs"][0]["width"]) == (1, "succeeded", 128)
    run = stack.post("/v1/workflows/gradient-card/runs?wait=30", {"inputs": {"method": "area"}}).json()
    assert (run["version"], run["status"], run["outputs"][0]["width"]) == (2, "succeeded", 96)


def _card_with(**changes: Any) -> dict[str, Any]:
    workflow = load_workflow("gradient_card.json")
    for path, value in changes.items():
        node, _, field = path.partition("__")
        if field:
            workflow[node]["inputs"][field] = value
        else:
            workflow[node] = value
    return workflow


@pytest.mark.parametrize(("workflow", "node_id", "class_type", "input_name", "error_type"), [
    (_card_with(**{"7__blur_radius": 99}), "7", "ImageBlur", "blur_radius", "value_bigger_than_max"),
    (_card_with(**{"1__width": 0}), "1", "EmptyImage", "width", "value_smaller_than_min"),
    (_card_with(**{"6__destination": ["42", 0]}), "6", "ImageCompositeMasked", "destination", None),
    (_card_with(**{"7__sigma": "soft"}), "7", "ImageBlur", "sigma", None),
    (_card_with(**{"2__width": None}), "2", "EmptyImage", "width", None),
], ids=["above-max", "below-min", "link-to-missing-node", "wrong-type", "missing-required"])
def test_invalid_workflow_gets_node_errors(stack: Stack, workflow: dict[str, Any], node_id: str,
                                           class_type: str, input_name: str, error_type: str | None) -> None:
    if workflow[node_id]["inputs"].get(input_name, "") is None:
        del workflow[node_id]["inputs"][input_name]
    error = assert_error(stack.push("broken", workflow), 422)
    node_errors = error["details"]["node_errors"]
    assert node_id in node_errors, error
    assert node_errors[node_id]["class_type"] == class_type
    problems = node_errors[node_id]["errors"]
    assert any(p["extra_info"]["input_name"] == input_name for p in problems), problems
    if error_type:
        assert error_type in {p["type"] for p in problems}
    assert all(p["message"] for p in problems)
    assert stack.get("/v1/workflows/broken").status_code == 404  # nothing was stored


def test_unknown_node_and_malformed_uploads_are_client_errors(stack: Stack) -> None:
    unknown = _card_with(**{"5": {"class_type": "KSamplerTurbo", "inputs": {"value": 1}}})
    error = assert_error(stack.push("broken", unknown), 422)
    assert "KSamplerTurbo" in error["message"] and "node 5" in error["message"], error

    for not_nodes in ([1, 2, 3], {"1": "EmptyImage"}, "EmptyImage", {"1": {"inputs": {}}}):
        error = assert_error(stack.push("broken", not_nodes), 422)
        assert "workflow" in error["message"].lower() or "node" in error["message"].lower(), error

    no_output = {"1": {"class_type": "EmptyImage",
                       "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    assert "no outputs" in assert_error(stack.push("broken", no_output), 422)["message"].lower()

    headers = {**stack.deployment.headers(), "Content-Type": "application/json"}
    malformed = requests.post(stack.base_url + "/v1/workflows", data=b'{"name": "x", "workflow": {',
                              headers=headers, timeout=30)
    assert "not valid JSON" in assert_error(malformed, 400)["message"]
    assert_error(requests.post(stack.base_url + "/v1/workflows", data=b"[1, 2]", headers=headers,
                               timeout=30), 400)
    assert_error(requests.post(stack.base_url + "/v1/workflows", data=b"\xff\xfe", headers=headers,
                               timeout=30), 400)
    assert_error(stack.post("/v1/workflows", {"name": "../etc", "workflow": load_workflow("blank.json")}), 422)
    assert_error(stack.post("/v1/workflows", {"name": "no-workflow"}), 422)
    deep = b'{"name": "deep", "workflow": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "nested" in assert_error(requests.post(stack.base_url + "/v1/workflows", data=deep, headers=headers,
                                                  timeout=30), 400)["message"]
    for path in ("/v1/workflows/card/versions/99999999999999999999999", "/v1/workflows/card/versions/\u00b2",
                 "/v1/runs/some-run/outputs/99999999999999999999999"):
        assert_error(stack.get(path), 404)
    assert_error(stack.post("/v1/review/99999999999999999999999", {"decision": "approve"}), 404)
    assert stack.get("/v1/workflows/broken").status_code == 404


def test_file_names_from_users_never_reach_a_path(stack: Stack) -> None:
    escape = copy.deepcopy(INVERT)
    escape["1"]["inputs"]["image"] = "../../etc/passwd"
    error = assert_error(stack.push("escape", escape), 422)
    problems = error["details"]["node_errors"]["1"]
    assert problems["class_type"] == "LoadImage"
    assert problems["errors"][0]["extra_info"]["input_name"] == "image"
    assert "'..'" in str(problems)

    escape = load_workflow("blank.json")
    escape["2"]["inputs"]["filename_prefix"] = "../../x"
    error = assert_error(stack.push("escape", escape), 422)
    problems = error["details"]["node_errors"]["2"]
    assert problems["class_type"] == "SaveImage"
    assert problems["errors"][0]["extra_info"]["input_name"] == "filename_prefix"

    absolute = load_workflow("blank.json")
    absolute["2"]["inputs"]["filename_prefix"] = "/tmp/x"
    assert "absolute" in str(assert_error(stack.push("escape", absolute), 422)["details"])

    # The same check when the prefix is an exposed input, set per run: refused before anything is queued.
    stack.push_ok("named-output", load_workflow("blank.json"),
                  {"prefix": {"node": "2", "input": "filename_prefix"}})
    before = stack.count_runs()
    error = assert_error(stack.post("/v1/workflows/named-output/runs", {"inputs": {"prefix": "../../x"}}), 422)
    assert error["details"]["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "filename_prefix"
    assert error["details"]["node_errors"]["2"]["class_type"] == "SaveImage"
    assert [e["input"] for e in error["details"]["errors"]] == ["prefix"]
    assert "prefix" in error["message"] and "'..'" in error["message"]
    assert stack.count_runs() == before


# --- steps 4-6: runs -----------------------------------------------------------------------------------


def test_runs_need_a_key_and_valid_inputs(stack: Stack, card: dict[str, Any]) -> None:
    url = stack.base_url + card["run_url"]
    assert_error(requests.post(url, json={"inputs": {}}, timeout=30), 401)
    assert_error(requests.post(url, json={"inputs": {}}, headers={"Authorization": "Bearer cg_nope"},
                               timeout=30), 401)
    assert_error(requests.get(stack.base_url + "/v1/workflows", timeout=30), 401)

    before = stack.count_runs()
    for inputs, input_name in [
        ({"width": 0}, "width"),
        ({"width": 20000}, "width"),
        ({"width": "wide"}, "width"),
        ({"sigma": 11.5}, "sigma"),
        ({"card_color": 1.5}, "card_color"),
        ({"colour": 3}, "colour"),
    ]:
        error = assert_error(stack.post(card["run_url"], {"inputs": inputs}), 422)
        assert input_name in {e["input"] for e in error["details"]["errors"]}, error
    assert_error(stack.post(card["run_url"], {"inputs": [1, 2]}), 422)
    assert_error(stack.post(card["run_url"], {"width": 64}), 400)
    assert_error(stack.post(card["run_url"] + "?wait=1000", {"inputs": {}}), 422)
    assert_error(stack.post("/v1/workflows/card/versions/9/runs", {"inputs": {}}), 404)
    assert_error(stack.post("/v1/workflows/nope/runs", {"inputs": {}}), 404)
    assert stack.count_runs() == before, "a refused request must not create a run"


def test_run_succeeds_with_gated_output_and_timings(stack: Stack, card: dict[str, Any]) -> None:
    accepted = stack.post(card["run_url"], {"inputs": {"width": 160, "height": 120, "sigma": 2.5}})
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "queued"
    assert body["url"] == f"/v1/runs/{body['id']}"
    assert accepted.headers["Location"] == body["url"]

    run = stack.get(f"{body['url']}?wait=30").json()
    assert run["status"] == "succeeded", stack.explain(run)
    assert (run["workflow"], run["version"], run["attempt"]) == ("card", card["version"], 1)
    assert run["inputs"] == {"width": 160, "height": 120, "sigma": 2.5}
    assert run["error"] is None
    for timing in ("queue_ms", "execute_ms", "sentinel_ms", "store_ms"):
        assert isinstance(run["timings"][timing], int | float) and run["timings"][timing] >= 0, run["timings"]
    [output] = run["outputs"]
    assert output["content_type"] == "image/png"
    assert output["released"] is True
    verdict = output["verdict"]
    assert verdict["passed"] is True and verdict["reasons"] == []
    checks = {c["name"]: c for c in verdict["checks"]}
    assert {"decode", "finite", "blank", "noise"} <= set(checks), checks
    assert all(checks[n]["status"] == "passed" for n in ("decode", "finite", "blank", "noise")), checks
    assert checks["clip_alignment"]["status"] == "not_run"  # no CLIP model: recorded as such, never "passed"
    assert isinstance(verdict["scores"], dict) and verdict["scores"]

    image_response = stack.get(output["url"])
    assert image_response.status_code == 200
    assert image_response.headers["Content-Type"] == "image/png"
    image = decode_png(image_response.content)
    assert image.size == (160, 120)
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10  # card, stripe, blur: not flat

    # ?wait on the POST answers 200 with the finished run.
    finished = stack.post(card["run_url"] + "?wait=30", {"inputs": {"card_color": 0x00FF00}})
    assert finished.status_code == 200, finished.text
    assert finished.json()["status"] == "succeeded"
    assert finished.json()["outputs"][0]["url"].startswith(f"/v1/runs/{finished.json()['id']}/outputs/")

    assert stack.get(f"/v1/runs/{body['id']}/outputs/7").status_code == 404
    assert stack.get("/v1/runs/no-such-run").status_code == 404


# --- step 7: the gate and the review queue ------------------------------------------------------------


def test_rejected_output_is_withheld_until_an_admin_approves(stack: Stack) -> None:
    blank = stack.push_ok("blank", load_workflow("blank.json"), {"color": {"node": "1", "input": "color"}})
    rejected = stack.post(blank["run_url"] + "?wait=30", {"inputs": {}}).json()
    assert rejected["status"] == "rejected", stack.explain(rejected)
    [output] = rejected["outputs"]
    assert output["released"] is False
    assert output["verdict"]["passed"] is False
    assert any(reason.startswith("blank") for reason in output["verdict"]["reasons"]), output
    withheld = assert_error(stack.get(output["url"]), 403)
    assert "withheld" in withheld["message"] and "blank" in withheld["message"], withheld

    user_key = stack.create_key("e2e-user")
    assert user_key.startswith("cg_")
    assert stack.get("/v1/workflows", key=user_key).status_code == 200
    assert_error(stack.get("/v1/review", key=user_key), 403)
    assert_error(stack.post(f"/v1/review/{output['id']}", {"decision": "approve"}, key=user_key), 403)
    assert_error(stack.get(f"/v1/review/{output['id']}/image", key=user_key), 403)

    queue = stack.get("/v1/review")
    assert queue.status_code == 200, queue.text
    [item] = [i for i in queue.json()["items"] if i["run_id"] == rejected["id"]]
    assert item["output_id"] == output["id"]
    assert (item["workflow"], item["version"]) == ("blank", blank["version"])
    assert item["inputs"] == {}
    assert item["scores"] and any(reason.startswith("blank") for reason in item["reasons"])
    assert item["graph"]["1"]["class_type"] == "EmptyImage"
    preview = stack.get(item["image_url"])  # the admin sees the withheld image itself
    assert preview.status_code == 200 and decode_png(preview.content).size == (128, 128)

    bad = assert_error(stack.post(f"/v1/review/{output['id']}", {"decision": "maybe"}), 422)
    assert "maybe" in bad["message"]
    assert_error(stack.post("/v1/review/999999", {"decision": "approve"}), 404)

    decided = stack.post(f"/v1/review/{output['id']}", {"decision": "approve", "note": "grey is fine"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["run"]["status"] == "succeeded"
    run = stack.run(rejected["id"])
    assert run["status"] == "succeeded"
    assert run["outputs"][0]["released"] is True and run["outputs"][0]["review"] == "approved"
    released = stack.get(output["url"])
    assert released.status_code == 200
    assert decode_png(released.content).size == (128, 128)
    assert_error(stack.post(f"/v1/review/{output['id']}", {"decision": "reject"}), 409)
    assert rejected["id"] not in {i["run_id"] for i in stack.get("/v1/review").json()["items"]}

    # Another rejected run, rejected by the reviewer too: it stays withheld and the run stays rejected.
    other = stack.post(blank["run_url"] + "?wait=30", {"inputs": {"color": 0x202020}}).json()
    assert other["status"] == "rejected", stack.explain(other)
    other_output = other["outputs"][0]
    decided = stack.post(f"/v1/review/{other_output['id']}", {"decision": "reject"})
    assert decided.status_code == 200, decided.text
    run = stack.run(other["id"])
    assert run["status"] == "rejected"
    assert run["outputs"][0]["review"] == "rejected"
    assert "reviewer" in assert_error(stack.get(other_output["url"]), 403)["message"]
    assert_error(stack.post(f"/v1/review/{other_output['id']}", {"decision": "approve"}), 409)


# --- image inputs ---------------------------------------------------------------------------------------


def test_image_input_as_base64_and_as_multipart_upload(stack: Stack) -> None:
    invert = stack.push_ok("invert", INVERT, {"photo": {"node": "1", "input": "image"}})
    photo_schema = invert["input_schema"]["properties"]["photo"]
    assert photo_schema["type"] == "string" and photo_schema["contentEncoding"] == "base64"
    assert invert["input_schema"]["required"] == ["photo"]
    source = gradient_png(64, 48)
    expected = ImageChops.invert(decode_png(source).convert("RGB"))

    as_json = stack.post(invert["run_url"] + "?wait=30", {"inputs": {"photo": b64(source)}})
    assert as_json.status_code == 200, as_json.text
    run = as_json.json()
    assert run["status"] == "succeeded", stack.explain(run)
    inverted = decode_png(stack.get(run["outputs"][0]["url"]).content).convert("RGB")
    assert inverted.size == (64, 48)
    assert ImageChops.difference(inverted, expected).getbbox() is None  # exactly the inverted pixels

    data_url = stack.post(invert["run_url"] + "?wait=30",
                          {"inputs": {"photo": "data:image/png;base64," + b64(source)}})
    assert data_url.status_code == 200 and data_url.json()["status"] == "succeeded", data_url.text

    multipart = requests.post(stack.base_url + invert["run_url"] + "?wait=30", headers=stack.deployment.headers(),
                              files={"inputs": (None, "{}", "application/json"),
                                     "photo": ("my photo.png", source, "image/png")}, timeout=60)
    assert multipart.status_code == 200, multipart.text
    run = multipart.json()
    assert run["status"] == "succeeded", stack.explain(run)
    inverted = decode_png(stack.get(run["outputs"][0]["url"]).content).convert("RGB")
    assert ImageChops.difference(inverted, expected).getbbox() is None

    before = stack.count_runs()
    for value in ("not base64!!", b64(b"just some text, not an image"), b64(source[: len(source) // 2]), 42):
        error = assert_error(stack.post(invert["run_url"], {"inputs": {"photo": value}}), 422)
        assert "photo" in error["message"], error
    assert_error(stack.post(invert["run_url"], {"inputs": {}}), 422)
    assert_error(requests.post(stack.base_url + invert["run_url"], headers=stack.deployment.headers(),
                               files={"inputs": (None, "{}"), "other": ("x.png", source, "image/png")},
                               timeout=30), 422)
    gif = decode_png(source).convert("P")
    buffer = io.BytesIO()
    gif.save(buffer, format="GIF")
    assert "GIF" in assert_error(stack.post(invert["run_url"], {"inputs": {"photo": b64(buffer.getvalue())}}),
                                 422)["message"]

    too_big = b64(b"\0" * MAX_UPLOAD)
    assert_error(stack.post(invert["run_url"], {"inputs": {"photo": too_big}}), 413)
    assert_error(requests.post(stack.base_url + invert["run_url"], headers=stack.deployment.headers(),
                               files={"inputs": (None, "{}"), "photo": ("big.png", b"\0" * (MAX_UPLOAD + 1))},
                               timeout=60), 413)
    assert_error(stack.push("huge", {"1": {"class_type": "EmptyImage", "inputs": {"pad": "x" * MAX_UPLOAD}}}),
                 413)
    assert stack.count_runs() == before


# --- cancel -----------------------------------------------------------------------------------------------


def test_cancel_a_queued_and_a_running_run(stack: Stack) -> None:
    slow = stack.push_ok("slow", slow_workflow(), SLOW_INPUTS, policy=SLOW_POLICY)
    # 60 s inside one node: only a cancel at the node's next progress step can end it within the wait below.
    running_id = stack.submit("slow", {"seconds": 60.0})
    stack.wait_status(running_id, ("running",), timeout=20)
    # The only worker slot is busy, so this one waits in the queue.
    queued_id = stack.submit("slow", {"seconds": 0.1})
    assert stack.run(queued_id)["status"] == "queued"

    canceled = stack.post(f"/v1/runs/{queued_id}/cancel", {})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"

    asked = time.monotonic()
    requested = stack.post(f"/v1/runs/{running_id}/cancel", {})
    assert requested.status_code in (200, 202), requested.text
    run = stack.wait_status(running_id, timeout=20)
    took = time.monotonic() - asked
    assert run["status"] == "canceled", stack.explain(run)
    assert took < 2.0, f"the built-in engine took {took:.2f} s to stop a canceled run"
    assert run["engine"] == "builtin"
    assert "cancel" in run["error"]["message"]
    assert run["outputs"] == []
    assert run["error"].get("node_id") == "5", run["error"]  # stopped inside SlowPassImage, not after it
    assert_error(stack.post(f"/v1/runs/{running_id}/cancel", {}), 409)

    # The canceled queued run never runs, even though its task is still in the broker.
    after = stack.post(slow["run_url"] + "?wait=30", {"inputs": {"seconds": 0}}).json()
    assert after["status"] == "succeeded", stack.explain(after)
    assert stack.run(queued_id)["status"] == "canceled"
    assert stack.run(queued_id)["started_at"] is None


def test_a_run_past_its_versions_timeout_is_interrupted_and_fails(stack: Stack) -> None:
    pushed = stack.push_ok("slow-timeout", slow_workflow(), SLOW_INPUTS, policy=SLOW_POLICY, timeout_seconds=1)
    run_id = stack.submit("slow-timeout", {"seconds": 60.0})
    run = stack.wait_status(run_id, timeout=20)
    assert run["status"] == "failed", stack.explain(run)
    assert run["error"]["type"] == "timeout"
    assert run["error"]["node_id"] == "5"  # interrupted inside SlowPassImage, not after its minute
    assert pushed["timeout_seconds"] == 1
    # A bad timeout is refused at upload, naming the field.
    refused = stack.push("slow-timeout", slow_workflow(), SLOW_INPUTS, timeout_seconds=0)
    assert refused.status_code == 422 and "timeout_seconds" in refused.text, refused.text
