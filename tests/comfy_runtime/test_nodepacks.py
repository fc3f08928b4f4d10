"""Node packs in ComfyUI's custom-node format, loaded from folders: the good ones register, the broken ones
are reported (which pack, where, why) and skipped."""

import asyncio
import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from comfygate.comfy_runtime import NodePackError, RunContext, create_registry, execute

from .conftest import run_node, save_prompt

NODE_PACKS = Path(__file__).resolve().parents[1] / "nodepacks"


def write_packs(folder: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return folder


def classic_node(class_name: str, return_type: str = "STRING") -> str:
    return f"""
    class {class_name}:
        RETURN_TYPES = ("{return_type}",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {{"required": {{"text": ("STRING", {{"default": ""}})}}}}

        def run(self, text):
            return (text,)
    """


BROKEN = {
    "syntax_error.py": "def broken(:\n    pass\n",
    "raises_at_import.py": "import os\n\nraise RuntimeError('no GPU driver found')\n",
    "exits_at_import.py": "import sys\n\nsys.exit(3)\n",
    "clashes.py": classic_node("Clash") + 'NODE_CLASS_MAPPINGS = {"ClashNew": Clash, "EmptyImage": Clash}\n',
    "malformed.py": "class NoFunction:\n    RETURN_TYPES = ()\n\n    @classmethod\n    def INPUT_TYPES(cls):\n"
                    "        return {}\n\n\nNODE_CLASS_MAPPINGS = {'NoFunction': NoFunction}\n",
    "no_mappings.py": "HELPER = 1\n",
    "needs_comfy/__init__.py": """
        from comfy_api.latest import ComfyExtension, io


        class Brighten(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="Brighten", inputs=[io.Image.Input("image")], outputs=[io.Image.Output()])


        class Extension(ComfyExtension):
            async def get_node_list(self):
                return [Brighten]


        async def comfy_entrypoint():
            return Extension()
        """,
    "schema_nodes.py": classic_node("Fine") + """
    class SchemaStyle:
        @classmethod
        def define_schema(cls):
            return None


    class Extension:
        def get_node_list(self):
            return [Fine, SchemaStyle]


    def comfy_entrypoint():
        return Extension()
    """,
    "entrypoint_fails.py": """
    class Extension:
        async def get_node_list(self):
            raise ValueError("model folder missing")


    def comfy_entrypoint():
        return Extension()
    """,
    "not_a_package/helpers.py": "X = 1\n",
    "good.py": classic_node("GoodNode") + 'NODE_CLASS_MAPPINGS = {"GoodNode": GoodNode}\n',
    # Skipped without a report, as ComfyUI skips them: not .py, disabled, caches; and hidden entries.
    "README.md": "# not a pack\n",
    "old.disabled/__init__.py": "raise RuntimeError('disabled packs are never imported')\n",
    "__pycache__/stale.py": "raise RuntimeError('caches are never imported')\n",
    ".git/__init__.py": "raise RuntimeError('hidden folders are never imported')\n",
}


@pytest.fixture(scope="module")
def shipped():
    return create_registry([NODE_PACKS])


def reports_by_name(registry):
    return {report.name: report for report in registry.pack_reports}


def test_the_shipped_test_packs_load_in_every_form(shipped):
    reports = reports_by_name(shipped)
    assert [r.name for r in shipped.pack_reports] == [
        "builtin", "caption_nodes", "entrypoint_nodes", "seeded_nodes", "slow_nodes", "text_tools"]
    assert all(r.loaded and not r.error for r in shipped.pack_reports), shipped.pack_reports
    assert reports["text_tools"].node_types == ("TextShout", "TextSplitLines", "TextJoinLines")
    assert reports["text_tools"].path == str(NODE_PACKS / "text_tools")
    assert reports["entrypoint_nodes"].node_types == ("ImageBrightness", "TextLength")
    assert reports["slow_nodes"].path == str(NODE_PACKS / "slow_nodes.py")


def test_package_pack_uses_its_relative_imports(shipped):
    # TextShout calls a helper the package imports from its sibling module.
    assert run_node(shipped, "TextShout", text="quiet") == ("QUIET!",)
    info = shipped.object_info("TextShout")
    assert (info["display_name"], info["python_module"], info["category"]) == (
        "Shout text", "custom_nodes.text_tools", "tests/text")


def test_list_nodes_load_and_object_info_reports_output_is_list(shipped):
    assert shipped.object_info("TextSplitLines")["output_is_list"] == [True]
    assert shipped.object_info("TextShout")["output_is_list"] == [False]
    assert shipped.schemas()["TextSplitLines"].output_is_list == (True,)
    assert "TextJoinLines" in shipped


def test_entrypoint_pack_nodes_run_in_a_workflow(shipped, tmp_path):
    assert run_node(shipped, "TextLength", text="four") == (4,)
    prompt = save_prompt(images_link=("5", 0), color=0xFFFFFF)
    prompt["5"] = {"class_type": "ImageBrightness", "inputs": {"image": ["1", 0], "factor": 0.5}}
    result = execute(prompt, shipped, RunContext(input_dir=tmp_path))
    assert result.outputs[0].pixels.max() == pytest.approx(0.5)


def test_loading_edits_no_import_path_and_same_named_packs_do_not_clash(tmp_path):
    first = write_packs(tmp_path / "first", {
        "json.py": classic_node("FromFirst") + 'NODE_CLASS_MAPPINGS = {"FromFirst": FromFirst}\n'})
    second = write_packs(tmp_path / "second", {
        "json.py": classic_node("FromSecond") + 'NODE_CLASS_MAPPINGS = {"FromSecond": FromSecond}\n'})
    path_before = list(sys.path)
    registry = create_registry([first, second])
    assert sys.path == path_before
    assert {"FromFirst", "FromSecond"} <= set(registry.names())
    assert json.dumps({"a": 1}) == '{"a": 1}'  # a pack named json shadows nothing
    assert [r.path for r in registry.pack_reports[1:]] == [str(first / "json.py"), str(second / "json.py")]


def test_broken_packs_are_reported_and_skipped_while_good_ones_load(tmp_path, caplog):
    broken = write_packs(tmp_path / "custom_nodes", BROKEN)
    with caplog.at_level(logging.WARNING):
        registry = create_registry([broken, NODE_PACKS])
    reports = reports_by_name(registry)

    assert set(reports) == {
        "builtin", "syntax_error", "raises_at_import", "exits_at_import", "clashes", "malformed", "no_mappings",
        "needs_comfy", "schema_nodes", "entrypoint_fails", "not_a_package", "good",
        "caption_nodes", "entrypoint_nodes", "seeded_nodes", "slow_nodes", "text_tools"}
    loaded = {name for name, report in reports.items() if report.loaded}
    assert loaded == {"builtin", "good", "caption_nodes", "entrypoint_nodes", "seeded_nodes", "slow_nodes",
                      "text_tools"}
    assert {"GoodNode", "TextShout", "ImageBrightness", "SlowPassImage"} <= set(registry.names())

    errors = {name: report.error for name, report in reports.items() if not report.loaded}
    assert "SyntaxError" in errors["syntax_error"] and "line 1" in errors["syntax_error"]
    assert "RuntimeError: no GPU driver found" in errors["raises_at_import"]
    assert f"{broken / 'raises_at_import.py'}:3" in errors["raises_at_import"]
    assert "SystemExit: 3" in errors["exits_at_import"]
    assert errors["clashes"] == "class_type 'EmptyImage' is already registered by 'builtin'"
    assert "FUNCTION must name a method" in errors["malformed"]
    assert "neither NODE_CLASS_MAPPINGS nor comfy_entrypoint()" in errors["no_mappings"]
    assert "comfy_api" in errors["needs_comfy"] and "comfygate does not provide" in errors["needs_comfy"]
    assert "'SchemaStyle' is a schema-based node" in errors["schema_nodes"]
    assert "ValueError: model folder missing" in errors["entrypoint_fails"]
    assert "no __init__.py" in errors["not_a_package"]
    assert reports["raises_at_import"].path == str(broken / "raises_at_import.py")

    # Nothing of a skipped pack is half-registered: not the clash's other node, not the entry point's classic one.
    assert "ClashNew" not in registry and "Fine" not in registry and "NoFunction" not in registry
    imported_from_broken = {Path(m.__file__).name for m in list(sys.modules.values())
                            if str(broken) in str(getattr(m, "__file__", None) or "")}
    assert imported_from_broken == {"good.py"}
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in errors:
        assert f"node pack {name!r}" in warned, name


def test_a_class_type_clash_between_two_packs_skips_the_later_pack(tmp_path):
    first = write_packs(tmp_path / "a", {"first.py": classic_node("Twin") + 'NODE_CLASS_MAPPINGS = {"Twin": Twin}\n'})
    second = write_packs(tmp_path / "b", {"second.py": classic_node("Twin") + classic_node("Other")
                                          + 'NODE_CLASS_MAPPINGS = {"Twin": Twin, "Other": Other}\n'})
    registry = create_registry([first, second])
    later = reports_by_name(registry)["second"]
    assert not later.loaded and "'Twin' is already registered by 'custom_nodes.first'" in later.error
    assert registry.object_info("Twin")["python_module"] == "custom_nodes.first" and "Other" not in registry


def test_sync_entrypoint_loads_even_inside_a_running_event_loop(tmp_path):
    packs = write_packs(tmp_path / "packs", {"sync_entry.py": classic_node("SyncNode") + """
    class Extension:
        def get_node_list(self):
            return [SyncNode]


    def comfy_entrypoint():
        return Extension()
    """})

    async def build_like_the_web_server_does():
        return create_registry([packs, NODE_PACKS])

    registry = asyncio.run(build_like_the_web_server_does())
    assert {"SyncNode", "ImageBrightness"} <= set(registry.names())


def test_a_missing_folder_is_a_configuration_error(tmp_path):
    with pytest.raises(NodePackError, match="no-such-folder.*does not exist"):
        create_registry([tmp_path / "no-such-folder"])
