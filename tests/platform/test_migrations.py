"""The migrations build exactly the schema the models describe, and upgrade a database made by an older release."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from comfygate.platform.db import make_engine
from comfygate.platform.migrate import upgrade
from comfygate.platform.models import Base


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
