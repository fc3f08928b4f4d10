"""ModelPaths: ComfyUI's model folders, extra_model_paths.yaml, cached listing and safe name resolution."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from comfygate.comfy_runtime.diffusion import model_paths as mp
from comfygate.comfy_runtime.diffusion.errors import ModelFileNotFound, ModelLoadError
from comfygate.comfy_runtime.diffusion.model_paths import ModelPaths, read_extra_model_paths

OLD = 1_600_000_000  # a 2020 timestamp: directories this old count as settled, so listings are cached


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def age_dirs(root: Path) -> None:
    """Set every directory's mtime into the past, as on a models folder nobody touched for a while."""
    for directory, _subdirs, _files in os.walk(root):
        os.utime(directory, (OLD, OLD))


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    touch(root / "checkpoints" / "sd15.safetensors")
    touch(root / "checkpoints" / "xl" / "base.ckpt")
    touch(root / "checkpoints" / "xl" / "deeper" / "refiner.sft")
    touch(root / "checkpoints" / "notes.txt")
    touch(root / "checkpoints" / "Upper.SAFETENSORS")
    touch(root / "checkpoints" / ".git" / "hidden.safetensors")
    touch(root / "loras" / "style.safetensors")
    touch(root / "unet" / "u1.safetensors")
    touch(root / "diffusion_models" / "u2.safetensors")
    touch(root / "clip" / "clip_l.safetensors")
    touch(root / "upscale_models" / "4x.pth")
    return root


# -- folders and listing -----------------------------------------------------------------------------------------


def test_default_folders_follow_comfyui_including_legacy_names(models: Path) -> None:
    paths = ModelPaths(models)
    assert paths.folders("checkpoints") == [models / "checkpoints"]
    assert paths.folders("unet") == paths.folders("diffusion_models") == [models / "unet", models / "diffusion_models"]
    assert paths.folders("clip") == [models / "text_encoders", models / "clip"]
    with pytest.raises(ValueError, match="unknown model folder kind 'checkpoint'.*checkpoints"):
        paths.folders("checkpoint")


def test_list_files_includes_subfolders_and_only_model_extensions(models: Path) -> None:
    paths = ModelPaths(models)
    assert paths.list_files("checkpoints") == [
        "Upper.SAFETENSORS",
        "sd15.safetensors",
        "xl/base.ckpt",
        "xl/deeper/refiner.sft",
    ]
    assert paths.list_files("unet") == ["u1.safetensors", "u2.safetensors"]
    assert paths.list_files("text_encoders") == ["clip_l.safetensors"]
    assert paths.list_files("vae") == []  # folder does not exist


def test_same_name_in_two_folders_is_listed_once_and_first_folder_wins(models: Path) -> None:
    touch(models / "diffusion_models" / "u1.safetensors", b"second")
    paths = ModelPaths(models)
    assert paths.list_files("diffusion_models") == ["u1.safetensors", "u2.safetensors"]
    assert paths.resolve("diffusion_models", "u1.safetensors") == models / "unet" / "u1.safetensors"


