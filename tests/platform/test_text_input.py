"""Text no database can store (unpaired surrogates, NUL) is a 422 naming the field, on SQLite and PostgreSQL,
through the real server: JSON bodies at any depth, multipart run requests, query strings and path segments."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from live_server import Server, running_server
from review_support import record_rejected_output

from comfygate.platform.storage import LocalStorage
from comfygate.settings import Settings

RULE = "text must be valid Unicode without NUL characters"


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[Server]:
    settings = Settings(data_dir=tmp_path / "api", database_url=database_url, watchdog_seconds=60)
    with running_server(settings) as server:
        yield server


def _refused(response: requests.Response, field: str, problem: str) -> dict:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == field, error
    assert problem in error["message"] and RULE in error["message"], error["message"]
    return error


def test_a_lone_surrogate_anywhere_in_an_upload_is_a_422_naming_its_path(live, card_workflow):
    in_title = copy.deepcopy(card_workflow)
    in_title["3"]["_meta"]["title"] = "Place \ud800 card"
    _refused(live.call("POST", "/v1/workflows", json={"name": "card", "workflow": in_title}),
             "workflow.3._meta.title", "an unpaired surrogate (\\ud800)")

    in_value = copy.deepcopy(card_workflow)
    in_value["8"]["inputs"]["filename_prefix"] = "out\udfff"
    _refused(live.call("POST", "/v1/workflows", json={"name": "card", "workflow": in_value}),
             "workflow.8.inputs.filename_prefix", "an unpaired surrogate (\\udfff)")

    named = {"name": "card", "workflow": card_workflow, "inputs": {"w\ud800": {"node": "1", "input": "width"}}}
    error = _refused(live.call("POST", "/v1/workflows", json=named), "inputs.w\\ud800", "in its name")
    assert "\\ud800" in error["message"]

    in_policy = {"name": "card", "workflow": card_workflow, "policy": {"prompt_input": "a\x00"}}
    _refused(live.call("POST", "/v1/workflows", json=in_policy), "policy.prompt_input", "a NUL character")
    # Nothing was stored by any of them.
    assert live.call("GET", "/v1/workflows/card").status_code == 404
    assert live.call("POST", "/v1/workflows", json={"name": "card", "workflow": card_workflow}).status_code == 201


def test_bad_text_in_a_run_request_is_a_422_naming_the_input(live, card_workflow):
    assert live.call("POST", "/v1/workflows", json={"name": "card", "workflow": card_workflow}).ok
    _refused(live.call("POST", "/v1/workflows/card/runs", key="user", json={"inputs": {"1.width": "\ud800"}}),
             "inputs.1.width", "an unpaired surrogate")
    _refused(live.call("POST", "/v1/workflows/card/runs", key="user",
                       json={"inputs": {}, "webhook": "http://127.0.0.1/\x00"}),
             "webhook", "a NUL character")
    # A multipart request: the JSON of its inputs field, and its text fields.
    multipart = live.call("POST", "/v1/workflows/card/runs", key="user",
                          files={"inputs": (None, json.dumps({"1.color": "a\x00"}))})
    _refused(multipart, "inputs.1.color", "a NUL character")
    webhook = live.call("POST", "/v1/workflows/card/runs", key="user",
                        files={"inputs": (None, "{}"), "webhook": (None, "http://127.0.0.1/\x00")})
    _refused(webhook, "webhook", "a NUL character")


def test_nul_in_a_query_parameter_or_a_path_segment_is_a_422(live):
    run_id = "0" * 32
    response = live.call("GET", f"/v1/runs/{run_id}?wait=%00")
    error = _refused(response, "wait", "a NUL character")
    assert error["details"]["in"] == "query parameter"
    assert "query parameter 'wait'" in error["message"]
    named = _refused(live.call("GET", "/v1/nodes?po%00ol=x"), "po\\u0000ol", "in its name")
    assert named["details"]["in"] == "query parameter"
    segment = _refused(live.call("GET", "/v1/nodes/Empty%00Image"), "class_type", "a NUL character")
    assert segment["details"]["in"] == "path parameter"
    # Refused before anything else: without a key too (nothing is looked up with such text).
    assert live.call("GET", "/v1/nodes/Empty%00Image", key=None).status_code == 422


@pytest.fixture
def rejected_output(live, database_url, registry, blank_workflow, tmp_path) -> int:
    """A run whose output the gate rejected, in the live server's database, as a worker records it."""
    from comfygate.platform.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    output_id = record_rejected_output(make_session_factory(engine), registry, LocalStorage(tmp_path / "files"),
                                       blank_workflow)
    engine.dispose()
    return output_id


def test_a_review_note_with_nul_is_a_422_and_the_output_stays_pending(live, rejected_output):
    response = live.call("POST", f"/v1/review/{rejected_output}", json={"decision": "approve", "note": "ok\x00"})
    _refused(response, "note", "a NUL character")
    pending = live.call("GET", "/v1/review").json()["items"]
    assert [item["output_id"] for item in pending] == [rejected_output]
    decided = live.call("POST", f"/v1/review/{rejected_output}", json={"decision": "approve", "note": "ok"})
    assert decided.status_code == 200 and decided.json()["released"] is True


def test_a_number_json_reads_as_infinity_is_a_422(live, card_workflow):
    body = json.dumps({"name": "card", "workflow": card_workflow, "timeout_seconds": 1}).replace(
        '"timeout_seconds": 1', '"timeout_seconds": 1e400')
    response = live.call("POST", "/v1/workflows", data=body)
    assert response.status_code == 422 and response.json()["error"]["details"]["field"] == "timeout_seconds"
