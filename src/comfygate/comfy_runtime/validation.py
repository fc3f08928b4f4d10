"""Validation of an API-format prompt, with ComfyUI's verdicts and error shapes.

It follows ComfyUI's ``validate_prompt`` (0.3.64): every output node is validated with the nodes it needs,
walking links from the output; an output whose own node or any linked ancestor fails is dropped, and the
prompt is refused only when no output is left. Per node, as ComfyUI does:

- a required input that is missing: ``required_input_missing``; a list value is a link, and one that is not
  ``[node_id, slot]`` is a ``bad_linked_input``; a linked output type that does not match the input's:
  ``return_type_mismatch`` (type sets and "*" as in :func:`~.specs.types_match`);
- a link to a node that does not exist or to an output slot it does not have stops that node's validation
  with an exception error (``exception_during_validation`` on an output node, else
  ``exception_during_inner_validation``), which then replaces the node's other errors;
- a constant that the input's type cannot be converted to (:func:`~.specs.widget_value`):
  ``invalid_input_type``; then, unless the node's ``VALIDATE_INPUTS`` takes that input (or ``**kwargs``),
  ``value_smaller_than_min``, ``value_bigger_than_max`` and ``value_not_in_list``;
- ``VALIDATE_INPUTS`` is called with the constants, None for linked inputs, hidden values, and the linked
  types as ``input_types`` when it asks for them (and then no link type is checked); any answer other than
  True is a ``custom_validation_failed`` error for each argument it was given; if it raises, the node fails
  with the exception error above.

comfygate adds: a dependency cycle is a ``dependency_cycle`` error on each node of the cycle (ComfyUI finds
cycles only when it runs); file inputs (``image_upload`` and other upload COMBOs) are not checked against
their choices but their names are checked for safety, and their presence in ``input_dir`` when given; link
slots must be non-negative integers; FLOAT values must be finite. Errors name the input of the node itself
(ComfyUI names the consumer's input for inner exceptions) and carry the value received as it is in the
prompt, which is never changed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Collection, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnknownNodeTypes, WorkflowInvalid
from .graph import node_sort_key
from .paths import unsafe_name_reason
from .registry import NodeRegistry
from .requirements import missing_model_files
from .schemas import NodeSchema, NodeSchemas
from .specs import MAX_LISTED_CHOICES, InputSpec, jsonable, types_match, widget_value

__all__ = ["ValidationResult", "output_node_ids", "validate_prompt"]

HOOK_NAME = "VALIDATE_INPUTS"
INPUT_TYPES_ARGUMENT = "input_types"
# Hidden inputs that VALIDATE_INPUTS receives as None while a prompt is validated (nothing has run yet);
# PROMPT comes as an empty dict and UNIQUE_ID as the node's id. Other hidden types are not passed.
HIDDEN_NONE_AT_VALIDATION = frozenset({"DYNPROMPT", "EXTRA_PNGINFO", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"})

Error = dict[str, Any]


@dataclass(frozen=True)
class ValidationResult:
    """The verdict on a prompt that ComfyUI would accept: at least one output node validated.

    ``outputs`` are the output node ids that validated (in id order), ``node_errors`` ComfyUI's
    ``{node_id: {"errors", "dependent_outputs", "class_type"}}`` for the nodes that made other outputs fail.
    """

    outputs: tuple[str, ...]
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def raise_for_node_errors(self) -> None:
        """Refuse a partly valid prompt: WorkflowInvalid (``prompt_outputs_failed_validation``) when any
        output failed. ComfyUI would run the outputs that validated; a caller that must not drop one uses this."""
        if self.node_errors:
            raise _failed_validation(self.node_errors)


def _top_error(type_: str, message: str, details: str = "", extra_info: dict | None = None) -> Error:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def _failed_validation(node_errors: dict[str, dict[str, Any]]) -> WorkflowInvalid:
    lines = [
        f"node {node_id} ({entry['class_type']}): {error['message']}: {error['details']}"
        for node_id, entry in node_errors.items()
        for error in entry["errors"]
    ]
    top = _top_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines))
    return WorkflowInvalid(top, node_errors)


def _schemas_of(source: NodeRegistry | NodeSchemas) -> NodeSchemas:
    return source.schemas() if isinstance(source, NodeRegistry) else source


def output_node_ids(prompt: Mapping[str, Mapping[str, Any]], source: NodeRegistry | NodeSchemas) -> list[str]:
    """Ids of the nodes whose type is an output node (``OUTPUT_NODE``), in id order."""
    schemas = _schemas_of(source)
    ids = [
        node_id for node_id, node in prompt.items()
        if node["class_type"] in schemas and schemas[node["class_type"]].output_node
    ]
    return sorted(ids, key=node_sort_key)


def _check_shape(prompt: Any, schemas: NodeSchemas) -> None:
    """``invalid_prompt`` for a node without a class_type or inputs, or for node types the schemas lack.

    ComfyUI stops at the first unknown type; here every unknown type is listed in ``extra_info``, with the
    model files the known nodes name and the schemas lack.
    """
    if not isinstance(prompt, Mapping):
        raise WorkflowInvalid(_top_error(
            "invalid_prompt", "Cannot execute because the prompt is not an object mapping node ids to nodes."))
    missing: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        problem = None
        if not isinstance(node_id, str):
            problem = f"Cannot execute because node id {node_id!r} is not a string."
        elif not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            problem = "Cannot execute because a node is missing the class_type property."
        elif not isinstance(node.get("inputs"), Mapping):
            problem = "Cannot execute because a node is missing the inputs property."
        if problem is not None:
            if missing:
                break  # an unknown type came first: that is what ComfyUI reports
            raise WorkflowInvalid(_top_error("invalid_prompt", problem, f"Node ID '#{node_id}'"))
        if node["class_type"] not in schemas:
            missing.setdefault(node["class_type"], []).append(node_id)
    if missing:
        raise UnknownNodeTypes(missing, schemas.source, missing_model_files(prompt, schemas))


def _input_config(spec: InputSpec) -> list[Any]:
    """ComfyUI's ``input_config``: the input's declaration ``[type or choices, options]``."""
    declared_type = spec.raw[0] if spec.raw else spec.type
    return jsonable([declared_type, dict(spec.options)])


def _is_comfy_link(value: Any) -> bool:
    """ComfyUI's own test of a link when it gathers a node's inputs (a float slot passes it)."""
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], int | float)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


@dataclass
class _Hook:
    """A node class's VALIDATE_INPUTS and the arguments it takes (as ComfyUI reads them)."""

    function: Any
    arguments: list[str]
    takes_kwargs: bool
    inputs_are_lists: bool

    def takes(self, name: str) -> bool:
        return self.takes_kwargs or name in self.arguments

    @property
    def takes_anything(self) -> bool:
        return self.takes_kwargs or bool(self.arguments)


