"""Workflows and their immutable, content-addressed versions."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import (
    ComfyRuntimeError,
    ExposedInput,
    LoadedWorkflow,
    MissingModelFiles,
    NodeRegistry,
    NodeSchemas,
    UnknownNodeTypes,
    WorkflowFormatError,
    WorkflowInvalid,
    expose_inputs,
    input_schema,
    load_valid_workflow,
)
from comfygate.platform.access.projects import default_project
from comfygate.platform.errors import NotFound, Unprocessable
from comfygate.platform.models import Project, Workflow, WorkflowVersion, utcnow
from comfygate.platform.pools import DEFAULT_POOL, PoolSchemas, check_pool_name, schemas_for_pool
from comfygate.platform.services.run_limits import DEFAULT_RUN_LIMITS, RunLimits, check_run_limits, limited_schema
from comfygate.sentinel import Policy, PolicyInvalid

__all__ = ["Analysed", "PushResult", "analyse", "push_version", "get_version", "list_workflows", "exposed_inputs_of",
           "version_summary", "get_policy", "update_policy", "policy_to_dict", "WORKFLOW_NAME", "RaceLost",
           "DEFAULT_TIMEOUT_SECONDS", "MAX_TIMEOUT_SECONDS"]

WORKFLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
# Names of exposed inputs in an `inputs` spec: they become JSON keys, form field names and messages. ':' lets a
# spec reuse the default names of nodes inside subgraphs ("5:3.width").
EXPOSED_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
DEFAULT_TIMEOUT_SECONDS = 600.0
MAX_TIMEOUT_SECONDS = 86400


class RaceLost(Exception):
    """A concurrent push took the version number; retrying the push resolves it."""


@dataclass(frozen=True)
class PushResult:
    version: WorkflowVersion
    created: bool
    checked_against: dict[str, Any]  # the pool's schemas, or this server's while the pool has not reported


def _content_hash(graph: Mapping[str, Any], inputs_spec: Any, policy: Mapping[str, Any], pool: str,
                  timeout_seconds: float) -> str:
    content: dict[str, Any] = {"workflow": graph, "inputs": inputs_spec, "policy": policy}
    # Only when not the defaults, so versions stored before pools and timeouts keep their hashes.
    if pool != DEFAULT_POOL:
        content["pool"] = pool
    if timeout_seconds != DEFAULT_TIMEOUT_SECONDS:
        content["timeout_seconds"] = timeout_seconds
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not WORKFLOW_NAME.match(name):
        raise Unprocessable(
            "workflow name must be 1-128 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            details={"field": "name", "value": name if isinstance(name, str) else None},
        )
    return name


def _check_timeout(value: Any) -> float:
    # bool is an int to Python, not a number of seconds; NaN fails the range test like any other bad value.
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= MAX_TIMEOUT_SECONDS:
        raise Unprocessable(f"timeout_seconds must be a number of seconds from 1 to {MAX_TIMEOUT_SECONDS}, "
                            f"got {str(value)[:100]!r}", details={"field": "timeout_seconds"})
    return float(value)


def _check_inputs_spec(spec: Any) -> dict[str, dict[str, str]] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise Unprocessable("'inputs' must be an object mapping API input names to {node, input}",
                            details={"field": "inputs"})
    for api_name, target in spec.items():
        if not EXPOSED_NAME.fullmatch(api_name):
            shown = api_name if len(api_name) <= 64 else api_name[:64] + "..."
            raise Unprocessable(
                f"inputs.{shown}: an exposed input name must be 1-64 characters of letters, digits, '_', '-', "
                f"'.' and ':', got {len(api_name)} characters", details={"field": f"inputs.{shown}"})
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


def _lacking(exc: UnknownNodeTypes | MissingModelFiles, checked: PoolSchemas) -> Unprocessable:
    """The refusal of a workflow that needs what the pool lacks: every missing node type with its node ids,
    and every model file its loaders do not list, with node, class type and input."""
    types = ([{"class_type": t, "nodes": ids} for t, ids in sorted(exc.missing.items())]
             if isinstance(exc, UnknownNodeTypes) else [])
    files = exc.missing_models
    parts = []
    if types:
        parts.append("node types " + ", ".join(f"{t['class_type']} (node {', '.join(t['nodes'])})" for t in types))
    if files:
        parts.append("model files " + ", ".join(f"{m['value']} (node {m['node']}, {m['class_type']}.{m['input']})"
                                                for m in files))
    where = f"pool {checked.pool!r}" if checked.reported else "this API server (the pool has not reported)"
    return Unprocessable(f"workflow needs what {where} lacks: {'; '.join(parts)}",
                         details={**exc.to_dict(), "missing": {"node_types": types, "model_files": files},
                                  "checked_against": checked.checked_against()})


def analyse(checked: PoolSchemas, workflow: Any, inputs_spec: Any, policy: Any) -> Analysed:
    """Read (converting UI format with the pool's schemas), validate and expose an upload's inputs;
    Unprocessable says what is wrong, and what the workflow was checked against."""
    spec = _check_inputs_spec(inputs_spec)
    against = {"checked_against": checked.checked_against()}
    try:
        # Validate before exposing inputs, so a broken graph gets the validator's node_errors.
        loaded = load_valid_workflow(workflow, checked.schemas, hooks=checked.hooks)
        exposed = expose_inputs(loaded.prompt, checked.schemas, spec)
    except WorkflowFormatError as exc:
        raise Unprocessable(f"workflow: {exc}", details={"field": "workflow", **against}) from exc
    except (UnknownNodeTypes, MissingModelFiles) as exc:
        raise _lacking(exc, checked) from exc
    except WorkflowInvalid as exc:
        error = exc.error  # ComfyUI's message is generic; its details say where (node ids, inputs)
        message = f"{error['message'].rstrip('.')}: {error['details']}" if error["details"] else error["message"]
        raise Unprocessable(message, details={**exc.to_dict(), **against}) from exc
    except ComfyRuntimeError as exc:
        raise Unprocessable(str(exc), details={"field": "workflow", **against}) from exc
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
                 inputs_spec: Any = None, policy: Any = None, pool: Any = None, timeout_seconds: Any = None,
                 default_pool: str = DEFAULT_POOL, project_id: int | None = None,
                 run_limits: RunLimits = DEFAULT_RUN_LIMITS) -> PushResult:
    """Store the upload as a new version, or find the same one. ``pool`` None: ``default_pool`` (the API
    server's own, so its embedded worker runs it). Checked against the pool's reported node schemas. A new
    workflow goes to ``project_id`` (None: the default project). A workflow whose fixed values (exposed
    inputs' defaults too) are over ``run_limits`` is refused: none of its runs could pass."""
    name = _check_name(name)
    pool_name = default_pool if pool is None else check_pool_name(pool)
    timeout = _check_timeout(timeout_seconds)
    checked = schemas_for_pool(session, registry, pool_name)
    upload = analyse(checked, workflow, inputs_spec, policy)
    graph = upload.workflow.prompt
    check_run_limits(graph, upload.exposed, run_limits, "workflow")
    digest = _content_hash(graph, upload.inputs_spec, upload.policy, pool_name, timeout)

    wf = session.scalars(select(Workflow).where(Workflow.name == name)).one_or_none()
    if wf is None:
        wf = Workflow(name=name, project_id=project_id or default_project(session).id)
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
        return PushResult(existing, created=False, checked_against=checked.checked_against())

    number = (session.scalar(select(func.max(WorkflowVersion.number))
                             .where(WorkflowVersion.workflow_id == wf.id)) or 0) + 1
    version = WorkflowVersion(workflow=wf, number=number, content_hash=digest, graph=graph,
                              source_format=upload.workflow.source_format, source=upload.workflow.document,
                              inputs_spec=upload.inputs_spec,
                              input_schema=limited_schema(_schema_for(upload.exposed), graph, upload.exposed,
                                                          run_limits),
                              policy=upload.policy, pool=pool_name, timeout_seconds=timeout)
    session.add(version)
    try:
        session.flush()
    except IntegrityError as exc:
        # Two uploads raced for the same number; the caller retries the whole unit of work.
        raise RaceLost(name) from exc
    return PushResult(version, created=True, checked_against=checked.checked_against())


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


def list_workflows(session: Session, project_ids: Collection[int] | None = None,
                   names: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Every workflow with its project and latest version; only those of ``project_ids`` and named in
    ``names`` when given (what a caller may see)."""
    query = (select(Workflow.name, Project.name, func.max(WorkflowVersion.number))
             .join(WorkflowVersion).join(Project, Project.id == Workflow.project_id)
             .group_by(Workflow.name, Project.name).order_by(Workflow.name))
    if project_ids is not None:
        query = query.where(Workflow.project_id.in_(sorted(project_ids)))
    if names is not None:
        query = query.where(Workflow.name.in_(sorted(names)))
    return [{"workflow": n, "project": p, "latest_version": v, "url": f"/v1/workflows/{n}"}
            for n, p, v in session.execute(query)]


def exposed_inputs_of(source: NodeRegistry | NodeSchemas, version: WorkflowVersion) -> list[ExposedInput]:
    """The version's exposed inputs, read with ``source``: the schemas of the version's pool."""
    return expose_inputs(version.graph, source, version.inputs_spec)


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
        "pool": version.pool,  # None: uploaded before pools, runs on the API server's pool
        "timeout_seconds": _seconds(version.timeout_seconds),
        "created_at": version.created_at.isoformat() + "Z",
    }


def _seconds(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


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
