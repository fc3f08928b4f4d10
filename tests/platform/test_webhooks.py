"""Webhooks end to end: a real API server sends them to a real HTTP receiver on loopback, from the outbox
rows the worker (and a reviewer's decision) wrote."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from live_server import Server, running_server

from comfygate.platform.worker import RunProcessor
from comfygate.settings import Settings

NODE_PACKS = Path(__file__).resolve().parents[1] / "nodepacks"
SECRET = "receiver-shares-this"
SEEDED = {  # a structured picture that passes the default gate (seeded_nodes.py)
    "1": {"class_type": "SeededFrame", "inputs": {"seed": 7, "width": 64, "height": 48, "blank_below": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "hooked"}},
}
HELD_POLICY = {"checks": {"blank": {"reject": 0.02, "review": 0.9}}}  # its contrast falls in the review band


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on loopback that records every POST; paths under /fail answer 500."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, what: Callable[[list[Received]], bool], timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not what(self.received):
                left = deadline - time.monotonic()
                assert left > 0, f"the receiver never got what was expected; it got {self.received}"
                self.changed.wait(left)
            return list(self.received)

    def for_run(self, run_id: str) -> list[Received]:
        with self.changed:
            return [r for r in self.received if r.json["run"]["id"] == run_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()

    async def record(request: web.Request) -> web.Response:
        entry = Received(request.path, dict(request.headers), await request.read())
        with recorder.changed:
            recorder.received.append(entry)
            recorder.changed.notify_all()
        return web.Response(status=500 if request.path.startswith("/fail") else 204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        recorder.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    yield recorder
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


@dataclass
class Install:
    server: Server
    worker: RunProcessor

    def start_run(self, workflow: str, webhook: str) -> str:
        response = self.server.call("POST", f"/v1/workflows/{workflow}/runs", json={"inputs": {}, "webhook": webhook})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        self.worker.process(run_id, 1)  # what a worker does with the task
        return run_id

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        response = self.server.call("GET", f"/v1/webhooks?run={run_id}")
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def wait_deliveries(self, run_id: str, state: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            items = self.deliveries(run_id)
            if items and all(item["state"] == state for item in items):
                return items
            assert time.monotonic() < deadline, f"deliveries never all {state}: {items}"
            time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def install(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Install]:
    """An API server (which sends the webhooks) and a worker in this process, sharing one database."""
    database_url = (f"sqlite:///{tmp_path / 'comfygate.db'}" if request.param == "sqlite"
                    else request.getfixturevalue("postgres_url"))
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, node_pack_dirs=(NODE_PACKS,),
                        webhook_secret=SECRET, webhook_max_attempts=2, webhook_timeout_seconds=5,
                        watchdog_seconds=60, heartbeat_seconds=0.2)
    with running_server(settings) as server:
        for name, policy in (("hooked", None), ("hooked-held", HELD_POLICY)):
            pushed = server.call("POST", "/v1/workflows", json={"name": name, "workflow": SEEDED, "policy": policy})
            assert pushed.status_code == 201, pushed.text
        worker = RunProcessor(settings)
        yield Install(server, worker)
        worker.database.dispose()


def test_a_passing_run_is_announced_once_with_a_signature_that_verifies(install, receiver):
    run_id = install.start_run("hooked", f"{receiver.url}/ok")
    receiver.wait_for(lambda got: any(r.json["run"]["id"] == run_id for r in got))
    (hook,) = install.wait_deliveries(run_id, "delivered")
    (sent,) = receiver.for_run(run_id)
    assert sent.json["event"] == "run.ended" and sent.headers["X-Comfygate-Event"] == "run.ended"
    assert sent.json["run"]["status"] == "succeeded" and sent.json["run"]["outputs"][0]["released"]
    assert sent.headers["X-Comfygate-Delivery"] == str(hook["id"])
    expected = "sha256=" + hmac.new(SECRET.encode(), sent.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sent.headers["X-Comfygate-Signature"], expected)
    assert (hook["event"], hook["attempts"], hook["last_status"]) == ("run.ended", 1, 204)


def test_a_held_run_is_announced_only_once_a_reviewer_approves_it(install, receiver):
    run_id = install.start_run("hooked-held", f"{receiver.url}/held")
    run = install.server.call("GET", f"/v1/runs/{run_id}").json()
    assert run["status"] == "held" and not run["outputs"][0]["released"]
    assert install.deliveries(run_id) == []  # nothing is queued, so nothing can be sent

    decided = install.server.call("POST", f"/v1/review/{run['outputs'][0]['id']}", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    receiver.wait_for(lambda got: any(r.json["run"]["id"] == run_id for r in got))
    (hook,) = install.wait_deliveries(run_id, "delivered")
    (sent,) = receiver.for_run(run_id)
    assert sent.json["event"] == hook["event"] == "run.reviewed"
    assert sent.json["run"]["status"] == "succeeded" and sent.json["run"]["outputs"][0]["released"]


def test_a_receiver_that_answers_500_is_retried_then_recorded_failed(install, receiver):
    run_id = install.start_run("hooked", f"{receiver.url}/fail")
    (hook,) = install.wait_deliveries(run_id, "failed")
    assert (hook["attempts"], hook["last_status"]) == (2, 500) and "500" in hook["last_error"]
    tries = receiver.for_run(run_id)
    assert len(tries) == 2 and {t.headers["X-Comfygate-Delivery"] for t in tries} == {str(hook["id"])}


def test_webhooks_list_needs_an_admin_and_a_run_id(server):
    assert server.call("GET", "/v1/webhooks?run=" + "0" * 32, key="user").status_code == 403
    assert server.call("GET", "/v1/webhooks?run=nope").status_code == 422
    assert server.call("GET", "/v1/webhooks?run=" + "0" * 32).status_code == 404


@pytest.mark.parametrize("webhook", ["ftp://example.com/hook", "not a url", 17])
def test_a_bad_webhook_url_is_a_422_naming_the_field(server, blank_workflow, webhook):
    pushed = server.call("POST", "/v1/workflows", json={"name": "hook-target", "workflow": blank_workflow})
    assert pushed.status_code in (200, 201), pushed.text
    response = server.call("POST", "/v1/workflows/hook-target/runs", json={"inputs": {}, "webhook": webhook})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == "webhook" and "webhook" in error["message"]
