"""GET /v1/nodes (ComfyUI's /object_info shape) and GET /v1/node-packs, from a real server on a loopback port
that loads the test node packs and a broken one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from live_server import Server, running_server

from comfygate.settings import Settings

NODE_PACKS = Path(__file__).resolve().parents[1] / "nodepacks"
ODD_NAME = "Text/Reverse (tests)"  # names may hold spaces and slashes
EXTRA_PACKS = {
    "odd_names.py": f'''
class Reverse:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"text": ("STRING", {{"default": ""}})}}}}

    def run(self, text):
        return (text[::-1],)


NODE_CLASS_MAPPINGS = {{{ODD_NAME!r}: Reverse}}
''',
    "broken.py": "import missing_dependency_of_this_pack\n",
}
# The keys every entry of a real ComfyUI's /object_info has (others, such as "deprecated", only some do).
OBJECT_INFO_KEYS = {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
                    "description", "python_module", "category", "output_node"}


@dataclass
class PackServer:
    server: Server
    extra_packs: Path

    def get(self, path: str, key: str | None = "user") -> requests.Response:
        return self.server.call("GET", path, key=key)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.server.call("POST", path, key="user", json=body)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackServer]:
    extra = tmp_path_factory.mktemp("custom_nodes")
    for name, source in EXTRA_PACKS.items():
        (extra / name).write_text(source)
    settings = Settings(data_dir=tmp_path_factory.mktemp("api"), watchdog_seconds=60,
                        node_pack_dirs=(NODE_PACKS, extra))
    with running_server(settings) as running:
        yield PackServer(running, extra)


def test_nodes_lists_builtin_and_pack_nodes_in_object_info_shape(server):
    response = server.get("/v1/nodes")
    assert response.status_code == 200, response.text
    nodes = response.json()
    assert {"EmptyImage", "SaveImage", "CaptionedImage", "TextShout", "ImageBrightness", ODD_NAME} <= set(nodes)
    for name, entry in nodes.items():
        assert set(entry) == OBJECT_INFO_KEYS and entry["name"] == name, name
    assert nodes["TextShout"]["python_module"] == "custom_nodes.text_tools"
    assert nodes["TextSplitLines"]["output_is_list"] == [True]
    assert nodes["EmptyImage"]["python_module"] == "builtin"


def test_one_node_is_answered_like_comfyuis_object_info_of_one_class(server):
    response = server.get("/v1/nodes/ImageBrightness")
    assert response.status_code == 200
    (name, entry), = response.json().items()
    assert name == "ImageBrightness"
    assert entry["input"]["required"]["factor"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05}]
    odd = server.get("/v1/nodes/" + quote(ODD_NAME, safe=""))
    assert odd.status_code == 200 and list(odd.json()) == [ODD_NAME]


def test_an_unknown_node_is_a_404_that_names_it(server):
    response = server.get("/v1/nodes/NoSuchNode")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and "'NoSuchNode'" in error["message"]
    assert error["details"] == {"class_type": "NoSuchNode"}


@pytest.mark.parametrize("path", ["/v1/nodes", "/v1/nodes/EmptyImage", "/v1/node-packs"])
def test_node_routes_need_a_key(server, path):
    assert server.get(path, key=None).status_code == 401


def test_node_packs_reports_each_pack_to_admins(server):
    assert server.get("/v1/node-packs").status_code == 403  # the reports name server paths
    response = server.get("/v1/node-packs", key="admin")
    assert response.status_code == 200
    packs = {pack["name"]: pack for pack in response.json()["packs"]}
    assert set(packs) == {"builtin", "caption_nodes", "entrypoint_nodes", "seeded_nodes", "slow_nodes", "text_tools",
                          "odd_names", "broken"}
    assert packs["text_tools"] == {"name": "text_tools", "path": str(NODE_PACKS / "text_tools"), "loaded": True,
                                   "node_types": ["TextShout", "TextSplitLines", "TextJoinLines"], "error": None}
    broken = packs["broken"]
    assert (broken["loaded"], broken["node_types"]) == (False, [])
    assert broken["path"] == str(server.extra_packs / "broken.py")
    assert "No module named 'missing_dependency_of_this_pack'" in broken["error"]


def test_uploads_are_checked_against_the_same_nodes(server):
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageBrightness", "inputs": {"image": ["1", 0], "factor": 2.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bright"}},
    }
    assert server.post("/v1/workflows", {"name": "bright", "workflow": workflow}).status_code == 201
    workflow["2"]["inputs"]["factor"] = 9.0  # above the node's max
    assert server.post("/v1/workflows", {"name": "bright", "workflow": workflow}).status_code == 422
