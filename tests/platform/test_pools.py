"""Capabilities per pool: workers report their engine's node schemas and model files, and uploads, UI-format
conversion and runs for a pool are checked against them. HTTP tests talk to a real server on a loopback
port (SQLite); the reports are written as a worker writes them (publish_capabilities)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flux import (
    CLIP_L,
    FLUX_ONLY_NODES,
    REFERENCE,
    T5,
    UNET,
    VAE,
    flux_capabilities,
    flux_prompt,
    flux_ui_workflow,
)
from live_server import Server, running_server
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.engines import Capabilities
from comfygate.platform.models import PoolCapabilities
from comfygate.platform.pools import CapabilityReporter, publish_capabilities
from comfygate.platform.services import accounts
from comfygate.platform.services import workflows as workflow_service
from comfygate.settings import Settings

pytestmark = pytest.mark.skipif(not REFERENCE.is_file(), reason=f"needs the recorded object_info at {REFERENCE}")

CARD = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "gradient_card.json").read_text())
PROMPT_INPUT = {"prompt": {"node": "6", "input": "text"}}


@dataclass
class PoolServer:
    server: Server
    sessions: sessionmaker[Session]

    def upload(self, name: str, workflow: dict, **fields: object) -> requests.Response:
        return self.server.call("POST", "/v1/workflows", json={"name": name, "workflow": workflow, **fields})

    def get(self, path: str) -> requests.Response:
        return self.server.call("GET", path, key="user")

    def report(self, pool: str, caps: Capabilities, worker: str = "gpu-1", engine: str = "comfyui") -> bool:
        return publish_capabilities(self.sessions, pool, engine, worker, caps)


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("pools"), watchdog_seconds=60)
    with running_server(settings) as server:
        engine = make_engine(settings.database_url)
        yield PoolServer(server, make_session_factory(engine))
        engine.dispose()


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


# -- uploads ---------------------------------------------------------------------------------------------------


def test_a_flux_workflow_is_refused_for_a_pool_without_its_nodes_listing_every_node_type_and_model_file(pools):
    pools.report("sd-only", flux_capabilities(with_models=False, without=FLUX_ONLY_NODES))
    response = pools.upload("flux-refused", flux_prompt(), pool="sd-only", inputs=PROMPT_INPUT)
    assert response.status_code == 422, response.text
    error = error_of(response)
    missing = error["details"]["missing"]
    assert missing["node_types"] == [{"class_type": "DualCLIPLoader", "nodes": ["11"]},
                                     {"class_type": "EmptySD3LatentImage", "nodes": ["27"]},
                                     {"class_type": "FluxGuidance", "nodes": ["35"]}]
    # The known nodes' model files are listed too, though the unknown types stop validation.
    assert missing["model_files"] == [
        {"node": "10", "class_type": "UNETLoader", "input": "unet_name", "value": UNET},
        {"node": "12", "class_type": "VAELoader", "input": "vae_name", "value": VAE}]
    for name in (*FLUX_ONLY_NODES, UNET, VAE, "'sd-only'"):
        assert name in error["message"]
    assert error["details"]["checked_against"]["pool"] == "sd-only"
    assert error["details"]["checked_against"]["source"] == "pool"
    assert pools.get("/v1/workflows/flux-refused").status_code == 404  # nothing stored


def test_a_pool_with_the_nodes_but_not_the_files_gets_every_missing_model_file(pools):
    pools.report("no-files", flux_capabilities(with_models=False))
    response = pools.upload("flux-no-files", flux_prompt(), pool="no-files")
    assert response.status_code == 422, response.text
    missing = error_of(response)["details"]["missing"]
    assert missing["node_types"] == []
    assert [(m["node"], m["input"], m["value"]) for m in missing["model_files"]] == [
        ("10", "unet_name", UNET), ("11", "clip_name1", T5), ("11", "clip_name2", CLIP_L), ("12", "vae_name", VAE)]
    # ComfyUI's own verdicts stay in the answer.
    assert error_of(response)["details"]["node_errors"]["10"]["errors"][0]["type"] == "value_not_in_list"


def test_a_flux_workflow_is_accepted_for_a_pool_that_reported_its_nodes_and_files(pools):
    assert pools.report("flux", flux_capabilities(), worker="gpu-worker-1")
    response = pools.upload("flux", flux_prompt(), pool="flux", inputs=PROMPT_INPUT, timeout_seconds=120)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["pool"] == "flux" and body["timeout_seconds"] == 120
    checked = body["checked_against"]
    assert checked["pool"] == "flux" and checked["source"] == "pool" and checked["engine"] == "comfyui"
    assert checked["reported_by"] == "gpu-worker-1" and checked["reported_at"].endswith("Z")
    assert body["input_schema"]["properties"]["prompt"]["type"] == "string"

    # A run of it is checked against the same pool's schemas (this API server has no FluxGuidance).
    run = pools.server.call("POST", "/v1/workflows/flux/runs", key="user", json={"inputs": {"prompt": "a fox"}})
    assert run.status_code == 202, run.text
    bad = pools.server.call("POST", "/v1/workflows/flux/runs", key="user", json={"inputs": {"prompt": 5}})
    assert bad.status_code == 422 and "prompt" in error_of(bad)["message"]


def test_a_ui_format_upload_is_converted_with_the_pools_schemas(pools):
    pools.report("flux-ui", flux_capabilities())
    response = pools.upload("flux-ui", flux_ui_workflow(), pool="flux-ui")
    assert response.status_code == 201, response.text
    version = pools.get("/v1/workflows/flux-ui/versions/1").json()
    assert version["source_format"] == "ui"
    graph = {node_id: (node["class_type"], node["inputs"]) for node_id, node in version["graph"].items()}
    assert graph == {node_id: (node["class_type"], node["inputs"]) for node_id, node in flux_prompt().items()}

    # This server's own nodes cannot convert it: the refusal lists the types and the known loaders' files.
    refused = pools.upload("flux-ui-here", flux_ui_workflow())
    assert refused.status_code == 422
    missing = error_of(refused)["details"]["missing"]
    assert [t["class_type"] for t in missing["node_types"]] == sorted(FLUX_ONLY_NODES)
    assert [m["value"] for m in missing["model_files"]] == [UNET, VAE]


def test_before_any_report_the_default_pool_uses_this_servers_nodes_and_says_so(pools):
    response = pools.upload("card", CARD)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["pool"] == "default" and body["timeout_seconds"] == 600
    assert body["checked_against"]["source"] == "api"
    assert "has not reported" in body["checked_against"]["note"]
    # An unreported pool's refusal says the same.
    refused = pools.upload("flux-unreported", flux_prompt(), pool="gpu-later")
    assert refused.status_code == 422
    checked = error_of(refused)["details"]["checked_against"]
    assert checked == {"pool": "gpu-later", "source": "api", "node_types": checked["node_types"],
                       "note": "pool 'gpu-later' has not reported its nodes yet; checked against this API "
                               "server's own nodes"}


@pytest.mark.parametrize(("fields", "field", "phrase"), [
    ({"pool": "GPU pool"}, "pool", "1-64 characters"),
    ({"pool": ""}, "pool", "1-64 characters"),
    ({"pool": 5}, "pool", "1-64 characters"),
    ({"pool": "x" * 65}, "pool", "1-64 characters"),
    ({"timeout_seconds": 0}, "timeout_seconds", "from 1 to 86400"),
    ({"timeout_seconds": 86401}, "timeout_seconds", "from 1 to 86400"),
    ({"timeout_seconds": "600"}, "timeout_seconds", "number of seconds"),
    ({"timeout_seconds": True}, "timeout_seconds", "number of seconds"),
    ({"timeout_seconds": 10**400}, "timeout_seconds", "number of seconds"),
])
def test_a_bad_pool_or_timeout_is_a_422_naming_the_field(pools, fields, field, phrase):
    response = pools.upload("card-bad-field", CARD, **fields)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["details"]["field"] == field and phrase in error["message"]
    assert pools.get("/v1/workflows/card-bad-field").status_code == 404


def test_pool_and_timeout_are_part_of_a_version_only_when_not_the_defaults(pools):
    first = pools.upload("card-settings", CARD)
    assert first.status_code == 201
    same = pools.upload("card-settings", CARD, pool="default", timeout_seconds=600)
    assert same.status_code == 200 and same.json()["version"] == first.json()["version"]
    longer = pools.upload("card-settings", CARD, timeout_seconds=1800.5)
    assert longer.status_code == 201 and longer.json()["timeout_seconds"] == 1800.5
    assert longer.json()["version"] == first.json()["version"] + 1


def test_a_run_for_a_pool_that_lost_a_node_since_the_upload_is_refused_with_the_reason(pools):
    pools.report("shrinking", flux_capabilities())
    assert pools.upload("flux-shrinking", flux_prompt(), pool="shrinking", inputs=PROMPT_INPUT).status_code == 201
    pools.report("shrinking", flux_capabilities(without=("FluxGuidance",)))
    response = pools.server.call("POST", "/v1/workflows/flux-shrinking/runs", key="user",
                                 json={"inputs": {"prompt": "a fox"}})
    assert response.status_code == 422, response.text
    assert "FluxGuidance" in error_of(response)["message"] and "'shrinking'" in error_of(response)["message"]


def test_a_pool_of_builtin_workers_keeps_the_nodes_own_checks(pools, registry):
    # Workers running comfygate's own nodes: this server's SaveImage refuses an unsafe prefix for them too.
    own = Capabilities(object_info=registry.schemas().object_info(), models={})
    pools.report("cpu", own, engine="builtin")
    unsafe = copy.deepcopy(CARD)
    unsafe["8"]["inputs"]["filename_prefix"] = "../outside"
    response = pools.upload("card-unsafe", unsafe, pool="cpu")
    assert response.status_code == 422, response.text
    assert error_of(response)["details"]["node_errors"]["8"]["errors"][0]["type"] == "custom_validation_failed"
    assert pools.upload("card-cpu", CARD, pool="cpu").json()["checked_against"]["engine"] == "builtin"


def test_the_console_upload_form_takes_a_pool_and_a_timeout(pools):
    with session_scope(pools.sessions) as session:
        accounts.create_user(session, "pool-admin", "pool-admin-password")
    pools.report("flux-console", flux_capabilities(), worker="gpu-3")
    browser = requests.Session()
    login = browser.post(pools.server.url + "/login", data={"username": "pool-admin",
                                                             "password": "pool-admin-password"}, timeout=30)
    assert login.status_code == 200, login.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf is not None
    form = {"csrf_token": csrf.group(1), "name": "flux-console", "workflow_text": json.dumps(flux_prompt()),
            "pool": "flux-console", "timeout_seconds": "45"}
    response = browser.post(pools.server.url + "/ui/workflows", files={k: (None, v) for k, v in form.items()},
                            timeout=30)
    assert response.status_code == 201, response.text
    assert "gpu-3" in response.text and "timeout 45 s" in response.text
    version = pools.get("/v1/workflows/flux-console/versions/1").json()
    assert (version["pool"], version["timeout_seconds"]) == ("flux-console", 45)
    refused = browser.post(pools.server.url + "/ui/workflows", timeout=30,
                           files={k: (None, v) for k, v in {**form, "timeout_seconds": "soon"}.items()})
    assert refused.status_code == 422 and "timeout_seconds" in refused.text


# -- reading pools and their nodes -----------------------------------------------------------------------------


def test_nodes_of_a_pool(pools):
    pools.report("flux-nodes", flux_capabilities(), worker="gpu-7")
    response = pools.get("/v1/nodes?pool=flux-nodes")
    assert response.status_code == 200
    assert response.headers["X-Comfygate-Nodes-Source"] == "pool"
    assert response.headers["X-Comfygate-Reported-By"] == "gpu-7"
    nodes = response.json()
    assert set(FLUX_ONLY_NODES) <= set(nodes)
    assert nodes["UNETLoader"]["input"]["required"]["unet_name"][0] == [UNET]
    one = pools.get("/v1/nodes/FluxGuidance?pool=flux-nodes")
    assert one.status_code == 200 and list(one.json()) == ["FluxGuidance"]
    # This server's own nodes have no FluxGuidance.
    assert "FluxGuidance" not in pools.get("/v1/nodes").json()
    assert pools.get("/v1/nodes/FluxGuidance").status_code == 404


def test_the_default_pool_before_a_report_answers_this_servers_nodes_and_says_so(pools):
    response = pools.get("/v1/nodes?pool=default")
    assert response.status_code == 200
    assert response.headers["X-Comfygate-Nodes-Source"] == "api"
    assert "has not reported" in response.headers["X-Comfygate-Note"]
    assert response.json() == pools.get("/v1/nodes").json()


def test_a_pool_that_never_reported_is_a_404_listing_those_that_did(pools):
    pools.report("flux-known", flux_capabilities())
    response = pools.get("/v1/nodes?pool=nowhere")
    assert response.status_code == 404
    error = error_of(response)
    assert "'nowhere'" in error["message"] and "flux-known" in error["details"]["reported_pools"]
    assert pools.get("/v1/nodes/UNETLoader?pool=nowhere").status_code == 404
    bad = pools.get("/v1/nodes?pool=No%20Such")
    assert bad.status_code == 422 and "pool" in error_of(bad)["message"]


def test_pools_lists_each_pool_with_what_it_reported_and_its_versions(pools):
    pools.report("flux-listed", flux_capabilities(), worker="gpu-9")
    assert pools.upload("flux-listed", flux_prompt(), pool="flux-listed").status_code == 201
    response = pools.get("/v1/pools")
    assert response.status_code == 200
    by_name = {p["pool"]: p for p in response.json()["pools"]}
    listed = by_name["flux-listed"]
    assert listed["reported"] and listed["engine"] == "comfyui" and listed["reported_by"] == "gpu-9"
    assert listed["node_types"] == len(json.loads(REFERENCE.read_text()))
    assert listed["model_files"] == {"diffusion_models": 1, "text_encoders": 2, "vae": 1}
    assert listed["versions"] == 1
    default = by_name["default"]
    assert not default["reported"] and default["node_types"] is None and "has not reported" in default["note"]
    assert pools.server.call("GET", "/v1/pools", key=None).status_code == 401


# -- the worker's side ---------------------------------------------------------------------------------------


def _row(sessions: sessionmaker[Session], pool: str) -> PoolCapabilities | None:
    with session_scope(sessions) as session:
        return session.get(PoolCapabilities, pool)


def test_an_unchanged_report_writes_nothing_and_a_changed_one_rewrites_the_row(sessions):
    caps = Capabilities(object_info={"EmptyImage": {"input": {}, "output": ["IMAGE"]}},
                        models={"checkpoints": ["a.safetensors"]})
    assert publish_capabilities(sessions, "gpu", "builtin", "w1", caps)
    first = _row(sessions, "gpu")
    assert first is not None and first.worker == "w1" and first.models == {"checkpoints": ["a.safetensors"]}
    canonical = json.dumps({"object_info": caps.object_info, "models": caps.models}, sort_keys=True,
                           separators=(",", ":"))
    assert first.digest == hashlib.sha256(canonical.encode()).hexdigest()

    # The same capabilities from another worker of the pool: no write, the row is as it was.
    assert not publish_capabilities(sessions, "gpu", "builtin", "w2", copy.deepcopy(caps))
    again = _row(sessions, "gpu")
    assert again is not None and (again.worker, again.reported_at) == ("w1", first.reported_at)

    changed = Capabilities(object_info=caps.object_info, models={"checkpoints": ["a.safetensors", "b.ckpt"]})
    assert publish_capabilities(sessions, "gpu", "builtin", "w2", changed)
    rewritten = _row(sessions, "gpu")
    assert rewritten is not None and rewritten.worker == "w2" and rewritten.digest != first.digest
    assert rewritten.models["checkpoints"] == ["a.safetensors", "b.ckpt"]
    assert rewritten.reported_at >= first.reported_at


def test_a_flux_version_is_stored_with_its_pool_on_both_databases(sessions, registry):
    publish_capabilities(sessions, "flux", "comfyui", "gpu-1", flux_capabilities())
    with session_scope(sessions) as session:
        result = workflow_service.push_version(session, registry, name="flux", workflow=flux_prompt(),
                                               pool="flux", timeout_seconds=90)
        assert result.created and result.checked_against["source"] == "pool"
    with session_scope(sessions) as session:
        version = workflow_service.get_version(session, "flux")
        assert (version.pool, version.timeout_seconds) == ("flux", 90.0)
        summary = workflow_service.version_summary(version)
        assert (summary["pool"], summary["timeout_seconds"]) == ("flux", 90)


def test_a_version_in_the_default_pool_keeps_the_hash_it_had_before_pools(sessions, registry):
    with session_scope(sessions) as session:
        version = workflow_service.push_version(session, registry, name="card", workflow=CARD).version
        before_pools = json.dumps({"workflow": version.graph, "inputs": None, "policy": version.policy},
                                  sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert version.content_hash == hashlib.sha256(before_pools.encode()).hexdigest()


def test_the_reporter_survives_a_failing_engine_and_a_database_error(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'worker.db'}"
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    caps = flux_capabilities()
    calls: list[int] = []
    published = threading.Event()

    def capabilities() -> Capabilities:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("ComfyUI is restarting")
        if len(calls) == 3:
            # The second tick's write failed (no tables yet: the database was not reachable as it should be);
            # now it is.
            from comfygate.platform.migrate import upgrade

            upgrade(database_url)
        if len(calls) == 4:
            published.set()
        return caps

    reporter = CapabilityReporter(sessions, "flux", "comfyui", "gpu-1", capabilities, interval=0.01).start()
    try:
        assert published.wait(30), f"reporter stopped after {len(calls)} calls"
    finally:
        reporter.stop()
    assert not reporter._thread.is_alive()
    row = _row(sessions, "flux")
    assert row is not None and row.worker == "gpu-1" and row.models == caps.models
    with session_scope(sessions) as session:  # the fourth tick found nothing new: one row, written once
        assert session.scalars(select(PoolCapabilities.pool)).all() == ["flux"]
    engine.dispose()
