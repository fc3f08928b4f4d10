"""Apply the Alembic migrations programmatically (``comfygate db upgrade``, and test fixtures)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = ["upgrade", "is_up_to_date", "migrations_dir"]


def migrations_dir() -> Path:
    # A wheel carries them inside the package; an editable checkout has them at the repository root.
    package_root = Path(__file__).resolve().parent.parent
    for candidate in (package_root / "migrations", package_root.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("comfygate's migrations folder is missing from this installation")


def _config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would choke on '%' in a password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(_config(database_url), revision)


def is_up_to_date(engine: Engine) -> bool:
    heads = set(ScriptDirectory.from_config(_config(str(engine.url))).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == heads
