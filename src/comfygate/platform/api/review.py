"""/v1/review: the queue of withheld outputs and the decisions on them; /v1/calibration: what the decisions
say about the gate's thresholds. Both need ``review`` in the output's (the workflow's) project; outputs of
other projects are not found."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor, record
from comfygate.platform.access.rights import Access
from comfygate.platform.api.auth import CALLER, access_of, actor_of
from comfygate.platform.api.bodies import WORKFLOW_NAME_PATH, path_number, read_json_object
from comfygate.platform.api.context import state_of
from comfygate.platform.api.workflows import visible_version
from comfygate.platform.errors import Forbidden, NotFound
from comfygate.platform.models import RunOutput
from comfygate.platform.services import calibration
from comfygate.platform.services import review as review_service
from comfygate.platform.services import runs as run_service

__all__ = ["routes", "output_id_of", "decide_output", "review_queue", "reviewable_output", "calibration_for"]

routes = web.RouteTableDef()


def output_id_of(request: web.Request) -> int:
    return path_number(request.match_info["output_id"], "output id")


def _reviewer(access: Access) -> None:
    """403 for a caller who may review nowhere: no output id can tell it anything."""
    if access.project_ids_with("review") == frozenset():
        raise Forbidden("this needs the 'review' right in a project", details={"action": "review"})


def review_queue(session: Session, access: Access) -> list[dict[str, Any]]:
    _reviewer(access)
    outputs = review_service.pending_outputs(session, project_ids=access.project_ids_with("review"),
                                             workflows=access.workflows)
    return [{**review_service.review_item(o), "project": access.name_of(o.run.project_id)} for o in outputs]


def reviewable_output(session: Session, access: Access, output_id: int) -> RunOutput:
    """The output, when the caller may review in its project; 403 when it may only read its run; else the
    same 404 as for no such output."""
    output = review_service.get_output(session, output_id)
    run = output.run
    workflow = run.version.workflow.name
    if not access.can("review", run.project_id, workflow):
        if not access.sees_run(run.project_id, workflow, run.api_key_id):
            raise NotFound(f"no output with id {output_id}")
        access.require("review", run.project_id, workflow)
    return output


def decide_output(session: Session, output_id: int, decision: Any, decided_by: str, note: Any, *,
                  access: Access, actor: Actor) -> dict[str, Any]:
    project_id = reviewable_output(session, access, output_id).run.project_id
    output = review_service.decide(session, output_id, decision, decided_by,
                                   note if isinstance(note, str) else None)
    record(session, actor, "review.decision", project_id=project_id, target=f"output {output_id}",
           details={"decision": decision, "run": output.run_id, "index": output.index,
                    "note": note if isinstance(note, str) else None})
    return {"output_id": output.id, "review": output.review_state, "released": output.released,
            "run": run_service.run_to_dict(output.run)}


@routes.get("/v1/review")
async def list_review(request: web.Request) -> web.Response:
    items = await state_of(request).call(review_queue, access_of(request))
    return web.json_response({"items": items, "count": len(items)})


@routes.post("/v1/review/{output_id}")
async def post_decision(request: web.Request) -> web.Response:
    state = state_of(request)
    output_id = output_id_of(request)
    body = await read_json_object(request, state.settings.max_upload_bytes)
    result = await state.call(decide_output, output_id, body.get("decision"), request[CALLER].name,
                              body.get("note"), access=access_of(request), actor=actor_of(request))
    state.waiters.notify(result["run"]["id"], webhook=True)
    return web.json_response(result)


@routes.get("/v1/review/{output_id}/image")
async def review_image(request: web.Request) -> web.Response:
    state = state_of(request)
    output = await state.call(reviewable_output, access_of(request), output_id_of(request))
    data = await state.in_thread(state.storage.get, output.storage_key)
    return web.Response(body=data, content_type=output.content_type)


def calibration_for(session: Session, access: Access, name: str) -> dict[str, Any]:
    """The report of a workflow the caller may review (``review`` in its project)."""
    version = visible_version(session, access, name)
    access.require("review", version.workflow.project_id, name)
    return calibration.calibration_report(session, name)


@routes.get(f"/v1/calibration/{WORKFLOW_NAME_PATH}")
async def get_calibration(request: web.Request) -> web.Response:
    """Per check: approved vs rejected score histograms, precision/recall of its bands against the review
    labels, and a suggested threshold (see ``services.calibration``)."""
    report = await state_of(request).call(calibration_for, access_of(request), request.match_info["name"])
    return web.json_response(report)
