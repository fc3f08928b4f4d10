"""Workflows and their immutable, content-addressed versions."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import (
    ComfyRuntimeError,
    ExposedInput,
    LoadedWorkflow,
    NodeRegistry,
    WorkflowFormatError,
    WorkflowInvalid,
    expose_inputs,
    input_schema,
    load_valid_workflow,
)
from comfygate.platform.errors import NotFound, Unprocessable
from comfygate.platform.models import Workflow, WorkflowVersion, utcnow
from comfygate.sentinel import Policy, PolicyInvalid

__all__ = ["Analysed", "PushResult", "analyse", "push_version", "get_version", "list_workflows", "exposed_inputs_of",
           "version_summary", "get_policy", "update_policy", "policy_to_dict", "WORKFLOW_NAME", "RaceLost"]

WORKFLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class RaceLost(Exception):
    """A concurrent push took the version number; retrying the push resolves it."""


@dataclass(frozen=True)
class PushResult:
    version: WorkflowVersion
    created: bool


def _content_hash(graph: Mapping[str, Any], inputs_spec: Any, policy: Mapping[str, Any]) -> str:
    canonical = json.dumps({"workflow": graph, "inputs": inputs_spec, "policy": policy},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not WORKFLOW_NAME.match(name):
        raise Unprocessable(
            "workflow name must be 1-128 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            details={"field": "name", "value": name if isinstance(name, str) else None},
        )
    return name


def _check_inputs_spec(spec: Any) -> dict[str, dict[str, str]] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise Unprocessable("'inputs' must be an object mapping API input names to {node, input}",
                            details={"field": "inputs"})
    for api_name, target in spec.items():
        if not isinstance(target, dict) or set(target) != {"node", "input"} or not all(
            isinstance(v, str) for v in target.values()
        ):
            raise Unprocessable(
                f"inputs.{api_name} must be {{\"node\": \"<node id>\", \"input\": \"<input name>\"}}",
                details={"field": f"inputs.{api_name}"},
            )
    return spec


@dataclass(frozen=True)
class Analysed:
    workflow: LoadedWorkflow
    inputs_spec: dict[str, Any] | None
    exposed: list[ExposedInput]
    policy: dict[str, Any]


def analyse(registry: NodeRegistry, workflow: Any, inputs_spec: Any, policy: Any) -> Analysed:
    """Read (converting UI format), validate and expose an upload's inputs; Unprocessable says what is wrong."""
    spec = _check_inputs_spec(inputs_spec)
    try:
        # Validate before exposing inputs, so a broken graph gets the validator's node_errors.
        loaded = load_valid_workflow(workflow, registry)
        exposed = expose_inputs(loaded.prompt, registry, spec)
    except WorkflowFormatError as exc:
        raise Unprocessable(f"workflow: {exc}", details={"field": "workflow"}) from exc
    except WorkflowInvalid as exc:
        error = exc.error  # ComfyUI's message is generic; its details say where (node ids, inputs)
        message = f"{error['message'].rstrip('.')}: {error['details']}" if error["details"] else error["message"]
        raise Unprocessable(message, details=exc.to_dict()) from exc
    except ComfyRuntimeError as exc:
        raise Unprocessable(str(exc), details={"field": "workflow"}) from exc
    normalised_policy = _normalised_policy(policy, {e.name for e in exposed}, unchecked=None)
    return Analysed(loaded, spec, exposed, normalised_policy)


def _normalised_policy(raw: Any, exposed_names: set[str], unchecked: str | None) -> dict[str, Any]:
    """The policy's full normalised form; Unprocessable names the key path (``policy.checks.blank.reject``).

    ``unchecked``: a prompt_input accepted as it is (the one already stored, so that saving the stored policy
    back unchanged works even when it is the default name that no input has).
    """
    try:
        normalised = Policy.from_dict(raw).to_dict()
    except PolicyInvalid as exc:
        field = f"policy.{exc.path}" if exc.path else "policy"
        raise Unprocessable(f"policy: {exc}", details={"field": field}) from exc
    # Only a prompt_input the uploader named must exist; the default one simply finds no text to check.
    prompt_input = raw.get("prompt_input") if isinstance(raw, dict) else None
    if prompt_input is not None and prompt_input != unchecked and prompt_input not in exposed_names:
        raise Unprocessable(f"policy.prompt_input names {prompt_input!r}, which is not an exposed input; "
                            f"exposed inputs: {sorted(exposed_names)}", details={"field": "policy.prompt_input"})
    return normalised


def _schema_for(exposed: list[ExposedInput]) -> dict[str, Any]:
    # An exported LoadImage names a file on the exporter's disk, not one we hold: image inputs are required.
    schema = input_schema(exposed)
    images = {e.name for e in exposed if e.kind == "image"}
    if images:
        schema["required"] = sorted(set(schema.get("required", [])) | images)
    return schema


