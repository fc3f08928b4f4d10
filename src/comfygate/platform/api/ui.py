"""The web UI: log in, upload a workflow, and the admin console (review queue, policy editor, calibration).
Each page needs the right its actions need (upload and policies: publish; review and calibration: review).

Server-rendered pages with plain forms; every form that changes something carries the session's CSRF token.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from comfygate.platform.access.audit import Actor
from comfygate.platform.access.rights import Access
from comfygate.platform.api.auth import SESSION_COOKIE, Caller, check_csrf, web_session
from comfygate.platform.api.bodies import WORKFLOW_NAME_PATH, parse_json
from comfygate.platform.api.context import state_of
from comfygate.platform.api.review import calibration_for, decide_output, output_id_of, review_queue
from comfygate.platform.api.text_checks import check_fields
from comfygate.platform.api.workflows import (
    parse_version_number,
    push_workflow,
    save_policy,
    visible_projects,
    visible_version,
)
from comfygate.platform.errors import BadRequest, Forbidden, PlatformError, TooManyRequests, Unprocessable
from comfygate.platform.services import accounts, calibration
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.accounts import SESSION_LIFETIME

__all__ = ["setup"]

routes = web.RouteTableDef()
_templates = jinja2.Environment(loader=jinja2.PackageLoader("comfygate.platform", "templates"),
                                autoescape=True)


def _page(name: str, status: int = 200, **context: Any) -> web.Response:
    html = _templates.get_template(name).render(**context)
    return web.Response(text=html, content_type="text/html", status=status)


async def _admin_or_login(request: web.Request, action: str | None = None) -> Caller:
    """The logged-in user, who needs ``action`` in some project for the page (None: any logged-in user);
    the precise check (which project) is the service's."""
    caller = await web_session(request)
    if caller is not None and action is not None and _access(caller).project_ids_with(action) == frozenset():
        raise Forbidden(f"this page needs the {action!r} right in a project", details={"action": action})
    if caller is None:
        # After logging in, come back to the page; a form post (session expired) goes back to its page.
        if request.method in ("GET", "HEAD"):
            back = request.path_qs
        else:
            back = "/admin" if request.path.startswith("/admin") else "/"
        raise web.HTTPSeeOther(f"/login?next={quote(back, safe='/')}")
    return caller


def _access(caller: Caller) -> Access:
    assert caller.access is not None  # web sessions always carry their user's rights
    return caller.access


def _actor(caller: Caller, request: web.Request) -> Actor:
    return Actor.of(_access(caller), request.remote)


def _local_path(raw: str) -> str:
    """``raw`` when it is a path on this site, else "/": no open redirect through the login form.

    Browsers read a backslash as a slash, so ``/\\evil.example`` would leave the site just like ``//``.
    """
    if not raw.startswith("/") or raw.startswith("//") or any(c == "\\" or ord(c) < 0x20 for c in raw):
        return "/"
    return raw


async def _form(request: web.Request) -> dict[str, Any]:
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError) as exc:  # bad charset, encoding or multipart framing
        raise BadRequest(f"malformed form data: {exc}") from exc
    check_fields(form.items(), "form field")
    return {key: form.get(key) for key in form}


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    return _page("login.html", next=_local_path(request.query.get("next", "/")))


@routes.post("/login")
async def login_submit(request: web.Request) -> web.Response:
    form = await _form(request)
    next_path = _local_path(str(form.get("next") or "/"))
    username = _text(form, "username")
    state = state_of(request)
    try:
        result = await state.limiter.logins.attempt(
            username, request.remote,
            lambda: state.call(accounts.login, username, _text(form, "password"), request.remote))
    except TooManyRequests as exc:
        page = _page("login.html", status=429, next=next_path, username=username, error=exc.message)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    if result is None:
        return _page("login.html", status=401, next=next_path, username=username,
                     error="wrong username or password")
    token, _ = result
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", path="/",
                        max_age=int(SESSION_LIFETIME.total_seconds()),
                        secure=state_of(request).settings.secure_cookies)
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request)
    check_csrf(caller, str((await _form(request)).get("csrf_token", "")))
    await state_of(request).call(accounts.logout, request.cookies[SESSION_COOKIE])
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request)
    items = await state_of(request).call(workflow_service.list_workflows, visible_projects(_access(caller)),
                                         _access(caller).workflows)
    return _page("home.html", caller=caller, workflows=items)


