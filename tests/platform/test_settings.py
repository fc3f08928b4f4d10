import dataclasses
from pathlib import Path

import pytest

from comfygate.settings import SETTINGS, Settings, SettingsError


def test_every_setting_is_documented_with_an_environment_variable():
    documented = {spec.name for spec in SETTINGS}
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == documented, f"undocumented: {fields - documented}, stale docs: {documented - fields}"
    for spec in SETTINGS:
        assert spec.env.startswith("COMFYGATE_") and len(spec.help) > 20, spec


def test_embedded_default_is_derived_from_the_data_dir(tmp_path):
    settings = Settings.from_env({"COMFYGATE_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/comfygate.db"
    assert settings.broker_url == "filesystem://"
    assert settings.storage_url == (tmp_path / "files").as_uri()
    assert settings.embedded_worker is True
    assert settings.port == 8288


def test_production_settings_come_from_the_environment(tmp_path):
    settings = Settings.from_env({
        "COMFYGATE_DATA_DIR": str(tmp_path),
        "COMFYGATE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1/x",
        "COMFYGATE_BROKER_URL": "redis://127.0.0.1:6379/0",
        "COMFYGATE_STORAGE_URL": "s3://bucket/prefix",
        "COMFYGATE_PORT": "9000",
        "COMFYGATE_NODE_PACK_DIRS": "/opt/comfy/custom_nodes, packs,,",
    })
    assert settings.embedded_worker is False
    assert settings.port == 9000
    assert settings.node_pack_dirs == (Path("/opt/comfy/custom_nodes"), Path.cwd() / "packs")
    assert settings.queue_name == "pool.default"


@pytest.mark.parametrize(("env", "value"), [("COMFYGATE_PORT", "eighty"), ("COMFYGATE_EMBEDDED_WORKER", "maybe")])
def test_a_bad_value_names_the_variable(env, value):
    with pytest.raises(SettingsError, match=env):
        Settings.from_env({env: value})
