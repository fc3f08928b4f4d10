"""/v1/nodes: node schemas in the shape of ComfyUI's ``GET /object_info``: this server's runtime's, or with
``?pool=NAME`` those a pool's workers reported (what uploads for that pool are validated and converted
against); /v1/pools: every pool and what it reported; /v1/node-packs: what became of each node pack (admin
only: the reports name server paths).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import NodeRegistry, NodeSchemas
from comfygate.platform.api.auth import require_admin
from comfygate.platform.api.context import state_of
from comfygate.platform.errors import NotFound
from comfygate.platform.pools import DEFAULT_POOL, check_pool_name, list_pools, reported_pools, schemas_for_pool

__all__ = ["routes"]

routes = web.RouteTableDef()


def _pool_nodes(session: Session, registry: NodeRegistry, pool: str) -> tuple[NodeSchemas, dict[str, str]]:
    """The pool's schemas and the headers saying where they come from. A pool that never reported is
    unknown (404), but for the default pool, for which this server's registry stands in."""
    checked = schemas_for_pool(session, registry, pool)
    if not checked.reported and pool != DEFAULT_POOL:
        known = reported_pools(session)
        raise NotFound(f"no worker has reported nodes for pool {pool!r}; pools that did: {known}",
                       details={"pool": pool, "reported_pools": known})
    headers = {"X-Comfygate-Pool": pool, "X-Comfygate-Nodes-Source": "pool" if checked.reported else "api"}
    if checked.reported:
        headers["X-Comfygate-Reported-By"] = checked.reported_by or ""
    else:
        headers["X-Comfygate-Note"] = checked.note() or ""
    return checked.schemas, headers


async def _schemas(request: web.Request) -> tuple[NodeSchemas, dict[str, str], str]:
    """(schemas, headers, where for messages): ``?pool=NAME``'s, else this server's own."""
    state = state_of(request)
    pool = request.query.get("pool")
    if pool is None:
        # Built once per registry; the first build calls every node's INPUT_TYPES(), so not on the event loop.
        return await state.in_thread(state.registry.schemas), {}, "on this server"
    pool = check_pool_name(pool, field="pool (query)")
    schemas, headers = await state.call(_pool_nodes, state.registry, pool)
    return schemas, headers, f"in pool {pool!r}"


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    schemas, headers, _ = await _schemas(request)
    return web.json_response(schemas.object_info(), headers=headers)


# Node names may hold any character, "/" included (sent as %2F), so the name is the whole rest of the path.
@routes.get("/v1/nodes/{class_type:.+}")
async def get_node(request: web.Request) -> web.Response:
    class_type = request.match_info["class_type"]
    schemas, headers, where = await _schemas(request)
    if class_type not in schemas:
        listing = "/v1/nodes" + (f"?pool={request.query['pool']}" if "pool" in request.query else "")
        raise NotFound(f"no node type {class_type!r} {where}; GET {listing} lists the {len(schemas)} there, "
                       "GET /v1/node-packs tells which node packs loaded on this server",
                       details={"class_type": class_type})
    # ComfyUI's GET /object_info/{node_class} answers the same one-entry object.
    return web.json_response({class_type: schemas[class_type].info}, headers=headers)


@routes.get("/v1/pools")
async def get_pools(request: web.Request) -> web.Response:
    state = state_of(request)
    pools: list[dict[str, Any]] = await state.call(list_pools, state.registry)
    return web.json_response({"pools": pools})


@routes.get("/v1/node-packs")
async def list_node_packs(request: web.Request) -> web.Response:
    require_admin(request)
    reports = state_of(request).registry.pack_reports
    return web.json_response({"packs": [report.to_dict() for report in reports]})
