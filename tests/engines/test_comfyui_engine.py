"""The comfyui engine against the ComfyUI stand-in, a real server process built from recordings of ComfyUI 0.3.64.

Each test drives ComfyUIEngine as a worker would (run from a thread, events through on_event) and checks what
ComfyUI is left with: no output or temp files of the run, no history entry, no uploaded inputs.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from comfyui_process import Events, assert_nothing_left, attached, in_thread, job, png, post, slow, trivial
from PIL import Image

from comfygate.comfy_runtime import NodeExecutionError, WorkflowInvalid
from comfygate.platform.engines import EngineUnavailable, OutOfMemory, RunInterrupted
from comfygate.platform.engines.comfyui import ComfyDirs, ComfyUIEngine, Supervisor
from comfygate.settings import Settings
from comfyui_standin import make_install
from comfyui_standin.workflows import every_output

# -- runs ----------------------------------------------------------------------------------------------------------


def test_a_trivial_run_returns_its_png_and_leaves_nothing_in_comfyui(engine, shared_standin):
    events = Events()
    result = engine.run(job(trivial(color=0xFF0000), on_event=events))

    [output] = result.outputs
    assert (output.node_id, output.class_type, output.content_type) == ("2", "SaveImage", "image/png")
    assert (output.width, output.height) == (64, 64)
    assert Image.open(io.BytesIO(output.data)).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert output.filename.startswith("cg_") and output.filename.endswith("_.png")
    assert result.execute_ms > 0 and result.cached_nodes == [] and set(result.node_ms) == {"1", "2"}
    assert {"execution_start", "executing", "executed", "execution_success"} <= {e["type"] for e in events.events}
    assert_nothing_left(shared_standin, engine)


def test_inputs_are_uploaded_into_a_folder_of_the_run_that_goes_afterwards(engine, shared_standin):
    seen: list[list[Path]] = []
    uploads = shared_standin.input_dir / "comfygate"

    def look(event: dict[str, Any]) -> None:
        if event["type"] == "executing" and event.get("node") == "2":
            seen.append(sorted(p for p in uploads.rglob("*") if p.is_file()))

    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cg"}}}
    engine_job = job(prompt, input_files={"photo.png": png((0, 0, 255))}, on_event=look)
    result = engine.run(engine_job)

    [output] = result.outputs
    assert (output.width, output.height) == (32, 16)
    assert Image.open(io.BytesIO(output.data)).convert("RGB").getpixel((5, 5)) == (0, 0, 255)
    [[uploaded]] = seen  # while it ran: one file, in a folder of this generation
    assert uploaded.name == "photo.png" and engine_job.run_id in uploaded.parent.name
    assert not uploaded.parent.exists()
    assert_nothing_left(shared_standin, engine)


def test_a_rejected_prompt_raises_workflow_invalid_with_comfyuis_node_errors(engine):
    prompt = trivial()
    prompt["1"]["inputs"]["width"] = -5
    with pytest.raises(WorkflowInvalid) as caught:
        engine.run(job(prompt))
    assert caught.value.error["type"] == "prompt_outputs_failed_validation"
    assert caught.value.node_errors["1"]["class_type"] == "EmptyImage"
    assert caught.value.node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"

    with pytest.raises(WorkflowInvalid) as caught:  # no output node: no node_errors at all
        engine.run(job({"1": trivial()["1"]}))
    assert caught.value.error["type"] == "prompt_no_outputs" and caught.value.node_errors == {}


def test_a_failing_node_raises_node_execution_error_naming_node_and_class(engine, shared_standin):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "bad.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cg"}}}
    with pytest.raises(NodeExecutionError) as caught:
        engine.run(job(prompt, input_files={"bad.png": b"this is not an image"}))
    assert not isinstance(caught.value, OutOfMemory)
    assert (caught.value.node_id, caught.value.class_type) == ("1", "LoadImage")
    assert caught.value.exception_type and caught.value.message
    assert_nothing_left(shared_standin, engine)


def test_a_cancel_stops_a_running_node_within_two_seconds(engine, shared_standin):
    cancel = threading.Event()
    canceled_at: list[float] = []

    def cancel_now() -> None:
        canceled_at.append(time.monotonic())
        cancel.set()

    thread, outcome = in_thread(engine, job(slow(5.0), cancel=cancel, on_event=Events(cancel_now)))
    thread.join(30)

    assert isinstance(outcome.get("error"), RunInterrupted), outcome
    assert outcome["error"].reason == "canceled" and outcome["error"].node_id == "3"
    assert outcome["ended"] - canceled_at[0] < 2.0
    assert_nothing_left(shared_standin, engine)


def test_a_deadline_interrupts_the_run_as_a_timeout(engine, shared_standin):
    started = time.monotonic()
    with pytest.raises(RunInterrupted) as caught:
        engine.run(job(slow(5.0), deadline=time.monotonic() + 0.5, timeout_seconds=0.5))
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 3.0
    assert_nothing_left(shared_standin, engine)


def test_a_pending_prompt_canceled_is_taken_off_the_queue(engine, shared_standin):
    first_cancel, second_cancel = threading.Event(), threading.Event()
    first_events = Events()
    first, first_outcome = in_thread(engine, job(slow(3.0, color=1), cancel=first_cancel, on_event=first_events))
    assert first_events.progress.wait(30)
    second, second_outcome = in_thread(engine, job(slow(3.0, color=2), cancel=second_cancel))
    deadline = time.monotonic() + 10
    while engine.client.call("GET", "/queue")["queue_pending"] == [] and time.monotonic() < deadline:
        second.join(0.05)
    second_cancel.set()
    second.join(10)
    first_cancel.set()
    first.join(10)
    assert isinstance(second_outcome.get("error"), RunInterrupted)
    assert second_outcome["error"].node_id is None  # it never ran
    assert isinstance(first_outcome.get("error"), RunInterrupted)
    assert engine.client.call("GET", "/queue") == {"queue_running": [], "queue_pending": []}
    assert_nothing_left(shared_standin, engine)


def test_a_dropped_websocket_mid_run_does_not_lose_the_result(engine, shared_standin):
    dropped: list[int] = []
    events = Events(lambda: dropped.append(post(shared_standin, "/standin/drop_sockets")))
    result = engine.run(job(slow(1.5, color=3), on_event=events))
    assert dropped == [200]
    [output] = result.outputs
    assert output.content_type == "image/png"
    assert engine.client.connected.wait(10) and engine.is_ready()
    assert_nothing_left(shared_standin, engine)


def test_a_socket_comfyui_stopped_sending_to_is_replaced(engine, shared_standin):
    async def open_and_close_another_socket() -> None:  # recording 13: this unregisters the engine's socket
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{shared_standin.url}/ws?clientId={engine.client.client_id}") as ws:
            await ws.receive()

    asyncio.run(open_and_close_another_socket())
    quiet_events = Events()
    quiet = engine.run(job(trivial(color=0x0A0B0C), on_event=quiet_events))
    assert quiet_events.events == [] and [o.content_type for o in quiet.outputs] == ["image/png"]
    events = Events()
    engine.run(job(trivial(color=0x0C0B0A), on_event=events))
    assert events.of("executing") and events.of("executed"), events.events
    assert_nothing_left(shared_standin, engine)


def test_two_threads_share_one_engine(engine, shared_standin):
    runs = [in_thread(engine, job(trivial(color=color))) for color in (0x00FF00, 0x0000FF)]
    for thread, _ in runs:
        thread.join(30)
    colours = [Image.open(io.BytesIO(outcome["result"].outputs[0].data)).convert("RGB").getpixel((0, 0))
               for _, outcome in runs]
    assert colours == [(0, 255, 0), (0, 0, 255)]
    assert_nothing_left(shared_standin, engine)


def test_a_cached_rerun_runs_again_and_returns_the_image(engine, shared_standin):
    first = engine.run(job(trivial(color=0x123456)))
    second = engine.run(job(trivial(color=0x123456)))  # ComfyUI would answer from its cache, naming a gone file
    assert second.outputs[0].data and second.outputs[0].content_type == "image/png"
    assert "2" not in second.cached_nodes  # the output node ran again, into the prompt's own folder...
    assert "1" in second.cached_nodes  # ...while what feeds it came from ComfyUI's cache: no model reloads
    assert (Image.open(io.BytesIO(second.outputs[0].data)).convert("RGB").tobytes()
            == Image.open(io.BytesIO(first.outputs[0].data)).convert("RGB").tobytes())
    assert_nothing_left(shared_standin, engine)


def test_previews_reach_on_event(engine):
    events = Events()
    engine.run(job(slow(0.5, color=4), on_event=events))
    previews = events.of("preview")
    assert previews, events.events
    assert {p["node"] for p in previews} == {"3"}
    assert all(p["content_type"] == "image/jpeg" and p["data"][:2] == b"\xff\xd8" for p in previews)
    assert {p["node"] for p in events.of("progress")} == {"3"}


def test_every_output_type_comes_back_with_its_content_type(engine, shared_standin):
    prompt = {"1": {"class_type": "EmptyImage",
                    "inputs": {"width": 64, "height": 64, "batch_size": 3, "color": 0x3366CC}},
              **every_output(["1", 0])}
    events = Events()
    result = engine.run(job(prompt, on_event=events))

    by_class: dict[str, list] = {}
    for output in result.outputs:
        by_class.setdefault(output.class_type, []).append(output)
    assert "PreviewImage" not in by_class and "PreviewAudio" not in by_class  # temp files are not results
    assert [(o.content_type, o.width, o.height) for o in by_class["SaveImage"]] == [("image/png", 64, 64)] * 3
    expected = {"SaveAnimatedWEBP": "image/webp", "SaveAnimatedPNG": "image/png", "SaveVideo": "video/mp4",
                "SaveWEBM": "video/webm", "SaveAudio": "audio/flac", "SaveAudioMP3": "audio/mpeg",
                "SaveAudioOpus": "audio/ogg", "SaveLatent": "application/octet-stream",
                "SaveGLB": "model/gltf-binary", "PreviewAny": "text/plain; charset=utf-8"}
    for class_type, content_type in expected.items():
        [output] = by_class[class_type]
        assert output.content_type == content_type, class_type
        assert output.data, class_type
        if class_type != "PreviewAny":
            assert (output.width, output.height) == (None, None), class_type  # not still images
    assert by_class["PreviewAny"][0].data == b"hello from PreviewAny"
    assert by_class["PreviewAny"][0].filename == "114_text_1.txt"
    # Node by node, in the order the nodes ran (as their executed events came).
    nodes = [output.node_id for output in result.outputs]
    order = list(dict.fromkeys(nodes))
    assert order == [e["node"] for e in events.of("executed") if e["node"] in order]
    assert nodes == sorted(nodes, key=order.index)
    assert_nothing_left(shared_standin, engine)


def test_capabilities_are_comfyuis_object_info_and_model_lists(engine):
    capabilities = engine.capabilities()
    assert "SaveImage" in capabilities.object_info and "SlowPassImage" in capabilities.object_info
    assert isinstance(capabilities.models, dict) and "checkpoints" in capabilities.models


# -- a stand-in of the test's own -------------------------------------------------------------------------------


def test_history_that_lags_behind_the_end_is_waited_for(own_standin):
    standin = own_standin(history_lag_ms=50)
    engine = attached(standin)
    try:
        result = engine.run(job(trivial(color=0x445566)))
        assert [o.content_type for o in result.outputs] == ["image/png"]
        assert_nothing_left(standin, engine)
    finally:
        engine.close()


def test_out_of_memory_is_raised_as_such_and_free_memory_lets_the_retry_pass(own_standin):
    standin = own_standin()
    engine = attached(standin)
    prompt = trivial(color=0x778899)
    prompt["3"] = {"class_type": "StandinOutOfMemory", "inputs": {"image": ["1", 0], "mode": "until_freed"}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    try:
        with pytest.raises(OutOfMemory) as caught:
            engine.run(job(prompt))
        assert (caught.value.node_id, caught.value.class_type) == ("3", "StandinOutOfMemory")
        engine.free_memory()
        result = engine.run(job(prompt))
        assert [o.node_id for o in result.outputs] == ["2"]
        assert_nothing_left(standin, engine)
    finally:
        engine.close()


def test_an_unreachable_comfyui_hands_the_run_back(own_standin):
    standin = own_standin()
    engine = attached(standin, unreachable_grace=1.0)
    try:
        events = Events(standin.kill)
        with pytest.raises(EngineUnavailable):
            engine.run(job(slow(5.0), on_event=events))
        assert not engine.is_ready()
    finally:
        engine.close()


def test_a_supervised_comfyui_is_restarted_and_a_run_it_lost_is_handed_back(tmp_path):
    install = make_install(tmp_path / "ComfyUI")
    supervisor = Supervisor(install, Path(sys.executable), [], start_timeout=120)
    engine = ComfyUIEngine(supervisor=supervisor, dirs=ComfyDirs.of(install), start_timeout=120)
    assert not engine.is_ready()
    engine.start()
    try:
        assert engine.is_ready()
        first_pid = supervisor.pid
        events = Events(lambda: os.kill(first_pid, signal.SIGKILL))
        with pytest.raises(EngineUnavailable):
            engine.run(job(slow(5.0), on_event=events))
        assert supervisor.wait_ready(120) and engine.client.connected.wait(30)  # restarted, after 1 s
        assert engine.is_ready() and supervisor.pid != first_pid
        result = engine.run(job(trivial(color=0x102030)))
        assert [o.content_type for o in result.outputs] == ["image/png"]
        assert list((install / "output").rglob("*.png")) == []
        second_pid = supervisor.pid
    finally:
        engine.close()
    assert not engine.is_ready()
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(second_pid, 0)


def test_a_supervised_comfyui_that_cannot_start_fails_with_its_output(tmp_path):
    install = tmp_path / "ComfyUI"
    install.mkdir()
    (install / "main.py").write_text("import sys\nprint('no torch here, giving up')\nsys.exit(3)\n")
    engine = ComfyUIEngine(supervisor=Supervisor(install, Path(sys.executable), [], start_timeout=30))
    with pytest.raises(RuntimeError) as caught:
        engine.start()
    message = str(caught.value)
    assert str(install) in message and "exited with code 3" in message and "no torch here" in message


# -- settings --------------------------------------------------------------------------------------------------


def test_from_settings_needs_a_url_or_a_dir():
    with pytest.raises(ValueError, match="COMFYGATE_COMFYUI_URL.*COMFYGATE_COMFYUI_DIR"):
        ComfyUIEngine.from_settings(Settings(engine="comfyui"))


def test_from_settings_attaches_or_supervises(tmp_path):
    attached_engine = ComfyUIEngine.from_settings(Settings(engine="comfyui", comfyui_url="http://127.0.0.1:8188/"))
    assert attached_engine.url == "http://127.0.0.1:8188" and attached_engine.supervisor is None
    assert attached_engine.dirs is None and not attached_engine.is_ready()

    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    supervised = ComfyUIEngine.from_settings(Settings(engine="comfyui", comfyui_dir=tmp_path,
                                                      comfyui_args="--highvram --output-directory /srv/out"))
    command = supervised.supervisor.command
    assert command[:4] == [str(tmp_path / ".venv" / "bin" / "python"), "main.py", "--listen", "127.0.0.1"]
    assert command[-3:] == ["--highvram", "--output-directory", "/srv/out"]
    assert supervised.dirs == ComfyDirs(input=tmp_path.resolve() / "input", output=Path("/srv/out"),
                                        temp=tmp_path.resolve() / "temp")


def test_comfyui_folders_follow_its_arguments(tmp_path):
    dirs = ComfyDirs.of(tmp_path, ["--base-directory", "base", "--temp-directory", "/tmp/x", "--cpu"])
    root = tmp_path.resolve()
    assert dirs == ComfyDirs(input=root / "base" / "input", output=root / "base" / "output",
                             temp=Path("/tmp/x/temp"))
    (root / "base" / "output").mkdir(parents=True)
    (root / "secret.txt").write_text("keep")
    dirs.delete_file("output", "..", "../secret.txt")  # outside the folder: refused
    assert (root / "secret.txt").exists()

