"""``comfygate projects|users|keys`` as an operator runs them, against a SQLite data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from comfygate.platform.access.build import access_for_key
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.models import ApiKey, AuditEntry
from comfygate.platform.services import accounts


class Operator:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "COMFYGATE_DATA_DIR": str(data_dir)}
        self.env.pop("COMFYGATE_DATABASE_URL", None)

    def run(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "comfygate", *args], env=self.env, cwd=self.data_dir,
                              input=stdin, capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) == ok, done.stdout + done.stderr
        return done

    def sessions(self):  # type: ignore[no-untyped-def]
        return make_session_factory(make_engine(f"sqlite:///{self.data_dir / 'comfygate.db'}"))


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    op = Operator(tmp_path)
    op.run("db", "upgrade")
    return op


def test_projects_users_and_roles(operator: Operator):
    operator.run("projects", "create", "alpha")
    assert "Alpha" in operator.run("projects", "create", "Alpha", ok=False).stderr
    assert operator.run("projects", "list").stdout.split() == ["alpha", "default"]
    made = operator.run("users", "create", "ann", "--project", "alpha", "--role", "developer").stdout
    password = made.strip().splitlines()[-1]
    assert "shown only now" in made and len(password) >= 12
    operator.run("users", "create", "bob", "--admin", "--password-stdin", stdin="a long password\n")
    with session_scope(operator.sessions()) as session:
        assert accounts.login(session, "bob", "a long password") is not None
        assert accounts.login(session, "ann", password) is not None
    operator.run("users", "set-role", "bob", "--project", "alpha", "--role", "reviewer")
    listed = operator.run("users", "list").stdout
    assert 'ann  admin=False  projects={"alpha": "developer"}' in listed
    assert 'bob  admin=True  projects={"alpha": "reviewer"}' in listed
    operator.run("users", "remove-role", "bob", "--project", "alpha")
    assert "no role" in operator.run("users", "remove-role", "bob", "--project", "alpha", ok=False).stderr
    assert "one --role" in operator.run("users", "create", "cy", "--project", "alpha", ok=False).stderr
    with session_scope(operator.sessions()) as session:
        actions = [(e.actor, e.action, e.address) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert {a for _, a, _ in actions} >= {"project.create", "user.create", "membership.set", "membership.remove"}
    changes = {(actor, address) for actor, action, address in actions if not action.startswith("login.")}
    assert changes == {("cli", None)}


def test_keys_create_list_and_revoke(operator: Operator):
    # As scripts use it before any account exists: the secret is the last line.
    plain = operator.run("keys", "create", "script").stdout.strip().splitlines()[-1]
    admin = operator.run("keys", "create", "ops", "--admin").stdout.strip().splitlines()[-1]
    assert plain.startswith("cg_") and admin.startswith("cg_")
    operator.run("projects", "create", "alpha")
    operator.run("users", "create", "ann", "--project", "alpha", "--role", "caller")
    scoped = operator.run("keys", "create", "ann-ci", "--user", "ann", "--project", "alpha", "--actions", "run",
                          "--limit", "runs_per_minute=30").stdout.strip().splitlines()[-1]
    wider = operator.run("keys", "create", "x", "--user", "ann", "--actions", "publish", ok=False)
    assert "scopes.actions" in wider.stderr
    assert "limits.runs_per_day" in operator.run("keys", "create", "x", "--user", "ann", "--limit",
                                                 "runs_per_day=-1", ok=False).stderr
    with session_scope(operator.sessions()) as session:
        rows = {k.name: k for k in session.scalars(select(ApiKey))}
        assert rows["script"].scopes == {"projects": None, "workflows": None, "actions": ["run", "read", "publish"]}
        assert rows["ops"].scopes is None and rows["ops"].is_admin
        assert rows["ann-ci"].limits == {"runs_per_minute": 30}
        ann = access_for_key(session, rows["ann-ci"])
        assert {ann.name_of(p): sorted(a) for p, a in ann.projects.items()} == {"alpha": ["run"]}
    listing = operator.run("keys", "list").stdout
    assert "ann-ci" in listing and scoped.split("_", 2)[2] not in listing
    operator.run("keys", "revoke", scoped)
    assert "revoked" in operator.run("keys", "list").stdout
    assert "no API key" in operator.run("keys", "revoke", "ffffffffffff", ok=False).stderr
    with session_scope(operator.sessions()) as session:
        assert accounts.authenticate_key(session, scoped) is None
        audit = [(e.action, e.actor) for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(["key.create", "key.revoke"])).order_by(AuditEntry.id))]
    assert audit == [("key.create", "cli")] * 3 + [("key.revoke", "cli")]
    details = json.dumps(audit)
    assert scoped not in details
