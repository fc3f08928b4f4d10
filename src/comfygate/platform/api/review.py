"""/v1/review: the queue of withheld outputs and the decisions on them; /v1/calibration: what the decisions
say about the gate's thresholds (admin only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.platform.api.auth import require_admin
from comfygate.platform.api.bodies import WORKFLOW_NAME_PATH, path_number, read_json_object
from comfygate.platform.api.context import state_of
from comfygate.platform.services import calibration
from comfygate.platform.services import review as review_service
from comfygate.platform.services import runs as run_service

__all__ = ["routes", "output_id_of", "decide_output", "review_queue"]

routes = web.RouteTableDef()


def output_id_of(request: web.Request) -> int:
    return path_number(request.match_info["output_id"], "output id")


def review_queue(session: Session) -> list[dict[str, Any]]:
    return [review_service.review_item(o) for o in review_service.pending_outputs(session)]


def decide_output(session: Session, output_id: int, decision: Any, decided_by: str, note: Any
                  ) -> dict[str, Any]:
    output = review_service.decide(session, output_id, decision, decided_by,
                                   note if isinstance(note, str) else None)
    return {"output_id": output.id, "review": output.review_state, "released": output.released,
            "run": run_service.run_to_dict(output.run)}


@routes.get("/v1/review")
async def list_review(request: web.Request) -> web.Response:
    require_admin(request)
    items = await state_of(request).call(review_queue)
    return web.json_response({"items": items, "count": len(items)})


@routes.post("/v1/review/{output_id}")
async def post_decision(request: web.Request) -> web.Response:
    caller = require_admin(request)
    state = state_of(request)
    output_id = output_id_of(request)
    body = await read_json_object(request, state.settings.max_upload_bytes)
    result = await state.call(decide_output, output_id, body.get("decision"), caller.name, body.get("note"))
    state.waiters.notify(result["run"]["id"], webhook=True)
    return web.json_response(result)


@routes.get("/v1/review/{output_id}/image")
async def review_image(request: web.Request) -> web.Response:
    require_admin(request)
    state = state_of(request)
    output = await state.call(review_service.get_output, output_id_of(request))
    data = await state.in_thread(state.storage.get, output.storage_key)
    return web.Response(body=data, content_type=output.content_type)


@routes.get(f"/v1/calibration/{WORKFLOW_NAME_PATH}")
async def get_calibration(request: web.Request) -> web.Response:
    """Per check: approved vs rejected score histograms, precision/recall of its bands against the review
    labels, and a suggested threshold (see ``services.calibration``)."""
    require_admin(request)
    report = await state_of(request).call(calibration.calibration_report, request.match_info["name"])
    return web.json_response(report)
