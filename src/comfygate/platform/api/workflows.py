"""/v1/workflows: upload a workflow version, list and read them, read and edit a version's policy."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import NodeRegistry
from comfygate.platform.api.auth import require_admin
from comfygate.platform.api.bodies import WORKFLOW_NAME_PATH, path_number, read_json_object
from comfygate.platform.api.context import state_of
from comfygate.platform.errors import Unprocessable
from comfygate.platform.pools import DEFAULT_POOL
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.run_limits import DEFAULT_RUN_LIMITS, RunLimits

__all__ = ["routes", "push_workflow", "parse_version_number", "save_policy"]

routes = web.RouteTableDef()

_UPLOAD_FIELDS = {"name", "workflow", "inputs", "policy", "pool", "timeout_seconds"}


def push_workflow(session: Session, registry: NodeRegistry, body: dict[str, Any],
                  default_pool: str = DEFAULT_POOL, run_limits: RunLimits = DEFAULT_RUN_LIMITS
                  ) -> tuple[dict[str, Any], bool]:
    """Shared by the REST route and the web form: (version summary with what it was checked against,
    created). Without ``pool`` the version runs on ``default_pool``, the API server's own."""
    unknown = sorted(set(body) - _UPLOAD_FIELDS)
    if unknown:
        raise Unprocessable(f"unknown field(s) {unknown}; expected {sorted(_UPLOAD_FIELDS)}",
                            details={"fields": unknown})
    if "workflow" not in body:
        raise Unprocessable("'workflow' is required: the workflow JSON as ComfyUI saves or exports it",
                            details={"field": "workflow"})
    for attempt in range(3):
        try:
            result = workflow_service.push_version(
                session, registry, name=body.get("name"), workflow=body["workflow"],
                inputs_spec=body.get("inputs"), policy=body.get("policy"), pool=body.get("pool"),
                timeout_seconds=body.get("timeout_seconds"), default_pool=default_pool, run_limits=run_limits)
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
                                        state.run_limits)
    return web.json_response(summary, status=201 if created else 200)


@routes.get("/v1/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    items = await state_of(request).call(workflow_service.list_workflows)
    return web.json_response({"workflows": items})


def _workflow_detail(session: Session, name: str) -> dict[str, Any]:
    latest = workflow_service.get_version(session, name)
    versions = [workflow_service.version_summary(v) for v in latest.workflow.versions]
    return {"workflow": name, "latest_version": latest.number, "versions": versions,
            "run_url": f"/v1/workflows/{name}/runs"}


@routes.get(f"/v1/workflows/{WORKFLOW_NAME_PATH}")
async def get_workflow(request: web.Request) -> web.Response:
    detail = await state_of(request).call(_workflow_detail, request.match_info["name"])
    return web.json_response(detail)


def _version_detail(session: Session, name: str, number: int) -> dict[str, Any]:
    version = workflow_service.get_version(session, name, number)
    return {**workflow_service.version_summary(version), "graph": version.graph, "inputs": version.inputs_spec,
            "source_url": f"/v1/workflows/{name}/versions/{number}/source"}


@routes.get(f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}")
async def get_version(request: web.Request) -> web.Response:
    number = parse_version_number(request.match_info["number"])
    detail = await state_of(request).call(_version_detail, request.match_info["name"], number)
    return web.json_response(detail)


def _version_source(session: Session, name: str, number: int) -> Any:
    version = workflow_service.get_version(session, name, number)
    # Versions stored before the document was kept ran from their API graph, which was the upload.
    return version.source if version.source is not None else version.graph


@routes.get(f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}/source")
async def get_version_source(request: web.Request) -> web.Response:
    """The workflow document exactly as uploaded (a UI export opens again in ComfyUI's editor)."""
    number = parse_version_number(request.match_info["number"])
    document = await state_of(request).call(_version_source, request.match_info["name"], number)
    return web.json_response(document)


_POLICY_PATH = f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}/policy"


@routes.get(_POLICY_PATH)
async def get_policy(request: web.Request) -> web.Response:
    """``{"workflow", "version", "policy", "revision", "updated_at"}`` (admin)."""
    require_admin(request)
    number = parse_version_number(request.match_info["number"])
    body = await state_of(request).call(workflow_service.get_policy, request.match_info["name"], number)
    return web.json_response(body)


def save_policy(session: Session, name: str, number: int, raw_policy: Any) -> dict[str, Any]:
    """Shared by the REST route and the console's editor: the saved policy as ``get_policy`` shows it."""
    return workflow_service.policy_to_dict(workflow_service.update_policy(session, name, number, raw_policy))


@routes.put(_POLICY_PATH)
async def put_policy(request: web.Request) -> web.Response:
    """Replace the version's policy (admin). The body IS the policy object, e.g. ``{"checks": {...},
    "retries": 2}`` (not wrapped in ``{"policy": ...}``); keys left out take their defaults. A bad policy is
    a 422 whose ``details.field`` is the key path (``policy.checks.blank.reject``). Answers like GET, with
    the revision raised by one."""
    require_admin(request)
    state = state_of(request)
    number = parse_version_number(request.match_info["number"])
    body = await read_json_object(request, state.settings.max_upload_bytes)
    saved = await state.call(save_policy, request.match_info["name"], number, body)
    return web.json_response(saved)
