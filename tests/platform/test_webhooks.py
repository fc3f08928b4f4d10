"""Webhooks end to end: a real API server sends them to a real HTTP receiver on loopback, from the outbox
rows the worker (and a reviewer's decision) wrote."""

from __future__ import annotations

import asyncio
import base64
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
import requests
from aiohttp import web
from live_server import Server, running_server
from silent_listener import SilentListener

from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.models import WebhookDelivery, utcnow
from comfygate.platform.webhooks import HINT
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
    """An HTTP server on loopback that records every POST; paths under /fail answer 500, /redirect/<port>
    answers 302 to that port on loopback."""

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
        if request.path.startswith("/redirect/"):
            return web.Response(status=302, headers={
                "Location": f"http://127.0.0.1:{request.path.split('/')[2]}/followed"})
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
    # The receiver is on loopback, which webhooks may reach only when the operator allows it.
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, node_pack_dirs=(NODE_PACKS,),
                        webhook_secret=SECRET, webhook_max_attempts=2, webhook_timeout_seconds=5,
                        watchdog_seconds=60, heartbeat_seconds=0.2, webhook_allow=("127.0.0.1",))
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


def test_webhooks_list_needs_a_run_id_of_a_visible_run(server):
    # Who may see a run's deliveries is tested with the other rights in test_access.py.
    assert server.call("GET", "/v1/webhooks?run=" + "0" * 32, key="user").status_code == 404
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


def test_a_redirect_is_a_failed_try_and_is_never_followed(install, receiver):
    elsewhere = SilentListener()  # where the 302 points: another loopback port
    try:
        run_id = install.start_run("hooked", f"{receiver.url}/redirect/{elsewhere.port}")
        (hook,) = install.wait_deliveries(run_id, "failed")
        assert (hook["attempts"], hook["last_status"]) == (2, 302) and "302" in hook["last_error"]
        assert len(receiver.for_run(run_id)) == 2
        assert elsewhere.connections() == 0
    finally:
        elsewhere.close()


def test_url_credentials_reach_the_receiver_and_are_never_shown_back(install, receiver):
    hook_url = receiver.url.replace("http://", "http://hook-user:s3cret@") + "/ok"
    shown = receiver.url.replace("http://", "http://hook-user:***@") + "/ok"
    run_id = install.start_run("hooked", hook_url)
    receiver.wait_for(lambda got: any(r.json["run"]["id"] == run_id for r in got))
    (sent,) = receiver.for_run(run_id)
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(b"hook-user:s3cret").decode()
    assert sent.json["run"]["webhook"] == shown and b"s3cret" not in sent.body

    run = install.server.call("GET", f"/v1/runs/{run_id}")
    assert run.json()["webhook"] == shown and "s3cret" not in run.text
    (hook,) = install.wait_deliveries(run_id, "delivered")
    listing = install.server.call("GET", f"/v1/webhooks?run={run_id}")
    assert hook["url"] == shown and "s3cret" not in listing.text


def test_proxies_from_the_environment_are_not_used(install, receiver, monkeypatch):
    proxy = SilentListener()  # a proxy would connect for the sender, out of the address policy's sight
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    direct = requests.Session()
    direct.trust_env = False  # this test's own requests go straight to the server
    try:
        started = direct.post(f"{install.server.url}/v1/workflows/hooked/runs", timeout=30,
                              json={"inputs": {}, "webhook": f"{receiver.url}/direct"},
                              headers={"Authorization": f"Bearer {install.server.admin_key}"})
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        install.worker.process(run_id, 1)
        receiver.wait_for(lambda got: any(r.json["run"]["id"] == run_id for r in got))
        assert proxy.connections() == 0
    finally:
        direct.close()
        proxy.close()


@pytest.fixture
def public_only(tmp_path: Path) -> Iterator[tuple[Server, Any]]:
    """An API server that allows no internal webhook target, and a session factory on its database."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'comfygate.db'}",
                        node_pack_dirs=(NODE_PACKS,), webhook_max_attempts=1, watchdog_seconds=60)
    with running_server(settings) as server:
        engine = make_engine(settings.database_url)
        yield server, make_session_factory(engine)
        engine.dispose()


def test_a_target_that_turned_internal_after_submit_is_refused_at_delivery(public_only, receiver):
    # As if DNS had answered a public address at submit and the receiver's loopback address now: the rows
    # hold URLs this server's policy refuses, written as an address and as a name.
    server, sessions = public_only
    pushed = server.call("POST", "/v1/workflows", json={"name": "rebound", "workflow": SEEDED})
    assert pushed.status_code == 201, pushed.text
    started = server.call("POST", "/v1/workflows/rebound/runs", json={"inputs": {}})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    port = receiver.url.rsplit(":", 1)[1]
    urls = {"address": f"http://127.0.0.1:{port}/rebound", "name": f"http://localhost:{port}/rebound"}
    with session_scope(sessions) as session:
        for url in urls.values():
            session.add(WebhookDelivery(run_id=run_id, url=url, event="run.ended", state="pending", attempts=0,
                                        payload={"event": "run.ended", "run": {"id": run_id}},
                                        next_attempt_at=utcnow()))

    deadline = time.monotonic() + 30
    while True:
        items = server.call("GET", f"/v1/webhooks?run={run_id}").json()["items"]
        if len(items) == 2 and all(item["state"] == "failed" for item in items):
            break
        assert time.monotonic() < deadline, f"deliveries never all failed: {items}"
        time.sleep(0.05)
    errors = {item["url"]: (item["last_status"], item["last_error"]) for item in items}
    assert errors == {
        urls["address"]: (None, f"refused: 127.0.0.1 is a loopback address; {HINT}"),
        urls["name"]: (None, f"refused: localhost resolves to 127.0.0.1, a loopback address; {HINT}"),
    }
    assert receiver.for_run(run_id) == []
