"""The migrations build exactly the schema the models describe, and upgrade a database made by an older release."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from comfygate.platform.db import make_engine
from comfygate.platform.migrate import upgrade
from comfygate.platform.models import Base
from comfygate.sentinel import Policy


def test_migrations_match_the_models(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], "models changed without a migration: add one under migrations/versions/"


def test_versions_uploaded_before_0002_read_as_api_format(database_url):
    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO workflows (name, created_at) VALUES ('old', '2026-01-01')"))
            connection.execute(sa.text(
                "INSERT INTO workflow_versions (workflow_id, number, content_hash, graph, input_schema, policy,"
                " created_at) SELECT id, 1, 'h', '{}', '{}', '{}', '2026-01-01' FROM workflows"))
        upgrade(database_url)
        with engine.connect() as connection:
            row = connection.execute(sa.text("SELECT source_format, source FROM workflow_versions")).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("api", None)


V1_POLICY = {
    "checks": {"decode": {"enabled": True, "action": "reject"}, "finite": {"enabled": True, "action": "flag"},
               "blank": {"enabled": True, "action": "reject", "threshold": 0.05},
               "noise": {"enabled": False, "action": "reject", "threshold": 0.2},
               "clip_alignment": {"enabled": True, "action": "flag", "threshold": 0.3}},
    "prompt_input": "text",
}


def insert_version_at_0002(engine: sa.Engine, policy: dict) -> None:
    """A workflow with one version, as the code of revision 0002 stored it."""
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO workflows (name, created_at) VALUES ('old', '2026-01-01')"))
        connection.execute(sa.text(
            "INSERT INTO workflow_versions (workflow_id, number, content_hash, graph, input_schema, policy,"
            " created_at, source_format) SELECT id, 1, 'h', '{}', '{}', :policy, '2026-01-01', 'api' "
            "FROM workflows"), {"policy": json.dumps(policy)})


def test_policies_stored_before_0003_are_converted_to_bands(database_url):
    upgrade(database_url, "0002")
    engine = make_engine(database_url)
    try:
        insert_version_at_0002(engine, V1_POLICY)
        upgrade(database_url)
        with engine.connect() as connection:
            row = connection.execute(sa.text(
                "SELECT policy, policy_revision, content_hash FROM workflow_versions")).one()
    finally:
        engine.dispose()
    policy = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    assert policy == {
        "checks": {"decode": "reject", "finite": "review", "blank": {"reject": 0.05}, "noise": "off",
                   "clip_alignment": {"review": 0.3}},
        "prompt_input": "text",
    }
    assert Policy.from_dict(policy).check("clip_alignment").on  # a valid v2 policy
    assert (row[1], row[2]) == (1, "h")  # first revision; the upload's hash is kept


def test_downgrading_0003_gives_the_older_code_policies_and_statuses_it_reads(database_url):
    from alembic import command

    from comfygate.platform.migrate import _config

    upgrade(database_url, "0002")
    engine = make_engine(database_url)
    try:
        insert_version_at_0002(engine, V1_POLICY)
        upgrade(database_url, "0004")  # the rows below are in that schema
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE workflow_versions SET policy = :policy"), {"policy": json.dumps(
                {"checks": {"blank": {"review": {"percentile": 10, "fallback": 0.07}}, "aesthetic": {"review": 5}},
                 "retries": 2})})
            connection.execute(sa.text(
                "INSERT INTO runs (id, version_id, status, inputs, prompt, attempt, queued_at, cancel_requested)"
                " SELECT 'r1', id, 'held', '{}', '{}', 1, '2026-01-01', false FROM workflow_versions"))
        command.downgrade(_config(database_url), "0002")
        with engine.connect() as connection:
            policy = connection.execute(sa.text("SELECT policy FROM workflow_versions")).scalar_one()
            status = connection.execute(sa.text("SELECT status FROM runs")).scalar_one()
    finally:
        engine.dispose()
    policy = json.loads(policy) if isinstance(policy, str) else policy
    # v1 knows neither percentiles, the new checks nor retries: the fallback number, v1's checks only.
    assert policy == {"checks": {"blank": {"enabled": True, "action": "flag", "threshold": 0.07}},
                      "prompt_input": "prompt"}
    assert status == "rejected"


def test_upgrading_0004_puts_everything_in_the_default_project_and_keeps_what_keys_could_do(database_url):
    upgrade(database_url, "0004")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            for name, admin in (("boss", True), ("ann", False)):
                connection.execute(sa.text(
                    "INSERT INTO users (username, password_hash, is_admin, created_at) "
                    "VALUES (:name, 'h', :admin, '2026-01-01')"), {"name": name, "admin": admin})
            for name, admin in (("ops", True), ("ci", False)):
                connection.execute(sa.text(
                    "INSERT INTO api_keys (name, prefix, secret_hash, is_admin, created_at) "
                    "VALUES (:name, :name, 'h', :admin, '2026-01-01')"), {"name": name, "admin": admin})
        insert_version_at_0002(engine, {"checks": {}})
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO runs (id, version_id, status, inputs, prompt, attempt, queued_at, cancel_requested)"
                " SELECT 'r1', id, 'queued', '{}', '{}', 1, '2026-01-01', false FROM workflow_versions"))
        upgrade(database_url)
        with engine.connect() as connection:
            default = connection.execute(sa.text("SELECT id FROM projects WHERE name = 'default'")).scalar_one()
            roles = dict(connection.execute(sa.text(
                "SELECT u.username, m.role FROM memberships m JOIN users u ON u.id = m.user_id "
                "WHERE m.project_id = :p"), {"p": default}).all())
            keys = {name: (owner, scopes) for name, owner, scopes in connection.execute(sa.text(
                "SELECT k.name, u.username, k.scopes FROM api_keys k JOIN users u ON u.id = k.user_id")).all()}
            projects = {connection.execute(sa.text(f"SELECT project_id FROM {table}")).scalar_one()
                        for table in ("workflows", "runs")}
    finally:
        engine.dispose()
    assert roles == {"boss": "admin", "ann": "developer"}
    scopes = {name: json.loads(s) if isinstance(s, str) else s for name, (_, s) in keys.items()}
    assert {name: owner for name, (owner, _) in keys.items()} == {"ops": "boss", "ci": "boss"}
    assert scopes == {"ops": None, "ci": {"projects": None, "workflows": None, "actions": ["run", "read", "publish"]}}
    assert projects == {default}