def push_version(session: Session, registry: NodeRegistry, *, name: Any, workflow: Any,
                 inputs_spec: Any = None, policy: Any = None) -> PushResult:
    name = _check_name(name)
    upload = analyse(registry, workflow, inputs_spec, policy)
    graph = upload.workflow.prompt
    digest = _content_hash(graph, upload.inputs_spec, upload.policy)

    wf = session.scalars(select(Workflow).where(Workflow.name == name)).one_or_none()
    if wf is None:
        wf = Workflow(name=name)
        session.add(wf)
        try:
            session.flush()
        except IntegrityError as exc:  # another upload created the name at the same moment
            raise RaceLost(name) from exc
    existing = session.scalars(
        select(WorkflowVersion).where(WorkflowVersion.workflow_id == wf.id,
                                      WorkflowVersion.content_hash == digest)
    ).one_or_none()
    if existing is not None:
        return PushResult(existing, created=False)

    number = (session.scalar(select(func.max(WorkflowVersion.number))
                             .where(WorkflowVersion.workflow_id == wf.id)) or 0) + 1
    version = WorkflowVersion(workflow=wf, number=number, content_hash=digest, graph=graph,
                              source_format=upload.workflow.source_format, source=upload.workflow.document,
                              inputs_spec=upload.inputs_spec, input_schema=_schema_for(upload.exposed),
                              policy=upload.policy)
    session.add(version)
    try:
        session.flush()
    except IntegrityError as exc:
        # Two uploads raced for the same number; the caller retries the whole unit of work.
        raise RaceLost(name) from exc
    return PushResult(version, created=True)


def get_version(session: Session, name: str, number: int | None = None) -> WorkflowVersion:
    wf = session.scalars(select(Workflow).where(Workflow.name == name)).one_or_none()
    if wf is None:
        raise NotFound(f"no workflow named {name!r}")
    query = select(WorkflowVersion).where(WorkflowVersion.workflow_id == wf.id)
    if number is None:
        query = query.order_by(WorkflowVersion.number.desc()).limit(1)
    else:
        query = query.where(WorkflowVersion.number == number)
    version = session.scalars(query).first()
    if version is None:
        raise NotFound(f"workflow {name!r} has no version {number}" if number else
                       f"workflow {name!r} has no versions")
    return version


def list_workflows(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Workflow.name, func.max(WorkflowVersion.number), func.min(Workflow.created_at))
        .join(WorkflowVersion).group_by(Workflow.name).order_by(Workflow.name)
    ).all()
    return [{"workflow": n, "latest_version": v, "url": f"/v1/workflows/{n}"} for n, v, _ in rows]


def exposed_inputs_of(registry: NodeRegistry, version: WorkflowVersion) -> list[ExposedInput]:
    return expose_inputs(version.graph, registry, version.inputs_spec)


def version_summary(version: WorkflowVersion) -> dict[str, Any]:
    name = version.workflow.name
    return {
        "workflow": name,
        "version": version.number,
        "run_url": f"/v1/workflows/{name}/versions/{version.number}/runs",
        "input_schema": version.input_schema,
        "policy": version.policy,
        "policy_revision": version.policy_revision,
        "policy_url": f"/v1/workflows/{name}/versions/{version.number}/policy",
        "source_format": version.source_format,
        "created_at": version.created_at.isoformat() + "Z",
    }


def policy_to_dict(version: WorkflowVersion) -> dict[str, Any]:
    updated = version.policy_updated_at
    return {"workflow": version.workflow.name, "version": version.number, "policy": version.policy,
            "revision": version.policy_revision, "updated_at": updated.isoformat() + "Z" if updated else None}


def get_policy(session: Session, name: str, number: int) -> dict[str, Any]:
    return policy_to_dict(get_version(session, name, number))


def update_policy(session: Session, name: str, number: int, raw_policy: Any) -> WorkflowVersion:
    """Replace a version's policy (validated like an upload's) and bump its revision.

    The graph stays immutable and the content hash keeps identifying what was uploaded; runs record the
    policy revision they were gated with.
    """
    version = get_version(session, name, number)
    # The exposed inputs are the input schema's properties: no registry is needed to know their names.
    normalised = _normalised_policy(raw_policy, set(version.input_schema.get("properties", {})),
                                    unchecked=version.policy.get("prompt_input"))
    # One UPDATE, so two admins saving at once get two distinct revisions rather than one lost increment.
    session.execute(update(WorkflowVersion).where(WorkflowVersion.id == version.id).values(
        policy=normalised, policy_revision=WorkflowVersion.policy_revision + 1, policy_updated_at=utcnow()))
    session.refresh(version)
    return version
