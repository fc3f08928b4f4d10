"""Two projects with a user of each role and their keys, on a real API server (no worker): what the access
tests probe. Runs stay queued (no worker); a withheld output for the review queue is recorded as a worker
records it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from live_server import Server, running_server
from sqlalchemy import select

from comfygate.platform.access import members
from comfygate.platform.access.audit import CLI
from comfygate.platform.access.projects import create_project
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.models import RunOutput, RunStatus
from comfygate.platform.services import accounts
from comfygate.platform.services import runs as run_service
from comfygate.settings import Settings

__all__ = ["World", "access_world", "BLANK"]

BLANK = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "blank.json").read_text())
PASSWORD = "correct horse battery"

# user: (server admin, {project: role}); every user gets one key named after them (callers two).
USERS: dict[str, tuple[bool, dict[str, str]]] = {
    "root": (True, {}),
    "adm_a": (False, {"alpha": "admin"}),
    "dev_a": (False, {"alpha": "developer"}),
    "rev_a": (False, {"alpha": "reviewer"}),
    "call_a": (False, {"alpha": "caller"}),
    "dev_b": (False, {"beta": "developer"}),
    "rev_b": (False, {"beta": "reviewer"}),
}


@dataclass
class World:
    server: Server
    database_url: str
    keys: dict[str, str] = field(default_factory=dict)  # key name -> secret

    def call(self, method: str, path: str, key: str | None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return requests.request(method, self.server.url + path, headers=headers, timeout=30, **kwargs)

    def sessions(self) -> Any:
        return make_session_factory(make_engine(self.database_url))

    def add_key(self, name: str, user: str, scopes: dict[str, Any] | None = None, admin: bool = False) -> str:
        factory = self.sessions()
        with session_scope(factory) as session:
            owner = members.user_named(session, user)
            secret = accounts.issue_key(session, name, user_id=owner.id, scopes=scopes, is_admin=admin).secret
        factory.kw["bind"].dispose()
        self.keys[name] = secret
        return secret

    def start_run(self, key: str, workflow: str = "wa") -> str:
        response = self.call("POST", f"/v1/workflows/{workflow}/runs", key, json={"inputs": {}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def withhold_output(self, run_id: str) -> int:
        """The run ends with one output the gate withheld for review, as a worker records it."""
        factory = self.sessions()
        with session_scope(factory) as session:
            run_service.claim_run(session, run_id, 1, "w")
        output = run_service.OutputRecord(
            index=0, node_id="2", filename="b.png", storage_key=f"runs/{run_id}/0.png", content_type="image/png",
            width=8, height=8, size_bytes=1, decision="review",
            verdict={"decision": "review", "passed": False, "reasons": ["blank: uniform"], "reason_codes": ["blank"],
                     "scores": {"blank": 0.0}})
        with session_scope(factory) as session:
            assert run_service.finish_run(session, run_id, 1, [output], {}) in (RunStatus.HELD, RunStatus.REJECTED)
        with session_scope(factory) as session:
            output_id = session.scalars(select(RunOutput.id).where(RunOutput.run_id == run_id)).one()
        factory.kw["bind"].dispose()
        return output_id


@contextmanager
def access_world(settings: Settings) -> Iterator[World]:
    with running_server(settings) as server:
        world = World(server, settings.database_url)
        factory = world.sessions()
        with session_scope(factory) as session:
            for project in ("alpha", "beta"):
                create_project(session, project, CLI)
            for username, (admin, roles) in USERS.items():
                members.add_user(session, CLI, username, PASSWORD, admin=admin, projects=roles)
        factory.kw["bind"].dispose()
        for username, (admin, _) in USERS.items():
            world.add_key(username, username, admin=admin)
        world.add_key("call_a2", "call_a")
        for key, workflow, project in (("dev_a", "wa", "alpha"), ("dev_b", "wb", "beta")):
            response = world.call("POST", "/v1/workflows", key, json={"name": workflow, "workflow": BLANK,
                                                                         "project": project})
            assert response.status_code == 201, response.text
        yield world
