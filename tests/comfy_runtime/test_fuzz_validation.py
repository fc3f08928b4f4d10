"""Fuzzing: whatever JSON arrives as a workflow, reading and validating it ends in a clear refusal
(WorkflowFormatError / WorkflowInvalid with a message) or a verdict, never in another exception."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfygate.comfy_runtime import (
    NodeSchemas,
    WorkflowFormatError,
    WorkflowInvalid,
    create_registry,
    parse_workflow,
    validate_prompt,
)
from comfygate.comfy_runtime.validation import ValidationResult
from json_strategies import json_leaves, json_values

REGISTRY = create_registry()
NODE_IDS = [str(n) for n in range(1, 7)]
# Built-in node types and some of ComfyUI's, plus names no schema has.
CLASS_TYPES = [*REGISTRY.names(), "KSampler", "CheckpointLoaderSimple", "PreviewAny", "TripoConversionNode",
               "VAEDecode", "EmptyLatentImage", "NoSuchNode"]
INPUT_NAMES = sorted({name for ct in REGISTRY.names() for name in REGISTRY.schemas()[ct].inputs}
                     | {"model", "steps", "cfg", "sampler_name", "source", "samples", "vae", "ckpt_name"})

links = st.lists(st.sampled_from(NODE_IDS) | json_leaves, min_size=0, max_size=3).map(list) | st.tuples(
    st.sampled_from(NODE_IDS), st.integers(min_value=-2, max_value=4)).map(list)
input_values = links | json_leaves | st.fixed_dictionaries({"__value__": json_values})
any_nodes = st.fixed_dictionaries(
    {"class_type": st.sampled_from(CLASS_TYPES),
     "inputs": st.dictionaries(st.sampled_from(INPUT_NAMES) | st.text(max_size=6), input_values, max_size=6)},
    optional={"_meta": st.dictionaries(st.text(max_size=5), json_leaves, max_size=2)},
)


def plausible_nodes(class_type: str) -> st.SearchStrategy:
    """A node of a built-in type whose inputs are often present and often right, so validation goes deep."""
    def value(spec) -> st.SearchStrategy:
        right = st.sampled_from(spec.choices) if spec.choices else st.just(spec.options.get("default", 1))
        return right | links | input_values

    inputs = {name: value(spec) for name, spec in REGISTRY.schemas()[class_type].inputs.items()}
    some_inputs = st.fixed_dictionaries({}, optional=inputs)
    return st.fixed_dictionaries({"class_type": st.just(class_type), "inputs": some_inputs})


nodes = st.sampled_from(REGISTRY.names()).flatmap(plausible_nodes) | any_nodes
outputs = st.sampled_from(["SaveImage", "PreviewImage"]).flatmap(plausible_nodes)
# Mostly graphs with an output node "6" (else validation stops at prompt_no_outputs), sometimes anything.
prompts = st.builds(
    lambda others, output: {**others, "6": output},
    st.dictionaries(st.sampled_from(NODE_IDS[:-1]), nodes, max_size=5), outputs,
) | st.dictionaries(st.sampled_from(NODE_IDS), nodes | json_values, max_size=6)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def sources(reference):
    return [REGISTRY, NodeSchemas.from_object_info(reference, source="ComfyUI 0.3.64")]


def outcomes(document, sources) -> set[str]:
    """What happened to ``document`` against each source: "malformed", "invalid" or "valid".

    Any other exception escapes and fails the test; each error must carry a message and serialise as JSON.
    """
    try:
        prompt = parse_workflow(document)
    except WorkflowFormatError as exc:
        assert str(exc)
        return {"malformed"}
    seen = set()
    for source in sources:
        try:
            result = validate_prompt(prompt, source)
        except WorkflowInvalid as exc:
            assert exc.error["type"] and exc.error["message"]
            json.dumps(exc.to_dict())  # the error body is sent as it is
            seen.add("invalid")
            continue
        assert isinstance(result, ValidationResult) and result.outputs
        json.dumps(result.node_errors)
        seen.add("valid")
    return seen


OUTCOMES = {"malformed", "invalid", "valid"}


@FUZZ
@given(document=json_values)
def test_any_json_value(sources, document):
    assert outcomes(document, sources) <= OUTCOMES


@FUZZ
@given(document=prompts)
def test_prompt_shaped_documents(sources, document):
    assert outcomes(document, sources) <= OUTCOMES


@FUZZ
@given(document=prompts)
def test_prompt_shaped_documents_as_text(sources, document):
    assert outcomes(json.dumps(document), sources) <= OUTCOMES
