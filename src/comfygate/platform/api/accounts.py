"""Accounts over the API: who am I (/v1/me), projects, users, project members, API keys, the audit log.

Projects and users are a server admin's; a project's members its admins'; keys their owners' (and admins');
every change is written to the audit log in the same transaction.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.access import audit, keys, members
from comfygate.platform.access.audit import Actor
from comfygate.platform.access.projects import create_project, project_to_dict
from comfygate.platform.access.rights import Access
from comfygate.platform.api.auth import access_of, actor_of
from comfygate.platform.api.bodies import read_json_object
from comfygate.platform.api.context import state_of
from comfygate.platform.errors import Forbidden, NotFound, Unprocessable
from comfygate.platform.models import ApiKey, Project

__all__ = ["routes"]

routes = web.RouteTableDef()

_NAME = "{name:[^/]{1,128}}"


def _projects_view(session: Session, access: Access) -> list[dict[str, Any]]:
    """The projects the caller has any right in, with its role and its actions there."""
    rows = session.scalars(select(Project).order_by(Project.name)).all()
    return [{**project_to_dict(p), "role": access.roles.get(p.id), "actions": sorted(access.actions_in(p.id)),
             "own_runs_only": p.id in access.own_runs_only} for p in rows if access.actions_in(p.id)]


def _me(session: Session, access: Access) -> dict[str, Any]:
    key = session.get(ApiKey, access.api_key_id) if access.api_key_id is not None else None
    return {"actor": access.actor, "user": access.username, "server_admin": access.server_admin,
            "projects": _projects_view(session, access),
            "key": keys.key_to_dict(session, key) if key is not None else None}


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    return web.json_response(await state_of(request).call(_me, access_of(request)))


@routes.get("/v1/projects")
async def list_projects(request: web.Request) -> web.Response:
    items = await state_of(request).call(_projects_view, access_of(request))
    return web.json_response({"projects": items})


def _new_project(session: Session, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    return project_to_dict(create_project(session, body.get("name"), actor))


@routes.post("/v1/projects")
async def post_project(request: web.Request) -> web.Response:
    access_of(request).require_server_admin()
    body = await read_json_object(request, 64 * 1024)
    created = await state_of(request).call(_new_project, actor_of(request), body)
    return web.json_response(created, status=201)


@routes.get("/v1/users")
async def list_users(request: web.Request) -> web.Response:
    access_of(request).require_server_admin()
    return web.json_response({"users": await state_of(request).call(members.list_users)})


def _new_user(session: Session, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"username", "password", "admin", "projects"})
    if unknown:
        raise Unprocessable(f"unknown field {unknown[0]!r}; expected username, password, admin, projects",
                            details={"field": unknown[0]})
    user, generated = members.add_user(session, actor, body.get("username"), body.get("password"),
                                       admin=body.get("admin", False), projects=body.get("projects"))
    answer = members.user_to_dict(session, user)
    if generated is not None:
        answer["password"] = generated  # shown once; only its hash is stored
    return answer


@routes.post("/v1/users")
async def post_user(request: web.Request) -> web.Response:
    access_of(request).require_server_admin()
    body = await read_json_object(request, 64 * 1024)
    created = await state_of(request).call(_new_user, actor_of(request), body)
    return web.json_response(created, status=201)


def _administered(session: Session, access: Access, name: str) -> str:
    """The project, when the caller administers it; 404 when it cannot see it, 403 when it only works in it."""
    project = session.scalars(select(Project).where(Project.name == name)).one_or_none()
    if project is None or not access.actions_in(project.id):
        raise NotFound(f"no project named {name!r}", details={"field": "project"})
    access.require("admin", project.id)
    return project.name


def _set_member(session: Session, access: Access, actor: Actor, project: str, username: str,
                body: dict[str, Any]) -> dict[str, Any]:
    return members.set_role(session, actor, _administered(session, access, project), username, body.get("role"))


def _remove_member(session: Session, access: Access, actor: Actor, project: str, username: str
                   ) -> dict[str, Any]:
    return members.remove_role(session, actor, _administered(session, access, project), username)


_MEMBER_PATH = f"/v1/projects/{{project:[^/]{{1,64}}}}/members/{_NAME}"


@routes.put(_MEMBER_PATH)
async def put_member(request: web.Request) -> web.Response:
    body = await read_json_object(request, 64 * 1024)
    answer = await state_of(request).call(_set_member, access_of(request), actor_of(request),
                                          request.match_info["project"], request.match_info["name"], body)
    return web.json_response(answer)


@routes.delete(_MEMBER_PATH)
async def delete_member(request: web.Request) -> web.Response:
    answer = await state_of(request).call(_remove_member, access_of(request), actor_of(request),
                                          request.match_info["project"], request.match_info["name"])
    return web.json_response(answer)


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    return web.json_response({"keys": await state_of(request).call(keys.list_keys, access_of(request))})


@routes.post("/v1/keys")
async def post_key(request: web.Request) -> web.Response:
    body = await read_json_object(request, 64 * 1024)
    created = await state_of(request).call(keys.create_key, access_of(request), actor_of(request), body)
    return web.json_response(created, status=201)


@routes.delete("/v1/keys/{prefix:[0-9a-f]{1,32}}")
async def delete_key(request: web.Request) -> web.Response:
    revoked = await state_of(request).call(keys.revoke_key, access_of(request), actor_of(request),
                                           request.match_info["prefix"])
    return web.json_response(revoked)


def _query_int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:  # "²".isdigit(), but int() refuses it
        raise Unprocessable(f"{name} must be a whole number, got {raw[:32]!r}", details={"field": name})
    return int(raw)


@routes.get("/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    """Newest first; ``?action=``, ``?project=``, ``?limit=`` (1-500, default 100), ``?before=<id>``."""
    access = access_of(request)
    if not access.server_admin and access.project_ids_with("admin") == frozenset():
        raise Forbidden("the audit log needs a server admin or a project admin", details={"action": "admin"})
    limit = _query_int(request, "limit", audit.DEFAULT_LIMIT)
    assert limit is not None
    entries = await state_of(request).call(
        audit.list_entries, access, action=request.query.get("action") or None,
        project=request.query.get("project") or None, limit=limit, before=_query_int(request, "before", None))
    next_page = None
    if len(entries) == limit:  # there may be older entries: the same query before the oldest one shown
        query = {k: v for k, v in request.query.items() if k != "before"}
        next_page = str(request.rel_url.with_query({**query, "before": str(entries[-1]["id"])}))
    return web.json_response({"entries": entries, "count": len(entries), "next": next_page})

