"""Reading request bodies and path parameters: malformed input is the caller's error (4xx) with a message
that says why, never a 500."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from comfygate.platform.api.text_checks import check_json_text, check_text
from comfygate.platform.errors import BadRequest, NotFound, PayloadTooLarge

__all__ = ["read_json_object", "read_run_request", "RunRequest", "parse_json", "path_number", "MAX_JSON_DEPTH",
           "WORKFLOW_NAME_PATH", "RUN_ID_PATH"]

# A workflow upload is about 5 levels deep; anything near Python's recursion limit is an attack or a bug.
MAX_JSON_DEPTH = 64
# URL path patterns: a path that cannot name a workflow or a run is a 404 from the router, before any query.
WORKFLOW_NAME_PATH = "{name:[a-z0-9][a-z0-9._-]{0,127}}"
RUN_ID_PATH = "{run_id:[0-9a-f]{32}}"
# Ids and version numbers are database integers; a longer number can name nothing.
_MAX_PATH_NUMBER = 2**31 - 1


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


async def _read_bytes(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _too_large(limit) from exc


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, counted without recursion; stops early past MAX_JSON_DEPTH."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON and which PostgreSQL's JSON type refuses.
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes | str, what: str, root: str = "") -> Any:
    """The parsed value; 400 for what is not JSON (``what`` names it), 422 naming the path from ``root``
    (``workflow.3._meta.title``) for text or numbers no database can store."""
    too_deep = BadRequest(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except RecursionError as exc:
        raise too_deep from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, integers over Python's digit limit
        raise BadRequest(f"{what} is not valid JSON: {exc}") from exc
    if _depth(data) > MAX_JSON_DEPTH:
        raise too_deep
    check_json_text(data, root)
    return data


def path_number(raw: str, what: str, minimum: int = 1) -> int:
    """A whole number from the URL path; anything else names nothing there (404)."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not minimum <= int(raw) <= _MAX_PATH_NUMBER:
        raise NotFound(f"{what} must be a whole number from {minimum}, got {raw!r}")
    return int(raw)


def _parse_object(raw: bytes, what: str, root: str = "") -> dict[str, Any]:
    data = parse_json(raw, what, root)
    if not isinstance(data, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    raw = await _read_bytes(request, limit)
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    return _parse_object(raw, "request body")


@dataclass
class RunRequest:
    inputs: Any = field(default_factory=dict)  # checked against the workflow's inputs by the run service
    files: dict[str, bytes] = field(default_factory=dict)  # uploaded images by input name
    webhook: Any = None  # the URL to POST the run's end to; checked by the run service


async def read_run_request(request: web.Request, limit: int) -> RunRequest:
    """Inputs, uploaded files by input name and the webhook URL from a JSON body or a multipart form.

    JSON: ``{"inputs": {...}, "webhook": "https://..."}``. Multipart: a field ``inputs`` holding the JSON
    object, an optional text field ``webhook``, and one file field per image input."""
    if request.content_type != "multipart/form-data":
        body = await read_json_object(request, limit) if request.can_read_body else {}
        unknown = sorted(set(body) - {"inputs", "webhook"})
        if unknown:
            raise BadRequest(f"unknown field(s) {unknown} in the request body; put run inputs under 'inputs'")
        return RunRequest(body.get("inputs", {}), {}, body.get("webhook"))
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    run = RunRequest()
    total = 0
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise BadRequest("every multipart part needs a name")
            check_text(part.name, "multipart part name")
            data = bytearray()
            while chunk := await part.read_chunk():
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                data.extend(chunk)
            if part.name == "inputs" and part.filename is None:
                run.inputs = _parse_object(bytes(data), "the 'inputs' form field", "inputs")
            elif part.name == "webhook" and part.filename is None:
                run.webhook = _form_text(bytes(data), "webhook")
            else:
                run.files[part.name] = bytes(data)
    except (ValueError, HttpProcessingError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    return run


def _form_text(data: bytes, name: str) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the {name!r} form field is not UTF-8 text") from exc
    return check_text(text, name)
