"""Text the databases cannot store is the caller's error (422 naming the field), found where requests are read.

PostgreSQL refuses NUL in text and JSON, and nothing can encode an unpaired surrogate (JSON's "\\ud800", or
bytes that are not UTF-8 in a header or URL, which aiohttp decodes with ``surrogateescape``) as UTF-8: such
text, let through, fails deep inside a service (hashing a version, an INSERT) as a 500. JSON bodies are
checked by ``bodies.parse_json``, form fields by the form readers, and query strings and path parameters by
the middleware here, before any view runs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from comfygate.platform.errors import Unprocessable

__all__ = ["check_text", "check_json_text", "check_fields", "text_checks_middleware", "shown"]

_RULE = "text must be valid Unicode without NUL characters"
# How much of a name a message shows: enough to find it, bounded however long the name is.
_SHOWN_CHARS = 64


def _problem(text: str) -> str | None:
    for char in text:
        code = ord(char)
        if code == 0:
            return "a NUL character (\\u0000)"
        if 0xD800 <= code <= 0xDFFF:
            return f"an unpaired surrogate (\\u{code:04x})"
    return None


def shown(text: str) -> str:
    """``text`` safe to put in a message or a log: NUL and surrogates escaped, long text cut short."""
    cut = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
    return "".join(f"\\u{ord(c):04x}" if ord(c) == 0 or 0xD800 <= ord(c) <= 0xDFFF else c for c in cut)


def _refusal(field: str, problem: str, where: str = "") -> Unprocessable:
    details = {"field": field, "in": where} if where else {"field": field}
    described = f"{where} '{field}'" if where else field
    return Unprocessable(f"{described} contains {problem}; {_RULE}", details=details)


def check_text(text: str, field: str, where: str = "") -> str:
    """``text`` when a database can store it; Unprocessable naming ``field`` (and ``where``: "query
    parameter", ...) otherwise."""
    problem = _problem(text)
    if problem is not None:
        raise _refusal(field, problem, where)
    return text


def _join(path: str, key: str) -> str:
    return f"{path}.{shown(key)}" if path else shown(key)


def check_json_text(value: Any, root: str) -> None:
    """Every key and string of parsed JSON, at any depth; the error's field is the dotted path from ``root``
    (``workflow.3._meta.title``, lists as ``nodes[2]``). Also numbers JSON can carry but not store: ``1e400``
    parses as infinity, which no database column takes."""
    pending: list[tuple[Any, str]] = [(value, root)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            check_text(item, path or "the body")
        elif isinstance(item, float) and not math.isfinite(item):
            where = path or "the body"
            raise Unprocessable(f"{where} is a number too large to store (over about 1.8e308)",
                                details={"field": where})
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _problem(key)
                if problem is not None:
                    raise _refusal(_join(path, key), f"{problem} in its name")
                pending.append((child, _join(path, key)))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


def check_fields(pairs: Iterable[tuple[str, Any]], where: str) -> None:
    """Names and text values of form fields, query parameters or path parameters (``where`` says which)."""
    for name, value in pairs:
        problem = _problem(name)
        if problem is not None:
            raise _refusal(shown(name), f"{problem} in its name", where)
        if isinstance(value, str):
            check_text(value, shown(name), where)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def text_checks_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    check_fields(request.match_info.items(), "path parameter")
    check_fields(request.query.items(), "query parameter")
    return await handler(request)
