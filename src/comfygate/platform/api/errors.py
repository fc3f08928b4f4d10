"""The one error handler: every error leaves as one JSON body (``/v1``) or one HTML page (the web UI)."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from comfygate.platform.errors import PlatformError, ServiceUnavailable

__all__ = ["error_middleware", "json_error"]

log = logging.getLogger(__name__)

# A database that does not answer (down, restarting, out of connections) is a 503 the caller may retry, not
# our bug. Connections it broke are replaced by the pool's pre-ping once it is back.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_RETRY_AFTER = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def json_error(status: int, code: str, message: str, details: object = None) -> web.Response:
    body: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response({"error": body}, status=status)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/v1") or "application/json" in request.headers.get("Accept", "")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await _database_errors_as_unavailable(request, handler)
    except PlatformError as exc:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if _wants_json(request):
            return web.json_response(exc.to_dict(), status=exc.status, headers=headers)
        return web.Response(text=f"{exc.status}: {exc.message}", status=exc.status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400 or not _wants_json(request):
            raise
        if exc.status == 413:
            message = "request body too large"
        else:
            message = exc.text if exc.text and exc.text != exc.reason else exc.reason
        return json_error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
    except Exception:
        # Our bug, not the caller's: log it with a reference the caller can quote, never leak internals.
        reference = uuid.uuid4().hex[:12]
        log.exception("unhandled error on %s %s (ref %s)", request.method, request.path, reference)
        return json_error(500, "internal_error", f"internal error (reference {reference})")


async def _database_errors_as_unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DATABASE_UNAVAILABLE as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ServiceUnavailable("the database is unreachable right now; try again in a few seconds",
                                 retry_after=DATABASE_RETRY_AFTER) from exc
