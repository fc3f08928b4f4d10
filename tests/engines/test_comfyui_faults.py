"""The comfyui engine when ComfyUI misbehaves, is shared with others or sits behind something else: odd frames,
stops ComfyUI does not confirm, partly invalid prompts, interrupts nobody in comfygate asked for, a ComfyUI
that hangs, answers that are not ComfyUI's. Against the ComfyUI stand-in, or a tiny odd server (odd_server.py).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time
from typing import Any

import pytest
from comfyui_process import Events, assert_nothing_left, attached, in_thread, job, png, post, slow, trivial, wait_until
from odd_server import OddServer

from comfygate.comfy_runtime import WorkflowInvalid
from comfygate.platform.engines import EngineUnavailable, RunInterrupted
from comfygate.platform.engines.comfyui import ComfyUIEngine
from comfygate.platform.engines.comfyui.run import prompt_id_for
from comfyui_standin import StandinProcess
from comfyui_standin.files import content_type as served_type

HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"


def save_file(text: str, extension: str, seconds: float = 0.0) -> dict[str, Any]:
    """StandinSaveFile: waits ``seconds`` deaf to interrupts, then saves ``text`` as a .<extension> file."""
    return {"class_type": "StandinSaveFile", "inputs": {"text": text, "extension": extension, "seconds": seconds,
                                                        "filename_prefix": "cg"}}


def cleaned_up(standin: StandinProcess, engine: ComfyUIEngine) -> bool:
    """Nothing of the engine's prompts is left in ComfyUI (queue, files, history), and none is being watched."""
    queue = engine.client.call("GET", "/queue")
    if queue["queue_running"] or queue["queue_pending"] or engine.reaper.pending():
        return False
    try:
        assert_nothing_left(standin, engine)
    except AssertionError:
        return False
    return True


def binary(event: int, header: bytes, rest: bytes = b"img") -> str:
    return (struct.pack(">II", event, len(header)) + header + rest).hex()


# Frames a custom node (or a newer ComfyUI) might send: none names a prompt of ours in a shape we know.
ODD_FRAMES = {
    "text": ['{"type": "x", "data": "some text"}', '{"type": "progress", "data": {"prompt_id": ["a"], "value": 1}}',
             '{"type": "executing", "data": {"node": null, "prompt_id": {"a": 1}}}', "[1, 2, 3]", '"a string"',
             '{"data": {}}', '{"type": 5, "data": {}}', "not json", '{"type": "status", "data": null}'],
    "binary": [binary(4, b"[1, 2]"), binary(4, b'"text"'), binary(4, b'{"prompt_id": ["x"], "node_id": {"a": 1}}'),
               struct.pack(">II", 4, 1000).hex(), struct.pack(">II", 1, 99).hex() + "00", "0102"],
}


def test_odd_frames_do_not_cost_the_socket(engine, shared_standin):
    opened = engine.client.sockets_opened
    sent: list[int] = []
    events = Events(lambda: sent.append(post(shared_standin, "/standin/send_frames", json.dumps(ODD_FRAMES).encode())))
    result = engine.run(job(slow(0.5, color=0x0D0E0F), on_event=events))  # the odd frames come mid-run
    assert sent == [200] and [o.content_type for o in result.outputs] == ["image/png"]
    assert events.of("execution_success"), events.events
    second = Events()
    engine.run(job(trivial(color=0x0F0E0D), on_event=second))
    assert second.of("executed") and engine.is_ready()
    assert engine.client.sockets_opened == opened  # the same socket all along
    assert_nothing_left(shared_standin, engine)


def test_canceling_a_pending_prompt_leaves_the_shared_socket_alone(engine, shared_standin):
    opened = engine.client.sockets_opened
    first_events = Events()
    first, first_outcome = in_thread(engine, job(slow(4.0, color=5), on_event=first_events))
    assert first_events.progress.wait(30)
    second_cancel = threading.Event()
    second, second_outcome = in_thread(engine, job(slow(2.0, color=6), cancel=second_cancel))
    assert wait_until(lambda: engine.client.call("GET", "/queue")["queue_pending"] != [], 10)
    second_cancel.set()
    second.join(10)
    progress_then = len(first_events.of("progress"))
    first.join(30)

    assert isinstance(second_outcome.get("error"), RunInterrupted) and second_outcome["error"].node_id is None
    assert [o.content_type for o in first_outcome["result"].outputs] == ["image/png"]
    assert len(first_events.of("progress")) > progress_then and first_events.of("execution_success")
    assert engine.client.sockets_opened == opened  # a prompt that never ran sends no frame: no reason to replace
    assert_nothing_left(shared_standin, engine)


def test_an_output_of_an_unknown_type_is_not_served_as_comfyui_names_it(engine, shared_standin):
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    result = engine.run(job({"1": save_file(svg, "svg")}))
    [output] = result.outputs
    assert served_type(output.filename) == "image/svg+xml"  # what ComfyUI's /view says
    assert output.content_type == "application/octet-stream" and output.data == svg.encode()
    assert_nothing_left(shared_standin, engine)


