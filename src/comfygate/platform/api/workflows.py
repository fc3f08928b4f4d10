"""/v1/workflows: upload a workflow version, list and read them, read and edit a version's policy.

Workflows of projects the caller has no role in (or outside its key's workflow scope) are not found; uploads
and policy edits need ``publish`` in the workflow's project, and are audited."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import NodeRegistry
from comfygate.platform.access.audit import Actor
from comfygate.platform.access.publishing import audit_policy_change, audit_publish, publish_target
from comfygate.platform.access.rights import Access
from comfygate.platform.api.auth import access_of, actor_of
from comfygate.platform.api.bodies import WORKFLOW_NAME_PATH, path_number, read_json_object
from comfygate.platform.api.context import state_of
from comfygate.platform.errors import Unprocessable
from comfygate.platform.models import WorkflowVersion
from comfygate.platform.pools import DEFAULT_POOL
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.run_limits import DEFAULT_RUN_LIMITS, RunLimits

__all__ = ["routes", "push_workflow", "parse_version_number", "save_policy", "read_policy", "visible_version",
           "visible_projects"]

routes = web.RouteTableDef()

_UPLOAD_FIELDS = {"name", "workflow", "inputs", "policy", "pool", "timeout_seconds", "project"}


def push_workflow(session: Session, registry: NodeRegistry, body: dict[str, Any],
                  default_pool: str = DEFAULT_POOL, run_limits: RunLimits = DEFAULT_RUN_LIMITS, *,
                  access: Access, actor: Actor) -> tuple[dict[str, Any], bool]:
    """Shared by the REST route and the web form: (version summary with what it was checked against,
    created). Without ``pool`` the version runs on ``default_pool``, the API server's own. The caller needs
    ``publish`` in the workflow's project (a new workflow's: ``project``, else its only or the default one)."""
    unknown = sorted(set(body) - _UPLOAD_FIELDS)
    if unknown:
        raise Unprocessable(f"unknown field(s) {unknown}; expected {sorted(_UPLOAD_FIELDS)}",
                            details={"fields": unknown})
    if "workflow" not in body:
        raise Unprocessable("'workflow' is required: the workflow JSON as ComfyUI saves or exports it",
                            details={"field": "workflow"})
    for attempt in range(3):
        try:
            target = publish_target(session, access, body.get("name"), body.get("project"))
            result = workflow_service.push_version(
                session, registry, name=body.get("name"), workflow=body["workflow"],
                inputs_spec=body.get("inputs"), policy=body.get("policy"), pool=body.get("pool"),
                timeout_seconds=body.get("timeout_seconds"), default_pool=default_pool, run_limits=run_limits,
                project_id=target.project_id)
            if result.created:
                audit_publish(session, actor, target, result.version)
            summary = workflow_service.version_summary(result.version)
            return {**summary, "checked_against": result.checked_against}, result.created
        except workflow_service.RaceLost:
            session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def parse_version_number(raw: str) -> int:
    return path_number(raw, "version")


@routes.post("/v1/workflows")
async def create_workflow_version(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json_object(request, state.settings.max_upload_bytes)
    summary, created = await state.call(push_workflow, state.registry, body, state.settings.pool,
                                        state.run_limits, access=access_of(request), actor=actor_of(request))
    return web.json_response(summary, status=201 if created else 200)


@routes.get("/v1/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    access = access_of(request)
    items = await state_of(request).call(workflow_service.list_workflows, visible_projects(access),
                                         access.workflows)
    return web.json_response({"workflows": items})


def visible_projects(access: Access) -> frozenset[int] | None:
    """The projects whose workflows the caller sees (any role there); None: every project."""
    if access.everywhere:
        return None
    return frozenset(p for p, actions in access.projects.items() if actions)


def visible_version(session: Session, access: Access, name: str, number: int | None = None) -> WorkflowVersion:
    """The version, when the caller may see its workflow; else the same 404 as for no such workflow."""
    version = workflow_service.get_version(session, name, number)
    access.require_workflow_visible(version.workflow.project_id, name)
    return version


def _workflow_detail(session: Session, access: Access, name: str) -> dict[str, Any]:
    latest = visible_version(session, access, name)
    versions = [workflow_service.version_summary(v) for v in latest.workflow.versions]
    return {"workflow": name, "project": access.name_of(latest.workflow.project_id),
            "latest_version": latest.number, "versions": versions, "run_url": f"/v1/workflows/{name}/runs"}


@routes.get(f"/v1/workflows/{WORKFLOW_NAME_PATH}")
async def get_workflow(request: web.Request) -> web.Response:
    detail = await state_of(request).call(_workflow_detail, access_of(request), request.match_info["name"])
    return web.json_response(detail)


def _version_detail(session: Session, access: Access, name: str, number: int) -> dict[str, Any]:
    version = visible_version(session, access, name, number)
    return {**workflow_service.version_summary(version), "graph": version.graph, "inputs": version.inputs_spec,
            "source_url": f"/v1/workflows/{name}/versions/{number}/source"}


@routes.get(f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}")
async def get_version(request: web.Request) -> web.Response:
    number = parse_version_number(request.match_info["number"])
    detail = await state_of(request).call(_version_detail, access_of(request), request.match_info["name"], number)
    return web.json_response(detail)


def _version_source(session: Session, access: Access, name: str, number: int) -> Any:
    version = visible_version(session, access, name, number)
    # Versions stored before the document was kept ran from their API graph, which was the upload.
    return version.source if version.source is not None else version.graph


@routes.get(f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}/source")
async def get_version_source(request: web.Request) -> web.Response:
    """The workflow document exactly as uploaded (a UI export opens again in ComfyUI's editor)."""
    number = parse_version_number(request.match_info["number"])
    document = await state_of(request).call(_version_source, access_of(request), request.match_info["name"],
                                            number)
    return web.json_response(document)


_POLICY_PATH = f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}/policy"


