"""/v1/nodes: the node schemas this server's runtime offers, in the shape of ComfyUI's ``GET /object_info``;
/v1/node-packs: what became of each node pack (admin only: the reports name server paths).

Uploaded workflows are validated and converted against these schemas.
"""

from __future__ import annotations

from aiohttp import web

from comfygate.platform.api.auth import require_admin
from comfygate.platform.api.context import state_of
from comfygate.platform.errors import NotFound

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    state = state_of(request)
    # Built once per registry; the first build calls every node's INPUT_TYPES(), so not on the event loop.
    schemas = await state.in_thread(state.registry.schemas)
    return web.json_response(schemas.object_info())


# Node names may hold any character, "/" included (sent as %2F), so the name is the whole rest of the path.
@routes.get("/v1/nodes/{class_type:.+}")
async def get_node(request: web.Request) -> web.Response:
    state = state_of(request)
    class_type = request.match_info["class_type"]
    schemas = await state.in_thread(state.registry.schemas)
    if class_type not in schemas:
        raise NotFound(f"no node type {class_type!r} on this server; GET /v1/nodes lists the {len(schemas)} "
                       "it offers, GET /v1/node-packs tells which node packs loaded",
                       details={"class_type": class_type})
    # ComfyUI's GET /object_info/{node_class} answers the same one-entry object.
    return web.json_response({class_type: schemas[class_type].info})


@routes.get("/v1/node-packs")
async def list_node_packs(request: web.Request) -> web.Response:
    require_admin(request)
    reports = state_of(request).registry.pack_reports
    return web.json_response({"packs": [report.to_dict() for report in reports]})