def test_listing_is_cached_until_a_folder_changes(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    age_dirs(models)
    scans: list[Path] = []
    real_scan = mp._scan
    monkeypatch.setattr(mp, "_scan", lambda folder: scans.append(folder) or real_scan(folder))
    paths = ModelPaths(models)
    first = paths.list_files("checkpoints")
    assert scans == [models / "checkpoints"]
    assert paths.list_files("checkpoints") == first
    assert scans == [models / "checkpoints"]  # nothing changed: no rescan

    touch(models / "checkpoints" / "xl" / "deeper" / "new.safetensors")  # changes only a sub-subfolder's mtime
    assert "xl/deeper/new.safetensors" in paths.list_files("checkpoints")
    assert len(scans) == 2


def test_a_file_added_right_after_a_listing_is_seen(models: Path) -> None:
    """Directory mtimes tick coarsely: a listing of a just-changed folder must not be trusted by mtime alone."""
    folder = models / "loras"
    paths = ModelPaths(models)
    assert paths.list_files("loras") == ["style.safetensors"]
    tick = os.stat(folder)
    touch(folder / "second.safetensors")
    os.utime(folder, ns=(tick.st_atime_ns, tick.st_mtime_ns))  # the add landed in the same mtime tick
    assert paths.list_files("loras") == ["second.safetensors", "style.safetensors"]


def test_folder_created_later_is_listed(models: Path) -> None:
    paths = ModelPaths(models)
    assert paths.list_files("vae") == []
    touch(models / "vae" / "kl.safetensors")
    assert paths.list_files("vae") == ["kl.safetensors"]


def test_signature_changes_when_a_file_is_added_or_removed(models: Path) -> None:
    age_dirs(models)
    paths = ModelPaths(models)
    sig = paths.signature()
    assert hash(sig) == hash(paths.signature())
    assert paths.signature() == sig
    added = touch(models / "loras" / "new.safetensors")
    with_new = paths.signature()
    assert with_new != sig
    assert paths.signature(["checkpoints"]) == ModelPaths(models).signature(["checkpoints"])
    added.unlink()
    assert paths.signature() == sig


def test_symlink_loop_does_not_hang_listing(models: Path) -> None:
    (models / "loras" / "loop").symlink_to(models / "loras", target_is_directory=True)
    assert ModelPaths(models).list_files("loras") == ["style.safetensors"]


# -- resolve -----------------------------------------------------------------------------------------------------


def test_resolve_finds_files_in_subfolders_and_accepts_windows_separators(models: Path) -> None:
    paths = ModelPaths(models)
    target = models / "checkpoints" / "xl" / "base.ckpt"
    assert paths.resolve("checkpoints", "xl/base.ckpt") == target
    assert paths.resolve("checkpoints", "xl\\base.ckpt") == target


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../loras/style.safetensors", "'..'"),
        ("xl/../../loras/style.safetensors", "'..'"),
        ("..\\loras\\style.safetensors", "'..'"),
        ("/etc/passwd.safetensors", "absolute"),
        ("C:/models/x.safetensors", "absolute"),
        ("", "empty"),
        ("notes.txt", "extension"),
    ],
)
def test_resolve_refuses_unsafe_names(models: Path, name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"checkpoints model name .* is not allowed: .*{reason}"):
        ModelPaths(models).resolve("checkpoints", name)


def test_resolve_missing_file_names_kind_name_and_folders(tmp_path: Path, models: Path) -> None:
    extra = tmp_path / "elsewhere"
    paths = ModelPaths(models)
    paths.add_folder("checkpoints", extra)
    with pytest.raises(ModelFileNotFound) as info:
        paths.resolve("checkpoints", "missing.safetensors")
    message = str(info.value)
    assert "checkpoints" in message and "'missing.safetensors'" in message
    assert str(models / "checkpoints") in message and str(extra) in message
    assert isinstance(info.value, ModelLoadError)


def test_resolve_follows_a_symlinked_model_file(tmp_path: Path, models: Path) -> None:
    """Admins link big files in from other disks; the link is theirs, only the user's name is checked."""
    outside = touch(tmp_path / "disk2" / "big.safetensors")
    (models / "checkpoints" / "big.safetensors").symlink_to(outside)
    paths = ModelPaths(models)
    assert "big.safetensors" in paths.list_files("checkpoints")
    assert paths.resolve("checkpoints", "big.safetensors").resolve() == outside


# -- extra_model_paths.yaml --------------------------------------------------------------------------------------


def test_extra_yaml_multi_line_paths_base_path_and_default_order(tmp_path: Path, models: Path) -> None:
    webui = tmp_path / "webui"
    touch(webui / "models" / "Lora" / "a.safetensors")
    touch(webui / "models" / "LyCORIS" / "sub" / "b.safetensors")
    touch(webui / "models" / "Stable-diffusion" / "sd15.safetensors", b"webui copy")
    shared = tmp_path / "shared"
    config = write_yaml(tmp_path / "extra_model_paths.yaml", f"""
        a1111:
            base_path: {webui}
            checkpoints: models/Stable-diffusion
            loras: |
                models/Lora
                models/LyCORIS
        central:
            base_path: {shared}
            is_default: true
            checkpoints: ckpts/
            unet: unets
            clip: text
        empty_section:
    """)
    paths = ModelPaths(models, extra_config=config)
    assert paths.folders("loras") == [models / "loras", webui / "models" / "Lora", webui / "models" / "LyCORIS"]
    # is_default puts its folders first; the others are appended after the models dir.
    assert paths.folders("checkpoints") == [shared / "ckpts", models / "checkpoints", webui / "models/Stable-diffusion"]
    assert paths.folders("diffusion_models")[0] == shared / "unets"
    assert paths.folders("text_encoders")[0] == shared / "text"
    assert paths.list_files("loras") == ["a.safetensors", "style.safetensors", "sub/b.safetensors"]
    # models dir comes before the appended webui folder
    assert paths.resolve("checkpoints", "sd15.safetensors") == models / "checkpoints" / "sd15.safetensors"