def _read_upload_form(form: dict[str, Any]) -> dict[str, Any]:
    """The form's fields as the REST body: JSON text fields parsed, the workflow from a file or a textarea."""
    body: dict[str, Any] = {"name": _text(form, "name").strip()}
    if _text(form, "pool").strip():
        body["pool"] = _text(form, "pool").strip()
    if _text(form, "timeout_seconds").strip():
        body["timeout_seconds"] = _number(_text(form, "timeout_seconds").strip())
    upload = form.get("workflow_file")
    raw_workflow = upload.file.read() if isinstance(upload, web.FileField) else b""
    if not raw_workflow:
        raw_workflow = _text(form, "workflow_text").encode()
    for field, raw in (("workflow", raw_workflow), ("inputs", _text(form, "inputs").encode()),
                       ("policy", _text(form, "policy").encode())):
        if not raw.strip():
            continue
        try:
            body[field] = parse_json(raw, field, field)
        except BadRequest as exc:
            raise _FormError(exc.message) from exc
    return body


def _number(raw: str) -> float | str:
    """A form's number as a number; text that is not one goes on as it is, for the service to refuse."""
    try:
        return float(raw)
    except ValueError:
        return raw


def _text(form: dict[str, Any], key: str) -> str:
    """A text field of the form; "" when absent (or sent as a file where text belongs)."""
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _kept_fields(form: dict[str, Any]) -> dict[str, str]:
    """What the user typed, shown again next to an error so a fix does not mean starting over."""
    return {key: _text(form, key) for key in ("name", "workflow_text", "inputs", "policy", "pool", "timeout_seconds")}


class _FormError(Exception):
    pass


@routes.post("/ui/workflows")
async def upload_workflow(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request, "publish")
    state = state_of(request)
    form = await _form(request)
    check_csrf(caller, str(form.get("csrf_token", "")))
    items = await state.call(workflow_service.list_workflows, visible_projects(_access(caller)),
                             _access(caller).workflows)
    try:
        body = _read_upload_form(form)
        summary, created = await state.call(push_workflow, state.registry, body, state.settings.pool,
                                            state.run_limits, access=_access(caller), actor=_actor(caller, request))
    except _FormError as exc:
        return _page("home.html", status=400, caller=caller, workflows=items, error=str(exc),
                     form=_kept_fields(form))
    except PlatformError as exc:
        return _page("home.html", status=exc.status, caller=caller, workflows=items, error=exc.message,
                     error_details=json.dumps(exc.details, indent=2) if exc.details else None,
                     form=_kept_fields(form))
    return _page("uploaded.html", status=201 if created else 200, caller=caller, created=created,
                 summary=summary, schema=json.dumps(summary["input_schema"], indent=2),
                 base_url=state.settings.public_url)


async def _admin_page(request: web.Request, caller: Caller, status: int = 200, **context: Any
                      ) -> web.Response:
    items = await state_of(request).call(review_queue, _access(caller))
    for item in items:
        item["graph_json"] = json.dumps(item["graph"], indent=2)
        item["inputs_json"] = json.dumps(item["inputs"], indent=2)
    return _page("admin.html", status=status, caller=caller, items=items, **context)


@routes.get("/admin")
async def admin(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request, "review")
    return await _admin_page(request, caller, decided=request.query.get("decided"))


@routes.post("/admin/review/{output_id}")
async def admin_decide(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request, "review")
    form = await _form(request)
    check_csrf(caller, str(form.get("csrf_token", "")))
    state = state_of(request)
    try:
        result = await state.call(decide_output, output_id_of(request), form.get("decision"), caller.name,
                                  _text(form, "note") or None, access=_access(caller), actor=_actor(caller, request))
    except PlatformError as exc:
        # e.g. another reviewer decided first (409): show the queue as it is now, with the reason.
        return await _admin_page(request, caller, exc.status, error=exc.message)
    state.waiters.notify(result["run"]["id"], webhook=True)
    raise web.HTTPSeeOther(f"/admin?decided={result['output_id']}")


def _policy_page_data(session: Any, access: Access, name: str, number: int) -> dict[str, Any]:
    version = visible_version(session, access, name, number)
    access.require("publish", version.workflow.project_id, name)
    return {**workflow_service.policy_to_dict(version),
            "versions": [v.number for v in version.workflow.versions]}


async def _policy_page(request: web.Request, caller: Caller, name: str, number: int, status: int = 200,
                       text: str | None = None, **context: Any) -> web.Response:
    data = await state_of(request).call(_policy_page_data, _access(caller), name, number)
    policy_text = text if text is not None else json.dumps(data["policy"], indent=2)
    return _page("policy.html", status=status, caller=caller, data=data, policy_text=policy_text, **context)


_POLICY_PAGE = f"/admin/workflows/{WORKFLOW_NAME_PATH}/versions/{{number}}/policy"


@routes.get(_POLICY_PAGE)
async def policy_editor(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request, "publish")
    number = parse_version_number(request.match_info["number"])
    return await _policy_page(request, caller, request.match_info["name"], number,
                              saved=request.query.get("saved"))


