"""The stand-in against the recordings of ComfyUI 0.3.64: frame orders and shapes, bodies, queue and history.

Random ids, timestamps and file counters are not compared; types, key orders, status codes and bodies are.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import aiohttp

from comfyui_standin import StandinProcess
from comfyui_standin.support import (
    Socket,
    exchanges,
    get_json,
    part,
    post_prompt,
    recorded_frames,
    recorded_shapes,
    recording,
    shape,
    slow,
    trivial,
    types,
)


def color() -> int:
    return random.randrange(1, 0xFFFFFF)  # a new color: nothing of the prompt is in the cache yet


def strip(value: Any) -> Any:
    """A body without what cannot match: tracebacks (they quote the server's own code)."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def assert_recorded_shapes(frames: list[dict[str, Any]]) -> None:
    for frame in frames:
        if not frame["type"].startswith("binary") and frame["type"] != "closed":
            assert shape(frame) in recorded_shapes(), frame
        if frame["type"] == "progress_state":
            recorded = recorded_frames(part("05", "sampler-run-legacy-previews"))
            node_keys = next(tuple(e) for f in recorded if f["type"] == "progress_state"
                             for e in f["data"]["nodes"].values())
            assert all(tuple(e) == node_keys for e in frame["data"]["nodes"].values())


def recorded_body(name: str, part_name: str, method: str, path: str) -> Any:
    return next(response.get("body") for request, response in exchanges(part(name, part_name))
                if request["method"] == method and request["path"] == path)


def test_trivial_run_frames_history_and_file_match_recording_01(standin: StandinProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            answer = await post_prompt(session, standin.url, trivial(color()), ws.client_id)
            assert list(answer) == ["prompt_id", "number", "node_errors"] and answer["node_errors"] == {}
            await ws.run_done(answer["prompt_id"])
            recorded = recorded_frames(part("01", "run"))
            assert types(ws.frames) == types(recorded)
            assert ws.frames[0]["data"]["sid"] == ws.client_id
            assert_recorded_shapes(ws.frames)

            history = await get_json(session, f"{standin.url}/history/{answer['prompt_id']}")
            entry = history[answer["prompt_id"]]
            expected = next(iter(recorded_body("01", "run", "GET", f"/history/{recorded[4]['data']['prompt_id']}")
                                 .values()))
            assert list(entry) == list(expected)
            assert entry["prompt"][:2] == [answer["number"], answer["prompt_id"]]
            assert entry["prompt"][3:] == [{"client_id": ws.client_id}, ["2"]]
            assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in expected["status"]["messages"]]
            assert [list(m[1]) for m in entry["status"]["messages"]] == [list(m[1]) for m in
                                                                         expected["status"]["messages"]]
            assert entry["meta"] == expected["meta"]
            image = entry["outputs"]["2"]["images"][0]
            assert list(image) == ["filename", "subfolder", "type"] and image["filename"].endswith("_.png")

            async with session.get(f"{standin.url}/view", params=image) as response:
                recorded_view = [r for q, r in exchanges(part("01", "run")) if q["path"] == "/view"][0]
                assert response.status == 200
                assert [h for h in response.headers if h not in ("Date", "Server")] == [
                    h for h in recorded_view["headers"] if h not in ("Date", "Server")]
                assert response.headers["Content-Type"] == "image/png"
                assert (await response.read())[:8] == b"\x89PNG\r\n\x1a\n"
            assert await get_json(session, f"{standin.url}/queue") == {"queue_running": [], "queue_pending": []}
            assert await get_json(session, f"{standin.url}/api/prompt") == {"exec_info": {"queue_remaining": 0}}

    asyncio.run(scenario())


def test_identical_prompt_is_served_from_cache_and_client_ids_are_kept_recording_02(standin: StandinProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            prompt = trivial(color(), f"rec02{uuid.uuid4().hex[:6]}")
            first = await post_prompt(session, standin.url, prompt, ws.client_id)
            ran = await ws.run_done(first["prompt_id"])
            written = sorted(standin.output_dir.iterdir())
            again = await post_prompt(session, standin.url, prompt, ws.client_id)
            cached = await ws.run_done(again["prompt_id"])
            assert types(cached) == types(recorded_frames(part("02", "same-prompt-again")))
            assert cached[3]["data"]["nodes"] == ["1", "2"]
            outputs = [f["data"]["output"] for f in (*ran, *cached) if f["type"] == "executed"]
            assert outputs[0] == outputs[1] and sorted(standin.output_dir.iterdir()) == written
            assert cached[5]["data"]["nodes"]["2"] | {"prompt_id": ""} == {
                "value": 1, "max": 1, "state": "finished", "node_id": "2", "prompt_id": "", "display_node_id": "2",
                "parent_node_id": None, "real_node_id": "2"}

            own_id = f"standin-own-id-{uuid.uuid4().hex[:8]}"
            mine = await post_prompt(session, standin.url, prompt, ws.client_id, prompt_id=own_id)
            await ws.run_done(own_id)
            other = await post_prompt(session, standin.url, trivial(color()), ws.client_id)
            await ws.run_done(other["prompt_id"])
            mine_again = await post_prompt(session, standin.url, prompt, ws.client_id, prompt_id=own_id)
            await ws.run_done(own_id)
            assert mine["prompt_id"] == mine_again["prompt_id"] == own_id
            assert mine_again["number"] > other["number"] > mine["number"]
            listed = list(await get_json(session, f"{standin.url}/history"))
            assert listed.index(own_id) < listed.index(other["prompt_id"])  # overwritten in place
            entry = (await get_json(session, f"{standin.url}/history/{own_id}"))[own_id]
            assert entry["prompt"][0] == mine_again["number"]

    asyncio.run(scenario())


def test_rejected_prompts_get_comfyui_bodies_and_no_frames_recording_03(standin: StandinProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            for p in recording("03")["parts"]:
                if p["name"] in ("ws", "after", "partially-valid-prompt"):
                    continue
                request, expected = exchanges(p["events"])[0]
                body = request["body"]
                data = body["raw"] if "raw" in body else json.dumps(body)
                async with session.post(standin.url + "/prompt", data=data,
                                        headers={"Content-Type": "application/json"}) as response:
                    assert response.status == expected["status"], p["name"]
                    assert response.headers["Content-Type"] == expected["headers"]["Content-Type"], p["name"]
                    if "body_text" in expected:
                        assert await response.text() == expected["body_text"], p["name"]
                    else:
                        got = await response.json()
                        assert strip(got) == strip(expected["body"]), p["name"]
                        tracebacks = [e["extra_info"].get("traceback") for n in got["node_errors"].values()
                                      for e in n["errors"] if e["type"].startswith("exception_during")]
                        assert all(isinstance(tb, list) and tb for tb in tracebacks)

            partial = exchanges(part("03", "partially-valid-prompt"))[0]
            answer = await post_prompt(session, standin.url, partial[0]["body"]["prompt"], ws.client_id)
            assert answer["node_errors"] == partial[1]["body"]["node_errors"]
            frames = await ws.run_done(answer["prompt_id"])
            # The first frame after all the rejections is this prompt's queue status: rejections sent nothing.
            assert frames[0] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}
            assert types(frames) == types(recorded_frames(part("03", "partially-valid-prompt")))
            entry = (await get_json(session, f"{standin.url}/history/{answer['prompt_id']}"))[answer["prompt_id"]]
            assert entry["prompt"][4] == ["2"] and list(entry["outputs"]) == ["2"]

    asyncio.run(scenario())


def test_execution_error_frames_and_history_recording_04(standin: StandinProcess) -> None:
    (standin.input_dir / "bad.png").write_bytes(b"this is not a png, just 32 bytes")

    def bad(prefix: str) -> dict[str, Any]:
        return {"1": {"class_type": "LoadImage", "inputs": {"image": "bad.png"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            answer = await post_prompt(session, standin.url, bad("rec04"), ws.client_id)
            frames = await ws.run_done(answer["prompt_id"])
            recorded = recorded_frames(part("04", "loadimage-bad-file"))
            assert types(frames) == types(recorded[1:])
            assert_recorded_shapes(frames)
            error = next(f["data"] for f in frames if f["type"] == "execution_error")
            assert error["exception_type"] == "PIL.UnidentifiedImageError" and error["node_id"] == "1"
            assert error["exception_message"] == f"cannot identify image file '{standin.input_dir / 'bad.png'}'\n"
            assert error["current_inputs"] == {"image": ["bad.png"]} and error["executed"] == []
            assert all(isinstance(line, str) for line in error["traceback"]) and error["traceback"]
            entry = (await get_json(session, f"{standin.url}/history/{answer['prompt_id']}"))[answer["prompt_id"]]
            assert entry["outputs"] == {} and entry["meta"] == {}
            assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
            assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                                   "execution_error"]

            both = {**trivial(color(), "rec04ok"), "3": bad("rec04")["1"], "4": bad("rec04")["2"]}
            both["4"]["inputs"]["images"] = ["3", 0]
            answer = await post_prompt(session, standin.url, both, ws.client_id)
            frames = await ws.run_done(answer["prompt_id"])
            error = next(f["data"] for f in frames if f["type"] == "execution_error")
            assert error["node_id"] == "3" and sorted(error["executed"]) == ["1", "2"]
            entry = (await get_json(session, f"{standin.url}/history/{answer['prompt_id']}"))[answer["prompt_id"]]
            assert list(entry["outputs"]) == ["2"] and entry["status"]["status_str"] == "error"

            again = await post_prompt(session, standin.url, bad("rec04"), ws.client_id)  # failures are not cached
            frames = await ws.run_done(again["prompt_id"])
            assert types(frames) == types(recorded[1:])

    asyncio.run(scenario())


def test_previews_follow_the_feature_flags_recording_05(standin: StandinProcess) -> None:
    def steps(frames: list[dict[str, Any]]) -> list[list[str]]:
        """The three frames around each progress report."""
        found = []
        for index, frame in enumerate(frames):
            if frame["type"] == "binary:4" or (frame["type"] == "progress" and frames[index - 1]["type"] != "binary:4"):
                found.append(types(frames[index - 1:index + 2]))
        return found

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            legacy = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await legacy.next()
            answer = await post_prompt(session, standin.url, slow(color(), 0.2), legacy.client_id)
            frames = await legacy.run_done(answer["prompt_id"])
            recorded = steps(recorded_frames(part("05", "sampler-run-legacy-previews")))
            assert steps(frames) and set(map(tuple, steps(frames))) == set(map(tuple, recorded))
            assert all(f["data"].image().format == "JPEG" for f in frames if f["type"] == "binary:1")
            assert_recorded_shapes(frames)

            modern = Socket(session, standin.url, uuid.uuid4().hex)
            await modern.open(feature_flags={"supports_preview_metadata": True})
            await modern.next()
            recorded_part = recorded_frames(part("05", "sampler-run-preview-metadata"))
            assert await modern.next() == recorded_part[1]  # the server's feature_flags
            answer = await post_prompt(session, standin.url, slow(color(), 0.2), modern.client_id)
            frames = await modern.run_done(answer["prompt_id"])
            assert steps(frames) and set(map(tuple, steps(frames))) == set(map(tuple, steps(recorded_part)))
            preview = next(f["data"] for f in frames if f["type"] == "binary:4")
            recorded_metadata = next(f["data"]["metadata"] for f in recorded_part if f["type"] == "binary:4")
            assert list(preview.metadata()) == list(recorded_metadata)
            assert preview.metadata()["node_id"] == "3" and preview.metadata()["prompt_id"] == answer["prompt_id"]
            assert preview.image().format == "JPEG"

    asyncio.run(scenario())


async def _until_status(ws: Socket, remaining: int) -> None:
    while True:
        frames = await ws.until("status")
        if frames[-1]["data"]["status"]["exec_info"]["queue_remaining"] == remaining:
            return


async def _interrupt(session: aiohttp.ClientSession, url: str, body: Any = None) -> None:
    async with session.post(url + "/interrupt", **({"json": body} if body is not None else {})) as response:
        assert response.status == 200 and await response.read() == b""
        assert "Content-Type" not in response.headers


def test_interrupt_and_queue_edits_recording_06(standin: StandinProcess) -> None:
    async def scenario() -> None:
        url = standin.url
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, url, uuid.uuid4().hex).open()
            await ws.next()
            answer = await post_prompt(session, url, slow(color(), 30), ws.client_id)
            await ws.until("progress", value=2)
            await _interrupt(session, url)
            frames = await ws.run_done(answer["prompt_id"])
            tail = [t for t in types(frames) if not t.startswith(("binary", "progress"))]
            assert tail == ["execution_interrupted", "status", "executing"]
            assert_recorded_shapes(frames)
            entry = (await get_json(session, f"{url}/history/{answer['prompt_id']}"))[answer["prompt_id"]]
            assert entry["outputs"] == {} and entry["status"]["status_str"] == "error"
            assert entry["status"]["messages"][-1][0] == "execution_interrupted"

            answer = await post_prompt(session, url, slow(color(), 30), ws.client_id)
            await ws.until("progress", value=2)
            await _interrupt(session, url, {"prompt_id": str(uuid.uuid4())})  # not running: nothing happens
            await ws.until("progress", value=4)
            await _interrupt(session, url, {"prompt_id": answer["prompt_id"]})
            frames = await ws.run_done(answer["prompt_id"])
            assert "execution_interrupted" in types(frames)

            first, second, third = [await post_prompt(session, url, slow(color(), 30), ws.client_id)
                                    for _ in range(3)]
            await ws.until("progress", prompt_id=first["prompt_id"])
            queue = await get_json(session, f"{url}/queue")
            assert [item[1] for item in queue["queue_running"]] == [first["prompt_id"]]
            assert [item[1] for item in queue["queue_pending"]] == [second["prompt_id"], third["prompt_id"]]
            assert all(len(item) == 5 and item[4] == ["2"] for item in queue["queue_pending"])
            await _interrupt(session, url, {"prompt_id": second["prompt_id"]})  # pending: stays queued
            async with session.post(url + "/queue", json={"delete": [third["prompt_id"]]}) as response:
                assert response.status == 200 and await response.read() == b""
            await _until_status(ws, 2)
            for body in ({"delete": [first["prompt_id"]]}, {"delete": ["no-such-prompt-id"]}):
                async with session.post(url + "/queue", json=body) as response:
                    assert response.status == 200
            queue = await get_json(session, f"{url}/queue")
            assert [item[1] for item in queue["queue_running"] + queue["queue_pending"]] == [
                first["prompt_id"], second["prompt_id"]]
            async with session.post(url + "/queue", json={"clear": True}) as response:
                assert response.status == 200
            await _until_status(ws, 1)
            assert (await get_json(session, f"{url}/queue"))["queue_pending"] == []
            await _interrupt(session, url)
            await ws.run_done(first["prompt_id"])
            for gone in (second, third):
                assert await get_json(session, f"{url}/history/{gone['prompt_id']}") == {}

            await _interrupt(session, url)  # while idle: does not touch the next prompt
            answer = await post_prompt(session, url, trivial(color()), ws.client_id)
            assert "execution_success" in types(await ws.run_done(answer["prompt_id"]))
            async with session.post(url + "/interrupt", data="not json") as response:
                assert response.status == 200

    asyncio.run(scenario())


def test_history_listing_recording_12(standin: StandinProcess) -> None:
    async def scenario() -> None:
        url = standin.url
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/history", json={"clear": True}) as response:
                assert response.status == 200 and "Content-Type" not in response.headers
            ws = await Socket(session, url, uuid.uuid4().hex).open()
            await ws.next()
            ids = []
            for _ in range(3):
                answer = await post_prompt(session, url, trivial(color(), "rec12"), ws.client_id)
                await ws.run_done(answer["prompt_id"])
                ids.append(answer["prompt_id"])
            a, b, c = ids

            async def listed(query: str = "") -> list[str]:
                return list(await get_json(session, f"{url}/history{query}"))

            assert await listed() == [a, b, c]
            assert await listed("?max_items=2") == [b, c]
            assert await listed("?max_items=2&offset=0") == [a, b]
            assert await listed("?offset=1") == [b, c]
            assert await listed("?max_items=0") == []
            assert await get_json(session, f"{url}/history/no-such-id") == {}
            async with session.post(url + "/history", json={"delete": [a]}) as response:
                assert response.status == 200 and await response.read() == b""
            assert await get_json(session, f"{url}/history/{a}") == {}
            assert await listed() == [b, c]
            async with session.post(url + "/history", json={"delete": ["no-such-id"]}) as response:
                assert response.status == 200
            async with session.post(url + "/history", json={"clear": True}) as response:
                assert response.status == 200
            assert await listed() == []

    asyncio.run(scenario())
