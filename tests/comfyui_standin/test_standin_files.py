"""The stand-in's files and process against recordings 07, 08 and 11: every output type, /view, uploads, a fake
install started as ComfyUI is, kill -9 and restart; plus the history lag and --object-info."""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from comfyui_standin import StandinProcess, make_install, start_standin, wait_ready
from comfyui_standin.support import Socket, exchanges, get_json, part, post_prompt, recording, slow, trivial, types
from deployment import free_port

TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")


def color() -> int:
    return random.randrange(1, 0xFFFFFF)


def png(rgba: tuple[int, int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_output_type_and_view_recording_07(standin: StandinProcess) -> None:
    run = part("07", "run")
    recorded_prompt = exchanges(run)[0][0]["body"]["prompt"]
    recorded_outputs = next(iter(exchanges(run)[1][1]["body"].values()))["outputs"]
    folder = f"rec07{uuid.uuid4().hex[:6]}"
    prompt = json.loads(json.dumps(recorded_prompt).replace('"rec07/', f'"{folder}/'))
    prompt["18"] = {"class_type": "StandinCubeMesh", "inputs": {"size": 1.0}}
    prompt["19"] = {"class_type": "SaveGLB", "inputs": {"mesh": ["18", 0], "filename_prefix": f"{folder}/mesh"}}

    def names(output: dict[str, Any]) -> dict[str, list[str]]:
        return {key: sorted(TEMP_NAME.sub("ComfyUI_temp_x_", f["filename"]) for f in value)
                for key, value in output.items() if key != "text" and isinstance(value[0], dict)}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            answer = await post_prompt(session, standin.url, prompt, ws.client_id)
            frames = await ws.run_done(answer["prompt_id"])
            executed = {f["data"]["node"]: f["data"]["output"] for f in frames if f["type"] == "executed"}
            entry = (await get_json(session, f"{standin.url}/history/{answer['prompt_id']}"))[answer["prompt_id"]]
            assert entry["outputs"] == executed and set(entry["meta"]) == set(executed)
            assert set(executed) == set(recorded_outputs) | {"19"}
            audio_nodes = {"10", "11", "12"}  # one counter for the prefix: numbers by execution order
            for node, expected in recorded_outputs.items():
                ours = executed[node]
                assert list(ours) == list(expected), node
                assert [list(f) for v in ours.values() for f in v if isinstance(f, dict)] == [
                    list(f) for v in expected.values() for f in v if isinstance(f, dict)], node
                if node not in audio_nodes:
                    assert names(ours) == names(expected), node
            numbers = sorted(re.findall(r"_(\d{5})_", executed[n]["audio"][0]["filename"])[0] for n in audio_nodes)
            assert numbers == ["00001", "00002", "00003"]
            assert executed["14"] == {"text": ["hello from PreviewAny"]}
            assert executed["17"]["text"][0].startswith("tensor([[[[0.2000, 0.4000, 0.8000],")
            assert executed["19"] == {"3d": [{"filename": "mesh_00001_.glb", "subfolder": folder, "type": "output"}]}
            assert executed["4"]["animated"] == [True] and executed["8"]["animated"] == [True]

            recorded_types = {Path(q["query"]["filename"]).suffix: r["headers"]["Content-Type"]
                              for q, r in exchanges(part("07", "view-each-output"))}
            recorded_types[".glb"] = "model/gltf-binary"
            for output in executed.values():
                for record in (r for v in output.values() for r in v if isinstance(r, dict)):
                    async with session.get(standin.url + "/view", params=record) as response:
                        body = await response.read()
                        assert response.status == 200 and body, record
                        assert response.headers["Content-Type"] == recorded_types[Path(record["filename"]).suffix]
                        assert response.headers["Content-Disposition"] == f'filename="{record["filename"]}"'
            async with session.get(standin.url + "/view", params=executed["19"]["3d"][0]) as response:
                assert (await response.read())[:4] == b"glTF"

            for request, expected in exchanges(part("07", "view-variants")):
                query = {k: v.replace("rec07", folder) for k, v in request["query"].items()}
                async with session.get(standin.url + "/view", params=query) as response:
                    assert response.status == expected["status"], query
                    assert response.headers.get("Content-Type") == expected["headers"].get("Content-Type"), query
                    body = await response.read()
                    if response.status != 200:
                        assert body == b""
                    elif response.headers["Content-Type"] == "image/png":
                        mode = Image.open(io.BytesIO(body)).mode
                        assert mode == ("RGB" if query.get("channel") == "rgb" else "RGBA")

    asyncio.run(scenario())


def test_uploads_are_named_as_comfyui_names_them_recording_08(standin: StandinProcess) -> None:
    red, blue, green = png((255, 0, 0, 255)), png((0, 0, 255, 255)), png((0, 255, 0, 255))

    async def upload(session: aiohttp.ClientSession, path: str, data: bytes | None, filename: str,
                     **fields: str) -> tuple[int, Any]:
        form = aiohttp.FormData()
        if data is not None:
            form.add_field("image", data, filename=filename, content_type="image/png")
        for name, value in fields.items():
            form.add_field(name, value)
        async with session.post(standin.url + path, data=form) as response:
            body = await response.json() if response.content_type == "application/json" else await response.read()
            return response.status, body

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            steps = [(red, "rec08.png", {"type": "input"}),
                     (red, "rec08.png", {"type": "input", "subfolder": "rec08sub"}),
                     (red, "rec08.png", {"type": "input"}), (blue, "rec08.png", {"type": "input"}),
                     (green, "rec08.png", {"type": "input"}),
                     (blue, "rec08.png", {"type": "input", "overwrite": "true"}), (red, "rec08-notype.png", {}),
                     (red, "rec08-temp.png", {"type": "temp"}), (None, "", {"type": "input"}),
                     (red, "rec08-escape.png", {"type": "input", "subfolder": "../.."})]
            recorded = [response for p in recording("08")["parts"] for request, response in exchanges(p["events"])
                        if request["path"] == "/upload/image"]
            for (data, filename, fields), expected in zip(steps, recorded, strict=True):
                status, body = await upload(session, "/upload/image", data, filename, **fields)
                assert status == expected["status"], (filename, fields)
                assert body == (expected.get("body") if status == 200 else b""), (filename, fields)
            assert (standin.input_dir / "rec08.png").read_bytes() == blue

            mask = png((0, 0, 0, 128))
            reference = json.dumps({"filename": "rec08.png", "type": "input", "subfolder": ""})
            status, body = await upload(session, "/upload/mask", mask, "rec08-mask.png", type="input",
                                        original_ref=reference)
            assert (status, body) == (200, {"name": "rec08-mask.png", "subfolder": "", "type": "input"})
            masked = Image.open(standin.input_dir / "rec08-mask.png")
            assert masked.mode == "RGBA" and masked.getpixel((0, 0)) == (0, 0, 255, 128)

            listed = (await get_json(session, standin.url + "/object_info/LoadImage"))["LoadImage"]
            choices = listed["input"]["required"]["image"][0]
            assert {"rec08.png", "rec08 (1).png", "rec08 (2).png", "rec08-mask.png", "rec08-notype.png"} <= set(choices)
            assert choices == sorted(choices) and not any("/" in name for name in choices)

            loads = exchanges(part("08", "loadimage-runs"))[0][0]["body"]["prompt"]
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            answer = await post_prompt(session, standin.url, loads, ws.client_id)
            frames = await ws.run_done(answer["prompt_id"])
            assert "execution_success" in types(frames)
            for query in ({"filename": "rec08.png", "type": "input"},
                          {"filename": "rec08.png", "subfolder": "rec08sub", "type": "input"}):
                async with session.get(standin.url + "/view", params=query) as response:
                    assert response.status == 200 and response.headers["Content-Type"] == "image/png"

    asyncio.run(scenario())


def recorded_object_info(directory: Path) -> Path:
    """The recorded server's /object_info body as a file, for --object-info."""
    body = next(response["body"] for _, response in exchanges(part("00", "object-info"))
                if isinstance(response.get("body"), dict) and len(response["body"]) > 1)
    path = directory / "object_info.json"
    path.write_text(json.dumps(body))
    return path


def test_fake_install_kill_restart_history_lag_and_object_info_recording_11(tmp_path: Path) -> None:
    install = make_install(tmp_path / "ComfyUI")
    port = free_port()
    log_path = install / "comfyui.log"
    with log_path.open("wb") as log:  # started as a supervisor starts ComfyUI
        process = subprocess.Popen([sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--cpu",
                                    "--disable-auto-launch", "--preview-method", "latent2rgb"],
                                   cwd=install, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    first = wait_ready(StandinProcess(install, port, process, log_path))
    try:
        asyncio.run(_before_and_crash(first))
    finally:
        first.kill()
    assert first.process.returncode == -9  # SIGKILL, as recorded: no shutdown ran
    second = start_standin(install, port=port, history_lag_ms=300, object_info=recorded_object_info(tmp_path))
    try:
        asyncio.run(_after_restart(second))  # asserts what the restarted server says (recording 11)
    finally:
        second.stop()


async def _before_and_crash(standin: StandinProcess) -> None:
    async with aiohttp.ClientSession() as session:
        stats = await get_json(session, standin.url + "/system_stats")
        assert stats["system"]["argv"][:2] == ["main.py", "--listen"]
        ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
        await ws.next()
        prompt = trivial(color(), "rec11")
        prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
        answer = await post_prompt(session, standin.url, prompt, ws.client_id)
        frames = await ws.run_done(answer["prompt_id"])
        files = [r for f in frames if f["type"] == "executed" for r in f["data"]["output"]["images"]]
        assert (standin.output_dir / files[0]["filename"]).is_file()
        assert (standin.temp_dir / files[1]["filename"]).is_file()
        (standin.base_dir / "files.json").write_text(json.dumps(files))

        await post_prompt(session, standin.url, slow(color(), 30), ws.client_id)
        await post_prompt(session, standin.url, trivial(color(), "rec11pending"), ws.client_id)
        await ws.until("progress", value=2)
        standin.kill()
        while (closed := await ws.next())["type"] != "closed":  # frames sent before the kill still arrive
            assert closed["type"] in ("progress", "progress_state", "binary:1")
        assert closed["data"]["close_code"] in (None, 1006)
        try:
            await get_json(session, standin.url + "/queue")
        except aiohttp.ClientConnectorError as exc:
            assert isinstance(exc.os_error, ConnectionRefusedError)
        else:
            raise AssertionError("a killed server still answered")


async def _after_restart(standin: StandinProcess) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
        assert (await ws.next())["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
        assert await get_json(session, standin.url + "/queue") == {"queue_running": [], "queue_pending": []}
        assert await get_json(session, standin.url + "/history") == {}
        output, preview = json.loads((standin.base_dir / "files.json").read_text())
        async with session.get(standin.url + "/view", params=output) as response:
            assert response.status == 200
        async with session.get(standin.url + "/view", params=preview) as response:
            assert response.status == 404  # the temp folder was wiped at start

        # --history-lag-ms: right after execution_success the entry is not there yet; after executing null it is.
        answer = await post_prompt(session, standin.url, trivial(color(), "lag"), ws.client_id)
        await ws.until("execution_success", prompt_id=answer["prompt_id"])
        assert await get_json(session, f"{standin.url}/history/{answer['prompt_id']}") == {}
        await ws.run_done(answer["prompt_id"])
        assert answer["prompt_id"] in await get_json(session, f"{standin.url}/history/{answer['prompt_id']}")

        # --object-info: the recorded catalogue is served and checked; its nodes this runtime lacks fail at run time.
        catalogue = await get_json(session, standin.url + "/object_info")
        assert len(catalogue) == 383 and "RepeatImageBatch" in catalogue
        prompt = trivial(color(), "flux")
        prompt["3"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}}
        prompt["2"]["inputs"]["images"] = ["3", 0]
        answer = await post_prompt(session, standin.url, prompt, ws.client_id)
        frames = await ws.run_done(answer["prompt_id"])
        error = next(f["data"] for f in frames if f["type"] == "execution_error")
        assert error["node_id"] == "3" and error["node_type"] == "RepeatImageBatch"
