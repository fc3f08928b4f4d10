"""/v1 runs: start a run of a workflow version, read it (optionally waiting), fetch outputs, cancel.

A run the caller may not see (another project's, another key's for a caller key) is answered exactly like a
run that does not exist."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.platform.access.rights import Access
from comfygate.platform.api.auth import CALLER, access_of
from comfygate.platform.api.bodies import (
    RUN_ID_PATH,
    WORKFLOW_NAME_PATH,
    RunRequest,
    path_number,
    read_run_request,
)
from comfygate.platform.api.context import AppState, state_of
from comfygate.platform.api.workflows import parse_version_number
from comfygate.platform.db import session_scope
from comfygate.platform.errors import Unprocessable
from comfygate.platform.limits.http import check_run_start
from comfygate.platform.models import Run, RunOutput, RunStatus, new_id
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.webhooks import targets_allowing

__all__ = ["routes", "MAX_WAIT_SECONDS", "visible_run"]

routes = web.RouteTableDef()

MAX_WAIT_SECONDS = 60.0


def _wait_seconds(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise Unprocessable(f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}, got {raw!r}",
                            details={"field": "wait"})
    return seconds


def _create_and_dispatch(state: AppState, run_id: str, name: str, number: int | None, body: RunRequest,
                         api_key_id: int | None, access: Access) -> dict[str, Any]:
    with session_scope(state.sessions) as session:
        version = workflow_service.get_version(session, name, number)
        access.require_workflow_visible(version.workflow.project_id, name)
        access.require("run", version.workflow.project_id, name)
        run = run_service.create_run(session, state.registry, state.storage, state.image_limits, version,
                                     body.inputs, body.files, api_key_id, run_id=run_id, webhook=body.webhook,
                                     run_limits=state.run_limits,
                                     webhook_targets=targets_allowing(state.settings.webhook_allow))
        attempt, pool = run.attempt, version.pool
    # The row has committed: a worker that picks the task up will find it.
    state.dispatcher.send(run_id, attempt, pool)
    return {"id": run_id, "status": RunStatus.QUEUED, "url": run_service.run_url(run_id)}


def visible_run(session: Session, access: Access, run_id: str) -> Run:
    """The run, when the caller may read it; else the same 404 as for a run that does not exist."""
    run = run_service.get_run(session, run_id)
    access.require_run_visible(run_id, run.project_id, run.version.workflow.name, run.api_key_id)
    return run


def _run_if_ended(session: Session, run_id: str, access: Access) -> dict[str, Any] | None:
    run = visible_run(session, access, run_id)
    return run_service.run_to_dict(run, admin=access.server_admin) if run.status in RunStatus.TERMINAL else None


async def _wait_for_end(state: AppState, run_id: str, seconds: float, access: Access,
                        expected: asyncio.Future[None] | None = None) -> dict[str, Any] | None:
    ended: dict[str, Any] = {}

    async def has_ended() -> bool:
        body = await state.call(_run_if_ended, run_id, access)
        if body is not None:
            ended["run"] = body
        return body is not None

    if await state.waiters.wait_until_ended(run_id, seconds, has_ended, expected=expected):
        return ended["run"]
    return None


async def _start_run(request: web.Request, number: int | None) -> web.Response:
    state = state_of(request)
    wait = _wait_seconds(request)
    # Before the body is read: a key over its quota or rate does not get to upload its input images.
    await check_run_start(state, request[CALLER])
    body = await read_run_request(request, state.settings.max_upload_bytes)
    caller = request[CALLER]
    run_id = new_id()
    # Listen before dispatching: a fast run can end before this coroutine resumes.
    expected = state.waiters.expect(run_id) if wait > 0 else None
    try:
        accepted = await state.in_thread(_create_and_dispatch, state, run_id, request.match_info["name"],
                                         number, body, caller.api_key_id, access_of(request))
        if expected is not None:
            finished = await _wait_for_end(state, run_id, wait, access_of(request), expected)
            if finished is not None:
                return web.json_response(finished, status=200)
    finally:
        if expected is not None:
            state.waiters.discard(run_id, expected)
    return web.json_response(accepted, status=202, headers={"Location": accepted["url"]})


@routes.post(f"/v1/workflows/{WORKFLOW_NAME_PATH}/runs")
async def start_run_latest(request: web.Request) -> web.Response:
    return await _start_run(request, None)


@routes.post(f"/v1/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}/runs")
async def start_run_version(request: web.Request) -> web.Response:
    return await _start_run(request, parse_version_number(request.match_info["number"]))


def _run_body(session: Session, run_id: str, access: Access) -> dict[str, Any]:
    return run_service.run_to_dict(visible_run(session, access, run_id), admin=access.server_admin)


@routes.get(f"/v1/runs/{RUN_ID_PATH}")
async def get_run(request: web.Request) -> web.Response:
    state = state_of(request)
    run_id = request.match_info["run_id"]
    wait = _wait_seconds(request)
    if wait > 0:
        finished = await _wait_for_end(state, run_id, wait, access_of(request))
        if finished is not None:
            return web.json_response(finished)
    return web.json_response(await state.call(_run_body, run_id, access_of(request)))


@routes.get(f"/v1/runs/{RUN_ID_PATH}/outputs/{{index}}")
async def get_output(request: web.Request) -> web.Response:
    state = state_of(request)
    index = path_number(request.match_info["index"], "output index", minimum=0)
    output = await state.call(_released_output, access_of(request), request.match_info["run_id"], index)
    data = await state.in_thread(state.storage.get, output.storage_key)
    # Content-Type as a header: aiohttp's content_type argument refuses a charset parameter (text outputs).
    return web.Response(body=data, headers={"Content-Type": output.content_type,
                                            "Content-Disposition": f'inline; filename="{output.filename}"',
                                            "Cache-Control": "private, max-age=31536000, immutable"})


def _released_output(session: Session, access: Access, run_id: str, index: int) -> RunOutput:
    visible_run(session, access, run_id)
    return run_service.released_output(session, run_id, index)


def _cancel(session: Session, access: Access, run_id: str) -> dict[str, Any]:
    run = visible_run(session, access, run_id)
    access.require("run", run.project_id, run.version.workflow.name)
    return run_service.run_to_dict(run_service.cancel_run(session, run_id))


@routes.post(f"/v1/runs/{RUN_ID_PATH}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await state.call(_cancel, access_of(request), request.match_info["run_id"])
    if body["status"] == RunStatus.CANCELED:
        state.waiters.notify(body["id"], webhook=True)
    return web.json_response(body, status=202 if body["status"] != RunStatus.CANCELED else 200)
