"""The stand-in's sockets and server info against recordings 09, 10 and 13; its fault node and drop hook."""

from __future__ import annotations

import asyncio
import random
import re
import uuid

import aiohttp

from comfyui_standin import StandinProcess
from comfyui_standin.support import (
    Socket,
    exchanges,
    get_json,
    part,
    post_prompt,
    recorded_frames,
    slow,
    trivial,
    types,
)

EXECUTION_FRAMES = {"execution_start", "execution_cached", "executing", "executed", "execution_success"}


def color() -> int:
    return random.randrange(1, 0xFFFFFF)


async def _until_idle(ws: Socket) -> list[dict]:
    """A bystander's frames up to the status that says the queue is empty again."""
    start = len(ws.frames)
    while True:
        frames = await ws.until("status")
        if frames[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0:
            return ws.frames[start:]


def test_server_info_routes_and_feature_flags_recording_09(standin: StandinProcess) -> None:
    recorded = {request["path"]: response for request, response in exchanges(part("09", "info"))}

    async def scenario() -> None:
        url = standin.url
        async with aiohttp.ClientSession() as session:
            stats = await get_json(session, url + "/system_stats")
            expected = recorded["/system_stats"]["body"]
            assert list(stats) == list(expected) and list(stats["system"]) == list(expected["system"])
            assert [list(device) for device in stats["devices"]] == [list(d) for d in expected["devices"]]
            assert stats["devices"][0]["name"] == "cpu" and stats["devices"][0]["index"] is None
            assert stats["system"]["comfyui_version"] == "0.3.64"
            assert await get_json(session, url + "/embeddings") == []
            assert isinstance(await get_json(session, url + "/extensions"), list)
            assert await get_json(session, url + "/models") == recorded["/models"]["body"]
            assert await get_json(session, url + "/models/checkpoints") == ["random-sd15.safetensors"]
            async with session.get(url + "/models/no-such-folder") as response:
                assert response.status == 404 and "Content-Type" not in response.headers
            for path in ("/features", "/api/features"):
                assert await get_json(session, url + path) == recorded["/features"]["body"]
            assert await get_json(session, url + "/api/queue") == {"queue_running": [], "queue_pending": []}
            async with session.post(url + "/free", json={"unload_models": True, "free_memory": True}) as response:
                assert response.status == 200 and await response.read() == b""

            anonymous = await Socket(session, url, None).open()
            assert re.fullmatch(r"[0-9a-f]{32}", (await anonymous.next())["data"]["sid"])
            flagged = await Socket(session, url, uuid.uuid4().hex).open({"supports_preview_metadata": True})
            await flagged.next()
            assert await flagged.next() == recorded_frames(part("09", "ws-feature-flags"))[1]
            assert flagged.ws is not None
            await flagged.ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": False}})
            assert await flagged.silent()  # a second feature_flags frame gets no answer

    asyncio.run(scenario())


def test_node_catalogue_entries_match_recording_00(standin: StandinProcess) -> None:
    recorded = next(r["body"] for _, r in exchanges(part("00", "object-info")) if len(r.get("body") or {}) > 1)
    same = ("SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "EmptyAudio", "SaveAudio",
            "SaveAudioMP3", "SaveAudioOpus", "PreviewAudio", "SaveLatent", "PreviewAny", "SaveGLB", "EmptyImage")
    v3_extras = ("output_tooltips", "deprecated", "experimental", "api_node", "display_name")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            catalogue = await get_json(session, standin.url + "/object_info")
            for name in same:
                assert catalogue[name] == recorded[name], name
            for name in ("SaveWEBM", "SaveVideo", "CreateVideo"):  # comfy_api v3 nodes: their extra keys aside
                assert {k: v for k, v in catalogue[name].items() if k not in v3_extras} == {
                    k: v for k, v in recorded[name].items() if k not in v3_extras}, name
            loader = (await get_json(session, standin.url + "/object_info/LoadImage"))["LoadImage"]
            assert {**loader, "input": None} == {**recorded["LoadImage"], "input": None}
            assert await get_json(session, standin.url + "/object_info/NoSuchNodeClass") == {}

    asyncio.run(scenario())


def test_frames_go_to_the_submitting_client_only_recording_10(standin: StandinProcess) -> None:
    async def scenario() -> None:
        url = standin.url
        async with aiohttp.ClientSession() as session:
            a = await Socket(session, url, uuid.uuid4().hex).open()
            b = await Socket(session, url, uuid.uuid4().hex).open()
            await a.next(), await b.next()
            answer = await post_prompt(session, url, trivial(color(), "rec10"), a.client_id)
            assert "execution_success" in types(await a.run_done(answer["prompt_id"]))
            assert set(types(await _until_idle(b))) == {"status"}

            # Without client_id: progress, its state and previews go to every socket, execution frames to none.
            answer = await post_prompt(session, url, slow(color(), 0.2))
            for ws in (a, b):
                seen = set(types(await _until_idle(ws)))
                assert {"progress", "progress_state", "binary:1"} <= seen and not seen & EXECUTION_FRAMES
            entry = await get_json(session, f"{url}/history/{answer['prompt_id']}")
            assert entry[answer["prompt_id"]]["status"]["status_str"] == "success"

            # Reconnecting mid-run: status, then the node now running, then the rest of the run; nothing replayed.
            answer = await post_prompt(session, url, slow(color(), 1.0), a.client_id)
            await a.until("progress", value=2)
            await a.close()
            again = await Socket(session, url, a.client_id).open()
            first, second = await again.next(), await again.next()
            recorded = recorded_frames(part("10", "reconnect-same-client-id"), "A2(same clientId as A)")
            assert [first["type"], second] == [recorded[0]["type"], {"type": "executing", "data": {"node": "3"}}]
            assert first["data"]["sid"] == a.client_id and first["data"]["status"]["exec_info"]["queue_remaining"] == 1
            rest = await again.run_done(answer["prompt_id"])
            assert "execution_start" not in types(rest) and "execution_success" in types(rest)

            # Two sockets on one clientId: only the newest gets anything.
            newest = await Socket(session, url, a.client_id).open()
            await newest.next()
            answer = await post_prompt(session, url, trivial(color(), "rec10"), a.client_id)
            await newest.run_done(answer["prompt_id"])
            assert await again.silent()

    asyncio.run(scenario())


def test_closing_the_older_socket_orphans_the_newer_recording_13(standin: StandinProcess) -> None:
    async def scenario() -> None:
        url = standin.url
        client_id = uuid.uuid4().hex
        async with aiohttp.ClientSession() as session:
            s1 = await Socket(session, url, client_id).open()
            s2 = await Socket(session, url, client_id).open()
            await s1.next(), await s2.next()
            await s1.close()
            answer = await post_prompt(session, url, trivial(color(), "rec13"), client_id)
            # Completion shows only in /history; waiting on S2 between polls is the pause and the check.
            while not await get_json(session, f"{url}/history/{answer['prompt_id']}"):
                assert await s2.silent(0.05)
            assert await s2.silent()
            s3 = await Socket(session, url, client_id).open()
            await s3.next()
            answer = await post_prompt(session, url, trivial(color(), "rec13"), client_id)
            frames = await s3.run_done(answer["prompt_id"])
            assert types(frames) == types(recorded_frames(part("13", "fresh-socket-after-that"), "S3")[1:])

    asyncio.run(scenario())


def test_out_of_memory_node_until_free_and_always(standin: StandinProcess) -> None:
    def prompt(mode: str) -> dict:
        graph = trivial(color(), "oom")
        graph["3"] = {"class_type": "StandinOutOfMemory", "inputs": {"image": ["1", 0], "mode": mode}}
        graph["2"]["inputs"]["images"] = ["3", 0]
        return graph

    async def error_of(session: aiohttp.ClientSession, ws: Socket, graph: dict) -> dict | None:
        answer = await post_prompt(session, standin.url, graph, ws.client_id)
        frames = await ws.run_done(answer["prompt_id"])
        return next((f["data"] for f in frames if f["type"] == "execution_error"), None)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            graph = prompt("until_freed")
            error = await error_of(session, ws, graph)
            assert error is not None and error["exception_type"] == "torch.OutOfMemoryError"
            assert error["exception_message"].startswith("CUDA out of memory. Tried to allocate 20.00 MiB")
            assert "\nThis error means you ran out of memory on your GPU." in error["exception_message"]
            assert await error_of(session, ws, graph) is not None  # nothing freed yet
            async with session.post(standin.url + "/free", json={"free_memory": True}) as response:
                assert response.status == 200
            assert await error_of(session, ws, graph) is None
            assert (await error_of(session, ws, prompt("always")) or {}).get("node_type") == "StandinOutOfMemory"

    asyncio.run(scenario())


def test_drop_sockets_cuts_connections_without_a_close_frame(standin: StandinProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await Socket(session, standin.url, uuid.uuid4().hex).open()
            await ws.next()
            async with session.post(standin.url + "/standin/drop_sockets") as response:
                assert (await response.json())["dropped"] >= 1
            closed = await ws.next()
            assert closed["type"] == "closed" and closed["data"]["close_code"] != 1000
            again = await Socket(session, standin.url, ws.client_id).open()
            assert (await again.next())["type"] == "status"

    asyncio.run(scenario())
