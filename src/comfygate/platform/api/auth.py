"""Who is calling: an API key (``Authorization: Bearer``) on ``/v1``, a session cookie on the web UI.

Every ``/v1`` route needs a key (or the web UI's session cookie). Who may do what is the caller's ``Access``
(platform/access), computed once per key-cache entry for a key and per request for a session. Forms posted
from the web UI carry the session's CSRF token, checked before anything changes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor
from comfygate.platform.access.build import access_for_key, access_for_user
from comfygate.platform.access.rights import Access
from comfygate.platform.api.context import state_of
from comfygate.platform.errors import Forbidden, Unauthorized
from comfygate.platform.services import accounts

__all__ = ["Caller", "CALLER", "auth_middleware", "require_admin", "web_session", "check_csrf",
           "SESSION_COOKIE", "access_of", "actor_of"]

SESSION_COOKIE = "comfygate_session"


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool
    api_key_id: int | None = None
    csrf_token: str | None = None
    # The key's own overrides of the operator's rate limits and quotas (ApiKey.limits); None: the defaults.
    key_limits: Mapping[str, Any] | None = None
    # What the caller may do where (its user's roles narrowed by the key's scopes).
    access: Access | None = None
    user_id: int | None = None


CALLER = web.RequestKey("caller", Caller)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def web_session(request: web.Request) -> Caller | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await state_of(request).call(_session_caller, token)


def _session_caller(session: Session, token: str) -> Caller | None:
    row = accounts.session_user(session, token)
    if row is None:
        return None
    access = access_for_user(session, row.user)
    return Caller(name=row.user.username, is_admin=access.server_admin, csrf_token=row.csrf_token, access=access,
                  user_id=row.user.id)


def _key_row_caller(session: Session, token: str) -> Caller | None:
    key = accounts.authenticate_key(session, token)
    if key is None:
        return None
    access = access_for_key(session, key)
    return Caller(name=f"key:{key.name}", is_admin=access.server_admin, api_key_id=key.id, key_limits=key.limits,
                  access=access, user_id=key.user_id)


async def _key_caller(request: web.Request, token: str) -> Caller:
    state = state_of(request)
    caller = state.key_cache.get(token)
    if caller is None:
        # The rights are cached with the key: a revoked key or a removed role stops working within the TTL.
        caller = await state.call(_key_row_caller, token)
        if caller is None:
            raise Unauthorized("unknown or revoked API key")
        state.key_cache.put(token, caller)
    return caller


@web.middleware
async def auth_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path.startswith("/v1/"):
        token = _bearer(request)
        if token is not None:
            request[CALLER] = await _key_caller(request, token)
        else:
            # The admin console's pages call /v1 with the admin's session cookie.
            caller = await web_session(request)
            if caller is None:
                raise Unauthorized("this route needs an API key: send 'Authorization: Bearer <key>'")
            if request.method not in ("GET", "HEAD"):
                check_csrf(caller, request.headers.get("X-CSRF-Token"))
            request[CALLER] = caller
    return await handler(request)


def require_admin(request: web.Request) -> Caller:
    """A server admin (an admin user's unscoped admin key, or their web session)."""
    caller = request.get(CALLER)
    if caller is None or not caller.is_admin:
        raise Forbidden("this route needs a server admin's key or session", details={"action": "admin"})
    return caller


def access_of(request: web.Request) -> Access:
    caller = request.get(CALLER)
    if caller is None or caller.access is None:
        raise Unauthorized("this route needs an API key: send 'Authorization: Bearer <key>'")
    return caller.access


def actor_of(request: web.Request) -> Actor:
    """Who is acting, for the audit log, with the client's address."""
    return Actor.of(access_of(request), request.remote)


def check_csrf(caller: Caller, presented: str | None) -> None:
    # Compared as bytes: compare_digest refuses str with non-ASCII characters, which a client may send.
    if not caller.csrf_token or not presented or not hmac.compare_digest(
            caller.csrf_token.encode(), presented.encode("utf-8", "surrogatepass")):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")
