"""Safe defaults for exposed inputs and the operator's limits on runs, through the real server; the limits'
edge cases (0, fixed values, lowered limits) on the services."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import Server, running_server

from comfygate.platform.db import session_scope
from comfygate.platform.errors import Unprocessable
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.run_limits import RunLimits
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.storage import LocalStorage
from comfygate.settings import Settings

CHECKPOINT = "tiny.safetensors"


def sampler_workflow(steps: int = 20) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "t2i"}},
    }


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[Server]:
    data_dir = tmp_path / "api"
    # Validation only needs the checkpoint to be listed in the server's models folder; nothing runs here.
    (data_dir / "models" / "checkpoints").mkdir(parents=True)
    (data_dir / "models" / "checkpoints" / CHECKPOINT).write_bytes(b"")
    settings = Settings(data_dir=data_dir, database_url=database_url, watchdog_seconds=60)
    with running_server(settings) as server:
        yield server


def _error(response) -> dict:
    assert response.status_code == 422, response.text
    return response.json()["error"]


def test_without_a_spec_filename_prefix_is_not_an_input(live, card_workflow):
    created = live.call("POST", "/v1/workflows", json={"name": "card", "workflow": card_workflow})
    assert created.status_code == 201, created.text
    properties = created.json()["input_schema"]["properties"]
    assert "8.filename_prefix" not in properties and "1.width" in properties
    assert "8.filename_prefix" not in live.call("GET", "/v1/workflows/card/versions/1").json()["input_schema"][
        "properties"]
    refused = _error(live.call("POST", "/v1/workflows/card/runs", key="user",
                               json={"inputs": {"8.filename_prefix": "mine"}}))
    assert refused["details"]["errors"] == [{"input": "8.filename_prefix",
                                             "message": "unknown input '8.filename_prefix'"}]
    # A spec that names it exposes it; an unsafe value is still refused per run.
    spec = {"prefix": {"node": "8", "input": "filename_prefix"}}
    named = live.call("POST", "/v1/workflows", json={"name": "named", "workflow": card_workflow, "inputs": spec})
    assert "prefix" in named.json()["input_schema"]["properties"]
    escaping = _error(live.call("POST", "/v1/workflows/named/runs", key="user", json={"inputs": {"prefix": "../x"}}))
    assert "filename_prefix" in escaping["message"]


def test_runs_over_the_limits_are_refused_naming_the_input_and_the_limit(live, card_workflow):
    assert live.call("POST", "/v1/workflows", json={"name": "card", "workflow": card_workflow}).ok
    huge = _error(live.call("POST", "/v1/workflows/card/runs", key="user",
                            json={"inputs": {"1.width": 16384, "1.height": 16384}}))
    assert huge["message"] == ("inputs: 1.width x 1.height = 16384 x 16384 = 268435456 pixels is over this "
                               "server's limit of 4194304 pixels per image (COMFYGATE_MAX_RUN_PIXELS)")
    assert huge["details"]["errors"][0]["inputs"] == ["1.width", "1.height"]
    batch = _error(live.call("POST", "/v1/workflows/card/runs", key="user", json={"inputs": {"1.batch_size": 4096}}))
    assert batch["message"] == ("inputs: 1.batch_size = 4096 is over this server's limit of 16 images per batch "
                                "(COMFYGATE_MAX_BATCH_SIZE)")
    assert batch["details"]["errors"][0] | {"limit": 16, "setting": "COMFYGATE_MAX_BATCH_SIZE", "node": "1"} \
        == batch["details"]["errors"][0]
    # At the limit is fine: 2048 x 2048 pixels, 16 per batch.
    at_limit = live.call("POST", "/v1/workflows/card/runs", key="user",
                         json={"inputs": {"1.width": 2048, "1.height": 2048, "1.batch_size": 16}})
    assert at_limit.status_code == 202, at_limit.text


def test_the_schema_shows_the_limits_as_maxima(live, card_workflow):
    properties = live.call("POST", "/v1/workflows", json={"name": "card", "workflow": card_workflow}
                           ).json()["input_schema"]["properties"]
    assert properties["1.batch_size"]["maximum"] == 16
    # Both sides exposed: each may still go to 16384 when the other is small.
    assert properties["1.width"]["maximum"] == 16384
    sampler = live.call("POST", "/v1/workflows", json={"name": "t2i", "workflow": sampler_workflow()})
    assert sampler.status_code == 201, sampler.text
    assert sampler.json()["input_schema"]["properties"]["5.steps"]["maximum"] == 150
    # One side fixed at 1024: the other may go to 4194304 / 1024.
    wide = copy.deepcopy(sampler_workflow())
    wide["4"]["inputs"]["height"] = 1024
    spec = {"width": {"node": "4", "input": "width"}}
    schema = live.call("POST", "/v1/workflows", json={"name": "wide", "workflow": wide, "inputs": spec}
                       ).json()["input_schema"]
    assert schema["properties"]["width"]["maximum"] == 4096


def test_a_version_whose_fixed_values_are_over_a_limit_is_refused_at_upload(live):
    refused = _error(live.call("POST", "/v1/workflows", json={"name": "t2i", "workflow": sampler_workflow(10000),
                                                              "inputs": {"seed": {"node": "5", "input": "seed"}}}))
    assert refused["message"] == ("workflow: node 5 steps = 10000 is over this server's limit of 150 steps "
                                  "(COMFYGATE_MAX_STEPS)")
    exposed = _error(live.call("POST", "/v1/workflows", json={"name": "t2i", "workflow": sampler_workflow(10000)}))
    assert exposed["details"]["errors"][0]["input"] == "5.steps"
    assert live.call("GET", "/v1/workflows/t2i").status_code == 404


def test_exposed_input_names_are_limited_in_length_and_characters(live, card_workflow):
    long_name = "n" * 100_000
    refused = _error(live.call("POST", "/v1/workflows", json={
        "name": "card", "workflow": card_workflow, "inputs": {long_name: {"node": "1", "input": "width"}}}))
    assert refused["details"]["field"] == "inputs." + "n" * 64 + "..."
    assert len(refused["message"]) < 400 and "1-64 characters" in refused["message"]
    spaced = _error(live.call("POST", "/v1/workflows", json={
        "name": "card", "workflow": card_workflow, "inputs": {"my width": {"node": "1", "input": "width"}}}))
    assert spaced["details"]["field"] == "inputs.my width"
    # Names shaped like the default ones, of nodes inside subgraphs too ("5:3.width"), pass.
    nested = {"5:3": card_workflow["1"], "9": {"class_type": "SaveImage",
                                                "inputs": {"images": ["5:3", 0], "filename_prefix": "x"}}}
    spec = {"5:3.width": {"node": "5:3", "input": "width"}, "bg-color_2": {"node": "5:3", "input": "color"}}
    created = live.call("POST", "/v1/workflows", json={"name": "nested", "workflow": nested, "inputs": spec})
    assert created.status_code == 201, created.text
    assert sorted(created.json()["input_schema"]["properties"]) == ["5:3.width", "bg-color_2"]


@pytest.fixture
def services(sessions, registry, tmp_path):
    def push(workflow: dict, limits: RunLimits, **kwargs):
        with session_scope(sessions) as session:
            return workflow_service.push_version(session, registry, name="w", workflow=workflow,
                                                 run_limits=limits, **kwargs).version.id

    def run(version_id: int, inputs: dict, limits: RunLimits):
        with session_scope(sessions) as session:
            version = session.get(workflow_service.WorkflowVersion, version_id)
            return run_service.create_run(session, registry, LocalStorage(tmp_path / "files"),
                                          ImageLimits(1 << 20, 1 << 22), version, inputs, {}, None,
                                          run_limits=limits)
    return push, run


def test_fixed_values_are_held_to_limits_lowered_after_the_upload(services, card_workflow):
    push, run = services
    version_id = push(card_workflow, RunLimits(), inputs_spec={"blur": {"node": "7", "input": "sigma"}})
    with pytest.raises(Unprocessable) as caught:
        run(version_id, {}, RunLimits(max_pixels=10_000))
    assert caught.value.message == ("inputs: node 1 width x node 1 height = 128 x 128 = 16384 pixels is over this "
                                    "server's limit of 10000 pixels per image (COMFYGATE_MAX_RUN_PIXELS)")
    assert [e["node"] for e in caught.value.details["errors"]] == ["1"]


def test_zero_means_no_limit(services, card_workflow):
    push, run = services
    big = copy.deepcopy(card_workflow)
    big["1"]["inputs"]["batch_size"] = 4096
    with pytest.raises(Unprocessable, match="COMFYGATE_MAX_BATCH_SIZE"):
        push(big, RunLimits())
    unlimited = RunLimits(max_pixels=0, max_batch=0, max_frames=0, max_steps=0)
    version_id = push(big, unlimited)
    assert run(version_id, {"1.width": 16384, "1.height": 16384}, unlimited).status == "queued"