def read_policy(session: Session, access: Access, name: str, number: int) -> dict[str, Any]:
    """The policy, for those who publish or review in the workflow's project."""
    version = visible_version(session, access, name, number)
    project_id = version.workflow.project_id
    if not access.can("review", project_id, name):
        access.require("publish", project_id, name)
    return workflow_service.policy_to_dict(version)


@routes.get(_POLICY_PATH)
async def get_policy(request: web.Request) -> web.Response:
    """``{"workflow", "version", "policy", "revision", "updated_at"}`` (publish or review)."""
    number = parse_version_number(request.match_info["number"])
    body = await state_of(request).call(read_policy, access_of(request), request.match_info["name"], number)
    return web.json_response(body)


def save_policy(session: Session, name: str, number: int, raw_policy: Any, *, access: Access, actor: Actor
                ) -> dict[str, Any]:
    """Shared by the REST route and the console's editor: the saved policy as ``get_policy`` shows it. Needs
    ``publish`` in the workflow's project; the change is audited with the policy before and after."""
    version = visible_version(session, access, name, number)
    access.require("publish", version.workflow.project_id, name)
    before = version.policy
    saved = workflow_service.update_policy(session, name, number, raw_policy)
    audit_policy_change(session, actor, saved.workflow.project_id, saved, before, "edit")
    return workflow_service.policy_to_dict(saved)


@routes.put(_POLICY_PATH)
async def put_policy(request: web.Request) -> web.Response:
    """Replace the version's policy (``publish`` in its project). The body IS the policy object, e.g.
    ``{"checks": {...}, "retries": 2}`` (not wrapped in ``{"policy": ...}``); keys left out take their
    defaults. A bad policy is a 422 whose ``details.field`` is the key path (``policy.checks.blank.reject``).
    Answers like GET, with the revision raised by one."""
    state = state_of(request)
    number = parse_version_number(request.match_info["number"])
    body = await read_json_object(request, state.settings.max_upload_bytes)
    saved = await state.call(save_policy, request.match_info["name"], number, body, access=access_of(request),
                             actor=actor_of(request))
    return web.json_response(saved)