@routes.post(_POLICY_PAGE)
async def policy_save(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request, "publish")
    form = await _form(request)
    check_csrf(caller, str(form.get("csrf_token", "")))
    name, number = request.match_info["name"], parse_version_number(request.match_info["number"])
    text = _text(form, "policy")
    try:
        saved = await state_of(request).call(save_policy, name, number, parse_json(text, "the policy", "policy"),
                                             access=_access(caller), actor=_actor(caller, request))
    except (BadRequest, Unprocessable) as exc:
        # Shown next to the editor, which keeps what the admin typed; details.field names the key path.
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        return await _policy_page(request, caller, name, number, status=exc.status, text=text,
                                  error=exc.message, error_field=field)
    raise web.HTTPSeeOther(f"/admin/workflows/{name}/versions/{number}/policy?saved={saved['revision']}")


async def _calibration_page(request: web.Request, caller: Caller, name: str, status: int = 200,
                            **context: Any) -> web.Response:
    report = await state_of(request).call(calibration_for, _access(caller), name)
    for check in report["checks"]:
        check["chart"] = _histogram_chart(check)
    return _page("calibration.html", status=status, caller=caller, report=report, **context)


# The histogram is drawn as inline SVG (no script, nothing fetched): two bars per bin, markers at the cuts.
_CHART_WIDTH, _CHART_HEIGHT, _CHART_TOP = 400, 120, 10


def _histogram_chart(check: dict[str, Any]) -> dict[str, Any]:
    hist = check["histogram"]
    edges = hist["edges"]
    tallest = max([*hist["approved"], *hist["rejected"], 1])
    slot = _CHART_WIDTH / len(hist["approved"])
    usable = _CHART_HEIGHT - _CHART_TOP

    def bar(count: int, i: int, offset: float, kind: str) -> dict[str, Any]:
        height = usable * count / tallest
        return {"x": i * slot + offset, "y": _CHART_HEIGHT - height, "width": slot * 0.4, "height": height,
                "kind": kind, "count": count, "low": edges[i], "high": edges[i + 1]}

    bars = [bar(c, i, slot * 0.08, "approved") for i, c in enumerate(hist["approved"])]
    bars += [bar(c, i, slot * 0.52, "rejected") for i, c in enumerate(hist["rejected"])]
    low, high = edges[0], edges[-1]

    def marker(value: float, kind: str) -> dict[str, Any]:
        position = (value - low) / (high - low) if high > low else 0.0
        return {"x": max(0.0, min(1.0, position)) * _CHART_WIDTH, "kind": kind, "value": value}

    markers = [marker(band["cut"], name) for name, band in check["bands"].items() if name != "reject_or_review"]
    if check["suggestion"]:
        markers.append(marker(check["suggestion"]["threshold"], "suggested"))
    return {"width": _CHART_WIDTH, "height": _CHART_HEIGHT, "bars": bars, "markers": markers,
            "low": low, "high": high}


@routes.get(f"/admin/calibration/{WORKFLOW_NAME_PATH}")
async def calibration_page(request: web.Request) -> web.Response:
    caller = await _admin_or_login(request, "review")
    return await _calibration_page(request, caller, request.match_info["name"],
                                   applied=request.query.get("applied"), revision=request.query.get("revision"))


def _apply_suggestion(session: Any, access: Access, actor: Actor, name: str, number: int, check: str, band: str,
                      value: float) -> dict[str, Any]:
    version = visible_version(session, access, name, number)
    return save_policy(session, name, number, calibration.with_threshold(version.policy, check, band, value),
                       access=access, actor=actor)


@routes.post(f"/admin/calibration/{WORKFLOW_NAME_PATH}/apply")
async def calibration_apply(request: web.Request) -> web.Response:
    """Apply a suggested threshold: one band of one check of the version the page showed, saved through the
    same validation as the policy editor."""
    caller = await _admin_or_login(request, "publish")
    form = await _form(request)
    check_csrf(caller, str(form.get("csrf_token", "")))
    name = request.match_info["name"]
    try:
        number = parse_version_number(_text(form, "version"))
        value = parse_json(_text(form, "threshold"), "the threshold", "threshold")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"the threshold must be a number, got {_text(form, 'threshold')!r}")
        saved = await state_of(request).call(_apply_suggestion, _access(caller), _actor(caller, request), name,
                                             number, _text(form, "check"),
                                             _text(form, "band"), value)
    except PlatformError as exc:
        return await _calibration_page(request, caller, name, status=exc.status, error=exc.message)
    raise web.HTTPSeeOther(f"/admin/calibration/{name}?applied={quote(_text(form, 'check'))}"
                           f"&revision={saved['revision']}")


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