@dataclass
class _Follow:
    """A node's request to validate the node one of its inputs links to, before it goes on."""

    source: str
    input_name: str
    link: Any


class _Aborted(Exception):
    """A node's validation stopped on an exception; ComfyUI then reports only that for the node."""

    def __init__(self, input_name: str | None, details: str, exception_type: str, extra: dict[str, Any]):
        super().__init__(details)
        self.input_name = input_name
        self.details = details
        self.exception_type = exception_type
        self.extra = extra

    def error(self, inner: bool) -> Error:
        extra_info: dict[str, Any] = {}
        if self.input_name is not None:
            extra_info["input_name"] = self.input_name
        extra_info.update(self.extra)
        extra_info.update({"exception_message": self.details, "exception_type": self.exception_type})
        if inner:
            type_, message = "exception_during_inner_validation", "Exception when validating inner node"
        else:
            type_, message = "exception_during_validation", "Exception when validating node"
        return {"type": type_, "message": message, "details": self.details, "extra_info": extra_info}


def _resolve(value: Any) -> Any:
    """The result of an async VALIDATE_INPUTS, awaited on a loop of its own."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # Called from inside a running loop (an async caller): that loop cannot be re-entered.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def _full_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@dataclass
class _Frame:
    node_id: str
    steps: Generator[_Follow, bool | None, tuple[list[Error], bool]]
    following: _Follow | None = None


@dataclass
class _Verdict:
    ok: bool
    errors: list[Error]


class _PromptValidator:
    def __init__(
        self,
        prompt: Mapping[str, Mapping[str, Any]],
        schemas: NodeSchemas,
        registry: NodeRegistry | None,
        input_dir: Path | None,
        skip_file_check: Collection[tuple[str, str]],
    ) -> None:
        self.prompt = prompt
        self.schemas = schemas
        self.registry = registry
        self.input_dir = input_dir
        self.skip_file_check = skip_file_check
        self.verdicts: dict[str, _Verdict] = {}
        self.followed: dict[str, set[str]] = {}  # node -> nodes it validated through its links
        self.cycle_errors: dict[str, list[Error]] = {}

    # -- walking the graph ---------------------------------------------------------------------------

    def validate_output(self, output_id: str) -> bool:
        """Validate an output node and what it needs, depth first without recursion (graphs may be deep)."""
        if output_id in self.verdicts:
            return self.verdicts[output_id].ok
        stack = [_Frame(output_id, self._node_steps(output_id))]
        depth_of = {output_id: 0}  # nodes on the stack -> their position, to spot a cycle
        answer: bool | None = None
        while stack:
            frame = stack[-1]
            try:
                follow = frame.steps.send(answer)
            except StopIteration as finished:
                errors, linked_ok = finished.value
                errors = errors + self.cycle_errors.pop(frame.node_id, [])
                verdict = _Verdict(linked_ok and not errors, errors)
            except _Aborted as aborted:
                self.cycle_errors.pop(frame.node_id, None)
                verdict = _Verdict(False, [aborted.error(inner=len(stack) > 1)])
            else:
                frame.following = follow
                self.followed.setdefault(frame.node_id, set()).add(follow.source)
                if follow.source in self.verdicts:
                    answer = self.verdicts[follow.source].ok
                elif follow.source in depth_of:
                    self._add_cycle(stack[depth_of[follow.source]:])
                    answer = False
                else:
                    depth_of[follow.source] = len(stack)
                    stack.append(_Frame(follow.source, self._node_steps(follow.source)))
                    answer = None
                continue
            self.verdicts[frame.node_id] = verdict
            answer = verdict.ok
            del depth_of[frame.node_id]
            stack.pop()
        return self.verdicts[output_id].ok

    def _add_cycle(self, frames: list[_Frame]) -> None:
        cycle = [f.node_id for f in frames]
        path = " -> ".join([*cycle, cycle[0]])
        for frame in frames:
            assert frame.following is not None  # every frame on the cycle is waiting on a link
            name = frame.following.input_name
            pending = self.cycle_errors.setdefault(frame.node_id, [])
            if any(e["extra_info"]["input_name"] == name for e in pending):
                continue
            pending.append({
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": f"{name}: nodes {path} depend on each other",
                "extra_info": {"input_name": name, "received_value": frame.following.link, "cycle": cycle},
            })

    def reached_from(self, output_id: str) -> set[str]:
        reached, todo = set(), [output_id]
        while todo:
            node_id = todo.pop()
            if node_id not in reached:
                reached.add(node_id)
                todo.extend(self.followed.get(node_id, ()))
        return reached

    # -- one node ------------------------------------------------------------------------------------

    def _hook(self, class_type: str) -> _Hook | None:
        cls = self.registry.get(class_type) if self.registry is not None else None
        function = getattr(cls, HOOK_NAME, None)
        if function is None:
            return None
        try:
            spec = inspect.getfullargspec(function)
        except TypeError as exc:
            raise _Aborted(None, f"{HOOK_NAME} of {class_type} cannot be inspected: {exc}",
                           _full_type_name(exc), {}) from exc
        return _Hook(function, list(spec.args), spec.varkw is not None, bool(getattr(cls, "INPUT_IS_LIST", False)))

    def _linked_type(self, name: str, spec: InputSpec, link: list[Any]) -> str:
        """The type of the output ``link`` points at; _Aborted where ComfyUI's lookup would raise."""
        source_id, slot = link
        extra = {"input_config": _input_config(spec), "received_value": link, "linked_node": link}
        if not isinstance(source_id, str) or source_id not in self.prompt:
            exception_type = "KeyError" if isinstance(source_id, str | int | float | bool | None) else "TypeError"
            raise _Aborted(name, f"{name}: linked node {source_id!r} does not exist in the prompt",
                           exception_type, extra)
        source_type = self.prompt[source_id]["class_type"]
        outputs = self.schemas[source_type].outputs
        if not isinstance(slot, int) or isinstance(slot, bool):
            raise _Aborted(name, f"{name}: output slot {slot!r} of node {source_id!r} is not an integer",
                           "TypeError", extra)
        if not 0 <= slot < len(outputs):
            raise _Aborted(
                name,
                f"{name}: node {source_id!r} ({source_type}) has no output {slot}, it has {len(outputs)}",
                "IndexError", extra)
        return outputs[slot]

    def _file_errors(self, node_id: str, name: str, spec: InputSpec, value: Any) -> list[Error]:
        """Checks of an uploaded file's name; ComfyUI's LoadImage makes them in its VALIDATE_INPUTS."""
        def failed(reason: str) -> list[Error]:
            return [{
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"{name} - {reason}",
                "extra_info": {"input_name": name, "input_config": _input_config(spec), "received_value": value},
            }]

        if not isinstance(value, str):
            return failed(f"Invalid file name {value!r}: it must be a string")
        reason = unsafe_name_reason(value)
        if reason is not None:
            return failed(f"Invalid file name {value!r}: {reason}")
        if (
            self.input_dir is not None
            and (node_id, name) not in self.skip_file_check
            and not (self.input_dir / value).is_file()
        ):
            return failed(f"Invalid image file: {value}")
        return []

    def _constant_errors(self, name: str, spec: InputSpec, value: Any, converted: Any) -> list[Error]:
        """min / max / choices of a converted constant (skipped when VALIDATE_INPUTS owns the input)."""
        extra = {"input_name": name, "input_config": _input_config(spec), "received_value": value}
        minimum, maximum = spec.options.get("min"), spec.options.get("max")
        if _is_number(converted) and _is_number(minimum) and converted < minimum:
            return [{"type": "value_smaller_than_min", "message": f"Value {converted} smaller than min of {minimum}",
                     "details": name, "extra_info": extra}]
        if _is_number(converted) and _is_number(maximum) and converted > maximum:
            return [{"type": "value_bigger_than_max", "message": f"Value {converted} bigger than max of {maximum}",
                     "details": name, "extra_info": extra}]
        if spec.type == "COMBO" and converted not in spec.choices:
            if len(spec.choices) > MAX_LISTED_CHOICES:
                listed = f"(list of length {len(spec.choices)})"
                extra["input_config"] = None  # as ComfyUI: long lists (model files) are not echoed back
            else:
                listed = str(list(spec.choices))
            return [{"type": "value_not_in_list", "message": "Value not in list",
                     "details": f"{name}: '{converted}' not in {listed}", "extra_info": extra}]
        return []

    def _node_steps(self, node_id: str) -> Generator[_Follow, bool | None, tuple[list[Error], bool]]:
        """Validate one node. Yields a _Follow for each linked node to validate first and is sent whether
        it passed; returns (this node's errors, whether every followed link passed)."""
        node = self.prompt[node_id]
        schema: NodeSchema = self.schemas[node["class_type"]]
        inputs = node["inputs"]
        hook = self._hook(node["class_type"])
        takes_input_types = hook is not None and INPUT_TYPES_ARGUMENT in hook.arguments
        errors: list[Error] = []
        linked_ok = True
        received_types: dict[str, str] = {}
        hook_values: dict[str, Any] = {}  # constants as the node would get them

        for name, spec in schema.inputs.items():
            if name not in inputs:
                if spec.required:
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": name, "extra_info": {"input_name": name}})
                continue
            value = inputs[name]
            if isinstance(value, list | tuple):  # as in ComfyUI, any list is a link
                if len(value) != 2:
                    errors.append({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": name,
                        "extra_info": {"input_name": name, "input_config": _input_config(spec),
                                       "received_value": value},
                    })
                    continue
                received = self._linked_type(name, spec, list(value))
                received_types[name] = received
                if not takes_input_types and not types_match(received, spec.type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{name}, received_type({received}) mismatch input_type({spec.type})",
                        "extra_info": {"input_name": name, "input_config": _input_config(spec),
                                       "received_type": received, "linked_node": value, "received_value": value},
                    })
                    continue
                if not (yield _Follow(value[0], name, value)):
                    linked_ok = False
                continue
            if spec.file_upload:
                hook_values[name] = value
                errors.extend(self._file_errors(node_id, name, spec, value))
                continue
            try:
                converted = widget_value(spec.type, value)
            except (TypeError, ValueError, OverflowError) as exc:
                errors.append({
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {spec.type} value",
                    "details": f"{name}, {value}, {exc}",
                    "extra_info": {"input_name": name, "input_config": _input_config(spec),
                                   "received_value": value, "exception_message": str(exc)},
                })
                continue
            hook_values[name] = converted
            if hook is None or not hook.takes(name):
                errors.extend(self._constant_errors(name, spec, value, converted))

        if hook is not None and hook.takes_anything:
            errors.extend(self._hook_errors(node_id, schema, hook, hook_values, received_types))
        return errors, linked_ok

    def _hook_errors(
        self, node_id: str, schema: NodeSchema, hook: _Hook, hook_values: dict[str, Any],
        received_types: dict[str, str],
    ) -> list[Error]:
        inputs = self.prompt[node_id]["inputs"]
        given: dict[str, Any] = {}
        for name, value in inputs.items():  # prompt order, declared inputs only
            if name not in schema.inputs:
                continue
            spec = schema.inputs[name]
            if _is_comfy_link(value) and not spec.options.get("rawLink"):
                given[name] = None  # nothing has run yet: a linked input has no value
            else:
                given[name] = hook_values.get(name, value)
        for name, hidden_type in schema.hidden.items():
            if hidden_type == "UNIQUE_ID":
                given[name] = node_id
            elif hidden_type == "PROMPT":
                given[name] = {}
            elif hidden_type in HIDDEN_NONE_AT_VALIDATION:
                given[name] = None
        arguments = {name: value for name, value in given.items() if hook.takes(name)}
        if INPUT_TYPES_ARGUMENT in hook.arguments:
            arguments[INPUT_TYPES_ARGUMENT] = received_types
        call_with = {k: [v] for k, v in arguments.items()} if hook.inputs_are_lists else arguments
        try:
            verdict = _resolve(hook.function(**call_with))
        except Exception as exc:  # a failing hook fails its node, as in ComfyUI; the cause is reported
            raise _Aborted(None, str(exc) or repr(exc), _full_type_name(exc), {}) from exc
        if verdict is True:
            return []
        errors = []
        for name in arguments:
            details = name if verdict is False else f"{name} - {verdict}"
            extra_info: dict[str, Any] = {"input_name": name}
            if name in inputs:
                extra_info["received_value"] = inputs[name]
            errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                           "details": details, "extra_info": extra_info})
        return errors


