"""UI-format (editor-saved) workflows convert to the API prompt the ComfyUI editor would queue for them.

Whole-graph fixtures live in ui_workflows/; small cases are built inline. Node schemas are the built-in
ones (always present) or ComfyUI 0.3.64's reference object_info (skipped when absent).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfygate.comfy_runtime import create_registry
from comfygate.comfy_runtime.errors import ComfyRuntimeError, UnknownNodeTypes, WorkflowFormatError
from comfygate.comfy_runtime.schemas import NodeSchemas
from comfygate.comfy_runtime.ui_format import convert_ui_workflow, is_ui_workflow
from comfygate.comfy_runtime.ui_format.bypass import types_compatible

FIXTURES = Path(__file__).parent / "ui_workflows"
BLUR_SUBGRAPH = "9a0b7c1e-1111-4111-8111-000000000002"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def builtin() -> NodeSchemas:
    return create_registry().schemas()


@pytest.fixture(scope="module")
def comfy(reference: dict) -> NodeSchemas:
    return NodeSchemas.from_object_info(reference, source="ComfyUI 0.3.64 reference")


def node(node_id: int, node_type: str, values: Any = None, *, inputs=(), outputs=(), mode: int = 0, **extra) -> dict:
    return {"id": node_id, "type": node_type, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "widgets_values": values, **extra}


def slot(name: str, slot_type: str, link: int | None = None, *, widget: bool = False) -> dict:
    entry: dict[str, Any] = {"name": name, "type": slot_type, "link": link}
    if widget:
        entry["widget"] = {"name": name}
    return entry


def out(name: str, slot_type: str, links=()) -> dict:
    return {"name": name, "type": slot_type, "links": list(links)}


def workflow(*nodes: dict, links=(), subgraphs=None) -> dict:
    document: dict[str, Any] = {"nodes": list(nodes), "links": [list(link) for link in links], "version": 0.4}
    if subgraphs is not None:
        document["definitions"] = {"subgraphs": subgraphs}
    return document


# -- whole graphs ---------------------------------------------------------------------------------------


def test_default_sd15_graph_converts_to_the_well_known_api_prompt(comfy: NodeSchemas) -> None:
    # ComfyUI's default graph; the KSampler's "randomize" control value is the editor's, not an input.
    prompt = convert_ui_workflow(load("sd15_default"), comfy)
    assert prompt == {
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]},
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "6": {"class_type": "CLIPTextEncode",
              "inputs": {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
                         "clip": ["4", 1]},
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1},
              "_meta": {"title": "Empty Latent Image"}},
        "3": {"class_type": "KSampler",
              "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                         "negative": ["7", 0], "latent_image": ["5", 0]},
              "_meta": {"title": "KSampler"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
              "_meta": {"title": "VAE Decode"}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
              "_meta": {"title": "Save Image"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
              "_meta": {"title": "Load Checkpoint"}},
    }


def test_links_saved_as_objects_convert_like_links_saved_as_arrays(comfy: NodeSchemas) -> None:
    document = load("sd15_default")
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    as_objects = {**document, "links": [dict(zip(keys, link, strict=True)) for link in document["links"]]}
    assert convert_ui_workflow(as_objects, comfy) == convert_ui_workflow(document, comfy)


def test_notes_reroutes_and_primitives_disappear(builtin: NodeSchemas) -> None:
    prompt = convert_ui_workflow(load("virtual_nodes"), builtin)
    assert prompt == {
        # The primitive's 64 reaches every widget it is linked to.
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 16, "batch_size": 1, "color": 0},
              "_meta": {"title": "EmptyImage"}},
        # The image comes through two chained reroutes; height is linked from a reroute with nothing behind
        # it, so the widget keeps its own value.
        "2": {"class_type": "ImageScale",
              "inputs": {"upscale_method": "nearest-exact", "width": 64, "height": 48, "crop": "disabled",
                         "image": ["1", 0]},
              "_meta": {"title": "Scale to 64"}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "virtual", "images": ["2", 0]},
              "_meta": {"title": "Save Image"}},
    }


def test_a_primitive_behind_a_reroute_does_not_reach_the_widget(builtin: NodeSchemas) -> None:
    # The editor copies a primitive's value only into widgets it is linked to directly.
    document = workflow(
        node(1, "PrimitiveNode", [99, "fixed"], outputs=[out("INT", "INT", [1])]),
        node(2, "Reroute", inputs=[slot("", "*", 1)], outputs=[out("", "INT", [2])]),
        node(3, "EmptyImage", [8, 16, 1, 0], inputs=[slot("width", "INT", 2, widget=True)]),
        links=[(1, 1, 0, 2, 0, "INT"), (2, 2, 0, 3, 0, "INT")],
    )
    assert convert_ui_workflow(document, builtin)["3"]["inputs"]["width"] == 8


def test_muted_nodes_drop_out_and_bypassed_nodes_pass_their_input_through(builtin: NodeSchemas) -> None:
    prompt = convert_ui_workflow(load("muted_and_bypassed"), builtin)
    assert set(prompt) == {"1", "4", "6", "8", "9"}
    # Two bypassed nodes in a chain: the save reads the empty image directly.
    assert prompt["4"]["inputs"] == {"filename_prefix": "through bypass", "images": ["1", 0]}
    # Fed by a muted node: the input is left out, for validation to report as missing.
    assert prompt["6"]["inputs"] == {"filename_prefix": "after muted"}
    # A bypassed MaskToImage has no IMAGE input to pass on to an IMAGE consumer.
    assert prompt["9"]["inputs"] == {"filename_prefix": "no image input to pass"}


def test_bypass_forwards_the_input_of_the_matching_type(comfy: NodeSchemas) -> None:
    document = workflow(
        node(1, "CheckpointLoaderSimple", ["model.safetensors"],
             outputs=[out("MODEL", "MODEL", [1]), out("CLIP", "CLIP", [2]), out("VAE", "VAE", [])]),
        node(2, "LoraLoader", ["style.safetensors", 1, 1], mode=4,
             inputs=[slot("model", "MODEL", 1), slot("clip", "CLIP", 2)],
             outputs=[out("MODEL", "MODEL", [3]), out("CLIP", "CLIP", [4])]),
        node(3, "ModelSamplingDiscrete", ["eps", False], inputs=[slot("model", "MODEL", 3)],
             outputs=[out("MODEL", "MODEL")]),
        node(4, "CLIPTextEncode", ["a cat"], inputs=[slot("clip", "CLIP", 4)], outputs=[out("C", "CONDITIONING")]),
        links=[(1, 1, 0, 2, 0, "MODEL"), (2, 1, 1, 2, 1, "CLIP"), (3, 2, 0, 3, 0, "MODEL"), (4, 2, 1, 4, 0, "CLIP")],
    )
    prompt = convert_ui_workflow(document, comfy)
    assert "2" not in prompt
    assert prompt["3"]["inputs"]["model"] == ["1", 0]
    assert prompt["4"]["inputs"]["clip"] == ["1", 1]


def test_types_match_as_comma_separated_sets_with_a_wildcard() -> None:
    assert types_compatible("IMAGE", "IMAGE")
    assert types_compatible("IMAGE,MASK", "MASK")
    assert types_compatible("*", "LATENT") and types_compatible("LATENT", "")
    assert types_compatible("image", "IMAGE")
    assert not types_compatible("IMAGE", "MASK")
    assert not types_compatible("IMAGE,LATENT", "MASK,VAE")


# -- widgets --------------------------------------------------------------------------------------------


def test_upload_button_slot_is_skipped(builtin: NodeSchemas) -> None:
    document = workflow(node(1, "LoadImage", ["photo.png", "image"], outputs=[out("IMAGE", "IMAGE")]))
    assert convert_ui_workflow(document, builtin)["1"]["inputs"] == {"image": "photo.png"}


def test_control_after_generate_declared_by_the_schema_is_skipped(comfy: NodeSchemas) -> None:
    document = workflow(
        node(10, "PrimitiveInt", [640, "increment"], outputs=[out("INT", "INT", [1])]),
        node(11, "EmptyLatentImage", [512, 512, 1], inputs=[slot("width", "INT", 1, widget=True)],
             outputs=[out("LATENT", "LATENT")]),
        links=[(1, 10, 0, 11, 0, "INT")],
    )
    prompt = convert_ui_workflow(document, comfy)
    assert prompt["10"]["inputs"] == {"value": 640}
    # A widget turned into a linked input takes the link, not its saved 512.
    assert prompt["11"]["inputs"] == {"width": ["10", 0], "height": 512, "batch_size": 1}


def test_missing_widget_values_take_the_schema_defaults(builtin: NodeSchemas) -> None:
    document = workflow(
        node(1, "EmptyImage", [32]), node(2, "EmptyImage", None), node(3, "EmptyImage", [8, 8, 1, 0, "x"]))
    prompt = convert_ui_workflow(document, builtin)
    assert prompt["1"]["inputs"] == {"width": 32, "height": 512, "batch_size": 1, "color": 0}
    assert prompt["2"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1, "color": 0}
    # Values past the last widget (a newer node version, preview widgets) are not inputs here.
    assert prompt["3"]["inputs"] == {"width": 8, "height": 8, "batch_size": 1, "color": 0}


def test_widgets_values_saved_by_name_map_by_name(builtin: NodeSchemas) -> None:
    values = {"height": 24, "width": 32, "color": 255, "videopreview": {"hidden": False}}
    prompt = convert_ui_workflow(workflow(node(1, "EmptyImage", values)), builtin)
    assert prompt["1"]["inputs"] == {"width": 32, "height": 24, "batch_size": 1, "color": 255}


TEST_PACK = NodeSchemas.from_object_info({
    "TagPicker": {"input": {"required": {"tags": [["red", "green", "blue"], {"multiselect": True}]}},
                  "output": ["STRING"], "name": "TagPicker", "display_name": "Tag Picker"},
    "Greeter": {"input": {"required": {"name": ["STRING", {"forceInput": True}],
                                       "greeting": ["STRING", {"default": "hi"}]}},
                "input_order": {"required": ["name", "greeting"]},
                "output": ["STRING"], "name": "Greeter", "display_name": "Greeter"},
}, source="test pack")


def test_list_widget_values_travel_boxed_so_they_do_not_read_as_links() -> None:
    prompt = convert_ui_workflow(workflow(node(1, "TagPicker", [["red", "blue"]])), TEST_PACK)
    assert prompt["1"]["inputs"] == {"tags": {"__value__": ["red", "blue"]}}


def test_force_input_inputs_have_no_widget_but_older_saves_kept_a_slot_for_them() -> None:
    current = workflow(node(1, "Greeter", ["hello"], inputs=[slot("name", "STRING")]))
    older = workflow(node(1, "Greeter", ["", "hello"], inputs=[slot("name", "STRING")]))
    assert convert_ui_workflow(current, TEST_PACK)["1"]["inputs"] == {"greeting": "hello"}
    assert convert_ui_workflow(older, TEST_PACK)["1"]["inputs"] == {"greeting": "hello"}


# -- subgraphs ------------------------------------------------------------------------------------------


def test_subgraphs_flatten_with_outer_inner_ids_and_promoted_widget_values(builtin: NodeSchemas) -> None:
    prompt = convert_ui_workflow(load("subgraphs"), builtin)
    blur = {"class_type": "ImageBlur", "_meta": {"title": "ImageBlur"}}
    assert prompt == {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
              "_meta": {"title": "EmptyImage"}},
        # The instance's own value for its promoted widget (7) wins over the inner node's (3).
        "5:1": {**blur, "inputs": {"blur_radius": 7, "sigma": 0.5, "image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "a", "images": ["5:1", 0]},
              "_meta": {"title": "Save Image"}},
        # A newer editor keeps promoted values on the inner node (properties.proxyWidgets).
        "6:1": {**blur, "inputs": {"blur_radius": 3, "sigma": 0.5, "image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "b", "images": ["6:1", 0]},
              "_meta": {"title": "Save Image"}},
        # Nested: outer instance 7 holds inner instance 3, whose node 1 gets the outer promoted value.
        "7:3:1": {**blur, "inputs": {"blur_radius": 9, "sigma": 0.5, "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": "c", "images": ["7:3:1", 0]},
              "_meta": {"title": "Save Image"}},
    }


def test_nested_promoted_value_falls_back_to_the_inner_instance(builtin: NodeSchemas) -> None:
    document = load("subgraphs")
    del document["nodes"][5]["widgets_values"]  # outer instance 7 saved no value
    assert convert_ui_workflow(document, builtin)["7:3:1"]["inputs"]["blur_radius"] == 5


def test_primitive_linked_to_a_subgraph_input_sets_the_inner_widget(builtin: NodeSchemas) -> None:
    document = load("subgraphs")
    document["nodes"].append(node(8, "PrimitiveNode", [11, "fixed"], outputs=[
        {"name": "INT", "type": "INT", "widget": {"name": "blur_radius"}, "links": [7]}]))
    document["nodes"][1]["inputs"].append(slot("blur_radius", "INT", 7, widget=True))
    document["links"].append([7, 8, 0, 5, 1, "INT"])
    assert convert_ui_workflow(document, builtin)["5:1"]["inputs"]["blur_radius"] == 11


def test_muted_subgraph_instance_leaves_out_everything_inside(builtin: NodeSchemas) -> None:
    document = load("subgraphs")
    document["nodes"][1]["mode"] = 2
    prompt = convert_ui_workflow(document, builtin)
    assert "5:1" not in prompt
    assert prompt["2"]["inputs"] == {"filename_prefix": "a"}


def test_bypassed_subgraph_instance_passes_its_input_through(builtin: NodeSchemas) -> None:
    document = load("subgraphs")
    document["nodes"][1]["mode"] = 4
    prompt = convert_ui_workflow(document, builtin)
    assert "5:1" not in prompt
    assert prompt["2"]["inputs"]["images"] == ["1", 0]


# -- refusals -------------------------------------------------------------------------------------------


def test_unknown_node_types_are_all_listed_with_their_node_ids(builtin: NodeSchemas) -> None:
    inner = {"id": "sub-1", "name": "Inner", "inputs": [], "outputs": [], "links": [],
             "nodes": [node(2, "MagicNode", []), node(3, "Note", ["fine"])]}
    document = workflow(
        node(1, "EmptyImage", [8, 8, 1, 0]),
        node(3, "FancyUpscaler", []),
        node(4, "MagicNode", []),
        node(5, "sub-1", []),
        node(6, "MutedMystery", [], mode=2),
        node(7, "BypassedMystery", [], mode=4),
        node(8, "MarkdownNote", ["# fine"]),
        subgraphs=[inner],
    )
    with pytest.raises(UnknownNodeTypes) as caught:
        convert_ui_workflow(document, builtin)
    assert caught.value.missing == {"FancyUpscaler": ["3"], "MagicNode": ["4", "5:2"]}
    message = str(caught.value)
    assert all(part in message for part in ("FancyUpscaler", "MagicNode", "5:2"))


def test_a_node_whose_input_the_editor_captures_is_refused_by_name(comfy: NodeSchemas) -> None:
    saved = ["toy.glb", "upload3dmodel", "uploadExtraResources", "clear", "", 1024, 1024]
    document = workflow(node(13, "Load3D", saved))
    with pytest.raises(WorkflowFormatError, match=r"node 13 \(Load3D\): input 'image' \(LOAD_3D\) is captured"):
        convert_ui_workflow(document, comfy)


def _break(document: dict, change) -> dict:
    document = copy.deepcopy(document)
    change(document)
    return document


MALFORMED = {
    "node without a type": (lambda d: d["nodes"][1].pop("type"), ["node 5", "'type'"]),
    "widgets_values not a list": (lambda d: d["nodes"][0].update(widgets_values="8x8"),
                                  ["node 1 (EmptyImage)", "'widgets_values'"]),
    "input on a missing link": (lambda d: d["nodes"][2]["inputs"][0].update(link=99),
                                ["node 2 (SaveImage)", "input 'images'", "link 99"]),
    "link from a missing node": (lambda d: d["links"][0].__setitem__(1, 42), ["link 1", "node 42"]),
    "short link array": (lambda d: d["links"].append([9, 1, 0]), ["link", "origin_id"]),
    "node id twice": (lambda d: d["nodes"].append(node(1, "EmptyImage")), ["node id 1 is used twice"]),
    "nodes not a list": (lambda d: d.update(nodes={"1": {}}), ["'nodes' must be a list"]),
    "subgraph inside itself": (
        lambda d: d["definitions"]["subgraphs"][0]["nodes"].append(node(9, BLUR_SUBGRAPH, [])),
        ["contains an instance of itself"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_documents_are_refused_naming_the_node_and_field(case: str, builtin: NodeSchemas) -> None:
    change, fragments = MALFORMED[case]
    with pytest.raises(WorkflowFormatError) as caught:
        convert_ui_workflow(_break(load("subgraphs"), change), builtin)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_legacy_group_node_is_refused_with_a_way_out(builtin: NodeSchemas) -> None:
    document = workflow(node(4, "workflow>Upscale pair", []))
    document["extra"] = {"groupNodes": {"Upscale pair": {"nodes": [], "links": []}}}
    with pytest.raises(WorkflowFormatError, match=r"node 4 is a group node .* subgraphs"):
        convert_ui_workflow(document, builtin)


def test_a_reroute_loop_is_refused(builtin: NodeSchemas) -> None:
    document = workflow(
        node(1, "Reroute", inputs=[slot("", "*", 2)], outputs=[out("", "IMAGE", [1])]),
        node(2, "Reroute", inputs=[slot("", "*", 1)], outputs=[out("", "IMAGE", [2, 3])]),
        node(3, "SaveImage", ["loop"], inputs=[slot("images", "IMAGE", 3)]),
        links=[(1, 1, 0, 2, 0, "IMAGE"), (2, 2, 0, 1, 0, "IMAGE"), (3, 2, 0, 3, 0, "IMAGE")],
    )
    with pytest.raises(WorkflowFormatError, match="loop"):
        convert_ui_workflow(document, builtin)


def test_a_workflow_of_only_notes_is_refused(builtin: NodeSchemas) -> None:
    with pytest.raises(WorkflowFormatError, match="no node that runs"):
        convert_ui_workflow(workflow(node(1, "Note", ["hello"])), builtin)


@pytest.mark.parametrize(("document", "expected"), [
    ({"nodes": [], "links": []}, True),
    ({"nodes": [{"id": 1}], "definitions": {"subgraphs": [{"id": "s"}]}}, True),
    ({"nodes": []}, False),
    ({"1": {"class_type": "EmptyImage", "inputs": {}}}, False),
    ({"nodes": {"1": {}}, "links": []}, False),
    ([{"nodes": [], "links": []}], False),
    ("nodes", False),
    (None, False),
])
def test_ui_format_is_recognised_by_its_nodes_list_and_links(document: object, expected: bool) -> None:
    assert is_ui_workflow(document) is expected


# -- any document: a prompt or a clear refusal, never a crash ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 600) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12,
)
small_ids = st.integers(-20, 8)
fuzz_slots = st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["image", "images", "width", "blur_radius", ""]),
    "type": st.sampled_from(["IMAGE", "INT", "*", "MASK,IMAGE"]),
    "link": st.none() | small_ids,
}, optional={"widget": st.fixed_dictionaries({"name": st.sampled_from(["width", "blur_radius"])})}), max_size=3)
fuzz_nodes = st.lists(st.fixed_dictionaries({
    "id": small_ids,
    "type": st.sampled_from(["EmptyImage", "SaveImage", "ImageBlur", "Reroute", "PrimitiveNode", "Note", "sg", "Nope"]),
    "mode": st.sampled_from([0, 0, 2, 4]),
    "inputs": fuzz_slots,
    "outputs": st.lists(st.fixed_dictionaries({"name": st.just("o"), "type": st.sampled_from(["IMAGE", "INT", "*"]),
                                               "links": st.lists(small_ids, max_size=2)}), max_size=2),
    "widgets_values": json_values,
}), min_size=1, max_size=6)
fuzz_links = st.lists(st.tuples(small_ids, small_ids, st.integers(-1, 3), small_ids, st.integers(-1, 3),
                                st.sampled_from(["IMAGE", "INT", "*"])).map(list), max_size=8)
fuzz_io = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["image", "blur_radius"]),
                                          "type": st.sampled_from(["IMAGE", "INT"]),
                                          "linkIds": st.lists(small_ids, max_size=2)}), max_size=2)
fuzz_documents = st.fixed_dictionaries({
    "nodes": fuzz_nodes,
    "links": fuzz_links,
    "definitions": st.fixed_dictionaries({"subgraphs": st.lists(st.fixed_dictionaries({
        "id": st.just("sg"), "name": st.just("fuzz"), "nodes": fuzz_nodes, "inputs": fuzz_io, "outputs": fuzz_io,
        "links": fuzz_links.map(lambda links: [dict(zip(
            ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link, strict=True))
            for link in links]),
    }), max_size=1)}),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=fuzz_documents | json_values)
def test_any_document_converts_or_is_refused_with_a_runtime_error(document: Any) -> None:
    schemas = create_registry().schemas()
    try:
        prompt = convert_ui_workflow(document, schemas)
    except ComfyRuntimeError as exc:
        assert str(exc)
        return
    assert prompt and all(isinstance(node_id, str) for node_id in prompt)
    assert all(entry["class_type"] in schemas for entry in prompt.values())