def test_extra_yaml_relative_paths_home_and_env_expansion(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MODEL_ROOT", str(tmp_path / "env-root"))
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    config = write_yaml(config_dir / "extra.yaml", """
        no_base:
            vae: vaes
            loras: /abs/loras
        rel_base:
            base_path: ../installs/comfy
            upscale_models: models/upscale_models
        home_base:
            base_path: ~/comfy
            embeddings: models/embeddings
        env_base:
            base_path: $MODEL_ROOT
            controlnet: cn
    """)
    paths = ModelPaths(models, extra_config=config)
    assert paths.folders("vae")[-1] == config_dir / "vaes"
    assert paths.folders("loras")[-1] == Path("/abs/loras")
    assert paths.folders("upscale_models")[-1] == tmp_path / "installs" / "comfy" / "models" / "upscale_models"
    assert paths.folders("embeddings")[-1] == home / "comfy" / "models" / "embeddings"
    assert paths.folders("controlnet")[-1] == tmp_path / "env-root" / "cn"


def test_extra_yaml_default_moves_an_already_known_folder_to_the_front(tmp_path: Path, models: Path) -> None:
    config = write_yaml(tmp_path / "extra.yaml", f"""
        comfy:
            base_path: {models}
            is_default: true
            checkpoints: other
            diffusion_models: diffusion_models
    """)
    paths = ModelPaths(models, extra_config=config)
    assert paths.folders("unet") == [models / "diffusion_models", models / "unet"]
    assert paths.folders("checkpoints") == [models / "other", models / "checkpoints"]


def test_read_extra_model_paths_reports_sections_and_kinds(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "extra.yaml", """
        one:
            unet: |
                a

                b
    """)
    found = read_extra_model_paths(config)
    assert [(e.kind, e.path, e.is_default, e.section) for e in found] == [
        ("diffusion_models", tmp_path / "a", False, "one"),
        ("diffusion_models", tmp_path / "b", False, "one"),
    ]
    assert read_extra_model_paths(write_yaml(tmp_path / "empty.yaml", "# nothing yet\n")) == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "must be a mapping of sections"),
        ("a1111: models/x\n", "section 'a1111' must be a mapping"),
        ("a1111:\n    loras: 3\n", r"a1111\.loras must be a path or a multi-line string"),
        ("a1111:\n    loras: {x: 1}\n", r"a1111\.loras must be a path"),
        ("a1111:\n    base_path: 5\n    loras: x\n", r"a1111\.base_path must be a non-empty path"),
        ("a1111:\n    is_default: 'yes'\n    loras: x\n", r"a1111\.is_default must be true or false"),
        ("a1111: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_extra_yaml_names_file_and_key(tmp_path: Path, models: Path, text: str, match: str) -> None:
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        ModelPaths(models, extra_config=config)
    assert str(config) in str(info.value)


def test_missing_extra_yaml_is_an_error(tmp_path: Path, models: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=f"{missing} cannot be read"):
        ModelPaths(models, extra_config=missing)


def test_yaml_list_of_paths_is_accepted(tmp_path: Path, models: Path) -> None:
    config = write_yaml(tmp_path / "extra.yaml", """
        s:
            base_path: /base
            loras: [one, two]
    """)
    assert ModelPaths(models, extra_config=config).folders("loras")[-2:] == [Path("/base/one"), Path("/base/two")]


def test_model_paths_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, comfygate.comfy_runtime.diffusion.model_paths; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