def validate_prompt(
    prompt: Mapping[str, Mapping[str, Any]],
    source: NodeRegistry | NodeSchemas,
    *,
    input_dir: Path | None = None,
    skip_file_check: Collection[tuple[str, str]] = (),
    hooks: NodeRegistry | None = None,
) -> ValidationResult:
    """Validate ``prompt`` as ComfyUI's ``POST /prompt`` does, against a registry or bare node schemas.

    With a NodeRegistry, node classes' ``VALIDATE_INPUTS`` are honoured; schemas alone (another server's
    ``/object_info``) have none, unless ``hooks`` names a registry of the same nodes (workers running this
    package's nodes): then its classes' hooks run for the node types it has. Raises WorkflowInvalid where
    ComfyUI refuses the prompt: ``invalid_prompt`` (a malformed node, unknown node types), ``prompt_no_outputs``, and
    ``prompt_outputs_failed_validation`` when no output validates. When some do, the result lists them and
    the errors of the others (see :meth:`ValidationResult.raise_for_node_errors`).

    File names of upload inputs (LoadImage.image) are always checked for safety; their existence only when
    ``input_dir`` is given and ``(node_id, input_name)`` is not in ``skip_file_check``.
    """
    schemas = _schemas_of(source)
    _check_shape(prompt, schemas)
    outputs = output_node_ids(prompt, schemas)
    if not outputs:
        raise WorkflowInvalid(_top_error("prompt_no_outputs", "Prompt has no outputs"))

    registry = source if isinstance(source, NodeRegistry) else hooks
    validator = _PromptValidator(prompt, schemas, registry, input_dir, skip_file_check)
    good = [output_id for output_id in outputs if validator.validate_output(output_id)]
    failed = [output_id for output_id in outputs if output_id not in good]
    reached = {output_id: validator.reached_from(output_id) for output_id in failed}
    node_errors = {
        node_id: {
            "errors": verdict.errors,
            "dependent_outputs": [o for o in failed if node_id in reached[o]],
            "class_type": prompt[node_id]["class_type"],
        }
        for node_id, verdict in sorted(validator.verdicts.items(), key=lambda item: node_sort_key(item[0]))
        if verdict.errors
    }
    if not good:
        raise _failed_validation(node_errors)
    return ValidationResult(tuple(good), node_errors)