def test_a_prompt_with_an_invalid_output_is_refused_whole(engine, shared_standin):
    prompt = trivial(color=0x111213)
    prompt["3"] = {"class_type": "EmptyImage", "inputs": {"width": -5, "height": 64, "batch_size": 1, "color": 0}}
    prompt["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "cg"}}
    with pytest.raises(WorkflowInvalid) as caught:
        engine.run(job(prompt))  # ComfyUI accepts it (200) and would run output "2" alone
    assert caught.value.error["type"] == "prompt_outputs_failed_validation"
    assert list(caught.value.node_errors) == ["3"]
    assert caught.value.node_errors["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert wait_until(lambda: cleaned_up(shared_standin, engine), 15)  # what the valid part wrote goes too


def test_an_interrupt_comfygate_did_not_ask_for_hands_the_run_back(engine, shared_standin):
    events = Events(lambda: post(shared_standin, "/interrupt"))  # as Cancel in ComfyUI's own page
    with pytest.raises(EngineUnavailable, match="without comfygate asking"):
        engine.run(job(slow(3.0, color=7), on_event=events))
    assert_nothing_left(shared_standin, engine)


# -- a stand-in of the test's own -------------------------------------------------------------------------------


def test_a_prompt_that_outlives_an_unconfirmed_stop_is_cleaned_up_after_it_ends(own_standin):
    standin = own_standin()
    engine = attached(standin)
    cancel = threading.Event()

    def cancel_in_node_3(event: dict[str, Any]) -> None:
        if event["type"] == "executing" and event.get("node") == "3":
            cancel.set()

    prompt = trivial(color=0x212223)
    prompt["3"] = save_file("written after the job gave up", "txt", seconds=7.0)
    engine_job = job(prompt, cancel=cancel, on_event=cancel_in_node_3)
    try:
        with pytest.raises(RunInterrupted) as caught:
            engine.run(engine_job)  # node 3 does not check for interrupts: the job stops waiting after 5 s
        assert caught.value.reason == "canceled"
        prompt_id = prompt_id_for(engine_job)
        assert [item[1] for item in engine.client.call("GET", "/queue")["queue_running"]] == [prompt_id]
        assert engine.reaper.pending() == [prompt_id]
        assert wait_until(lambda: cleaned_up(standin, engine), 20)  # its late file and history entry went too
    finally:
        engine.close()


def test_a_hung_comfyui_hands_the_run_back_after_the_grace(own_standin):
    standin = own_standin()
    engine = attached(standin, unreachable_grace=2.0)
    stopped: list[float] = []

    def hang() -> None:  # SIGSTOP: connections are accepted but never answered, the socket stays open
        os.kill(standin.process.pid, signal.SIGSTOP)
        stopped.append(time.monotonic())

    try:
        thread, outcome = in_thread(engine, job(slow(10.0), on_event=Events(hang)))
        thread.join(60)
        assert isinstance(outcome.get("error"), EngineUnavailable), outcome
        assert "unreachable for" in str(outcome["error"])
        # A poll within 2 s, its 3 s timeout, then a 2 s stop attempt: not 10 s per poll before the grace starts.
        assert outcome["ended"] - stopped[0] < 8.5
    finally:
        os.kill(standin.process.pid, signal.SIGCONT)
        engine.close()


# -- answers that are not ComfyUI's ------------------------------------------------------------------------------


def odd_engine(server: OddServer, **kwargs: Any) -> ComfyUIEngine:
    engine = ComfyUIEngine(server.url, start_timeout=10, **kwargs)
    engine.start()
    return engine


def test_an_upload_answer_without_a_name_hands_the_run_back():
    with OddServer({"POST /upload/image": (200, "{}")}) as server:
        engine = odd_engine(server)
        try:
            load = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cg"}}}
            with pytest.raises(EngineUnavailable, match="without its name"):
                engine.run(job(load, input_files={"in.png": png((1, 2, 3))}))
        finally:
            engine.close()


def test_an_html_page_for_a_prompt_hands_the_run_back():
    with OddServer({"POST /prompt": (200, HTML)}) as server:
        engine = odd_engine(server)
        try:
            with pytest.raises(EngineUnavailable, match="not a JSON dict"):
                engine.run(job(trivial()))
            assert engine.reaper.pending()  # it may have been queued all the same
        finally:
            engine.close()


def test_a_5xx_while_following_gets_the_unreachable_grace():
    accepted = json.dumps({"prompt_id": "x", "number": 0, "node_errors": {}})
    with OddServer({"POST /prompt": (200, accepted), "GET /queue": (502, HTML)}) as server:
        engine = odd_engine(server, unreachable_grace=1.0)
        try:
            with pytest.raises(EngineUnavailable, match="unreachable for"):
                engine.run(job(trivial()))
        finally:
            engine.close()
