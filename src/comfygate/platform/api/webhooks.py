"""/v1/webhooks: the webhook deliveries of a run, with their state (for those who may read the run)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.platform.api.auth import access_of
from comfygate.platform.api.context import state_of
from comfygate.platform.api.runs import visible_run
from comfygate.platform.errors import Unprocessable
from comfygate.platform.services import webhooks as outbox

__all__ = ["routes"]

routes = web.RouteTableDef()

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@routes.get("/v1/webhooks")
async def list_deliveries(request: web.Request) -> web.Response:
    access = access_of(request)
    run_id = request.query.get("run", "")
    if not _RUN_ID.fullmatch(run_id):
        raise Unprocessable(f"run must be a run id (32 hex digits), got {run_id[:64]!r}", details={"field": "run"})

    def deliveries(session: Session) -> list[dict[str, Any]]:
        visible_run(session, access, run_id)  # 404 naming the run when there is none, or it is not the caller's
        return outbox.deliveries_of(session, run_id)

    items = await state_of(request).call(deliveries)
    return web.json_response({"run": run_id, "items": items, "count": len(items)})
