"""`comfygate workflows convert` and `workflows validate`, run as a user runs them: the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CARD = REPO_ROOT / "workflows" / "gradient_card.json"
CARD_UI = REPO_ROOT / "workflows" / "gradient_card.ui.json"
REFERENCE = REPO_ROOT / ".." / "shared" / "reference" / "comfyui-0.3.64-object_info.json"


def comfygate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfygate", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COMFYGATE_DATA_DIR": "/nonexistent-not-needed"})


def test_convert_prints_the_api_prompt_of_a_ui_export():
    done = comfygate("workflows", "convert", str(CARD_UI))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(CARD.read_text())


def test_validate_says_valid_for_both_formats():
    for path, source_format in ((CARD, "api"), (CARD_UI, "ui")):
        done = comfygate("workflows", "validate", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout) == {"valid": True, "source_format": source_format, "node_errors": {}}


def test_validate_prints_comfyui_shaped_errors_and_exits_1(tmp_path):
    broken = json.loads(CARD.read_text())
    broken["7"]["inputs"]["blur_radius"] = 500
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    done = comfygate("workflows", "validate", str(path))
    assert done.returncode == 1
    verdict = json.loads(done.stdout)
    assert verdict["valid"] is False and verdict["error"]["type"] == "prompt_outputs_failed_validation"
    (problem,) = verdict["node_errors"]["7"]["errors"]
    assert problem["type"] == "value_bigger_than_max" and problem["extra_info"]["input_name"] == "blur_radius"


def test_convert_refuses_a_file_that_is_not_a_workflow(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    done = comfygate("workflows", "convert", str(path))
    assert done.returncode == 1 and done.stdout == ""
    assert "JSON object" in json.loads(done.stderr)["error"]["message"]


@pytest.fixture
def object_info_server() -> Iterator[str]:
    """A stand-in for a remote ComfyUI that answers GET /object_info with the reference schemas."""
    if not REFERENCE.is_file():
        pytest.skip(f"ComfyUI reference object_info not found at {REFERENCE}")
    body = REFERENCE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            status = 200 if self.path == "/object_info" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if status == 200 else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_object_info_from_a_file_or_a_server_decides_what_exists(tmp_path, object_info_server):
    needs_comfyui = json.loads(CARD.read_text())
    needs_comfyui["9"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["10", 0],
                                                                           "image": ["11", 0]}}
    needs_comfyui["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}
    needs_comfyui["11"] = {"class_type": "ImageScaleToTotalPixels", "inputs": {
        "image": ["7", 0], "upscale_method": "area", "megapixels": 0.5}}
    needs_comfyui["8"]["inputs"]["images"] = ["9", 0]
    path = tmp_path / "upscale.json"
    path.write_text(json.dumps(needs_comfyui))

    local = comfygate("workflows", "validate", str(path))
    assert local.returncode == 1
    assert json.loads(local.stdout)["error"]["extra_info"]["missing_node_types"] == ["ImageScaleToTotalPixels"]

    for source in (str(REFERENCE), object_info_server):
        remote = comfygate("workflows", "validate", str(path), "--object-info", source)
        verdict = json.loads(remote.stdout)
        # The reference server has no upscale models installed: the file name is not in its (empty) list.
        assert verdict["node_errors"]["10"]["errors"][0]["type"] == "value_not_in_list", verdict
