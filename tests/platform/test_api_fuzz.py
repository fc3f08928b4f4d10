"""A schema-driven fuzz of the whole HTTP surface: every route the app registers gets generated requests (path
and query parameters, JSON, multipart and form bodies built from the route's expected shape, plus hostile
values: unpaired surrogates, NUL, huge strings and numbers, deep nesting, wrong types, unknown fields), with an
admin key, a plain key, a bad key, an admin session and no credentials, against the real server on SQLite and
on PostgreSQL. No answer may be a 5xx. A route missing from the catalogue fails the test, so new routes are
fuzzed from the day they are added."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import Server, running_server
from review_support import record_rejected_output

from comfygate.platform.api.app import create_app
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.runtime import node_registry
from comfygate.platform.services import accounts, review
from comfygate.platform.storage import LocalStorage
from comfygate.settings import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CARD = json.loads((WORKFLOWS / "gradient_card.json").read_text())
CARD_UI = json.loads((WORKFLOWS / "gradient_card.ui.json").read_text())
PASSWORD = "fuzz-password-1"
# Requests per route and database: the whole fuzz stays well under a minute per database.
EXAMPLES_PER_ROUTE = 20

# --- hostile values ---------------------------------------------------------------------------------------

SPECIAL_TEXT = ["\ud800", "\udfff", "a\ud83d", "\x00", "a\x00b", "\u202e", "", " ", "é", "../../etc/passwd",
                "%00", "'; DROP TABLE runs; --", "1" * 30, "²", "-1", "0", "true", "null"]
hostile_text = st.one_of(
    st.text(max_size=24),
    st.sampled_from(SPECIAL_TEXT),
    st.integers(60_000, 70_000).map(lambda n: "x" * n),  # huge, and short to print in a failure report
    st.tuples(st.text(max_size=6), st.sampled_from(SPECIAL_TEXT), st.text(max_size=6)).map("".join),
)
hostile_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**40, 1e308, -1e308, 0.5, 1e-320, 16384, 4096]),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.none() | st.booleans() | hostile_numbers | hostile_text
hostile_json = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


deep_json = st.integers(60, 300).map(_nested)
RAW_BODIES = [b"", b"{", b"\xff\xfe\x00", b'{"a": 1e400}', b'{"a": NaN}', b"[" * 5000, b'"\\ud800"',
              b'{"\\u0000": 1}', b"null", b"[]", b"1" * 5000]


# Query values are text that should be a number, an id or a name most of the time.
NUMBERISH = ["²", "٣", "-1", "0", "1e400", "99999999999999999999", "", "nan", "inf", "0x10", " 1", "1.5"]
query_values = st.sampled_from(NUMBERISH) | hostile_text | hostile_numbers.map(str)


def _encoded(text: str) -> str:
    """Percent-encoded UTF-8 (surrogates as the bytes a broken client would send), so any text travels."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# --- the catalogue: every route and the shape of what it expects ---------------------------------------------


@dataclass
class Route:
    body: str = "none"  # none | json | run (JSON or multipart) | form
    fields: dict[str, st.SearchStrategy] = field(default_factory=dict)  # the body's expected fields
    query: tuple[str, ...] = ()


def _workflow_values() -> st.SearchStrategy:
    return st.sampled_from([CARD, CARD_UI]) | hostile_json


POLICY_FIELDS = {"checks": st.just({"blank": {"reject": 0.5}}) | hostile_json, "retries": hostile_numbers,
                 "best_of": hostile_numbers, "prompt_input": hostile_text, "rank_by": hostile_text,
                 "review_sample_rate": hostile_numbers}
UPLOAD_FIELDS = {"name": st.sampled_from(["card", "fuzzed"]) | hostile_text, "workflow": _workflow_values(),
                 "inputs": st.just({"w": {"node": "1", "input": "width"}}) | hostile_json,
                 "policy": st.fixed_dictionaries({}, optional=POLICY_FIELDS) | hostile_json,
                 "pool": st.just("default") | hostile_text, "timeout_seconds": hostile_numbers,
                 "project": hostile_text}
RUN_FIELDS = {"inputs": st.fixed_dictionaries({}, optional={"1.width": hostile_numbers, "1.height": hostile_numbers,
                                                            "1.batch_size": hostile_numbers,
                                                            "8.filename_prefix": hostile_text}) | hostile_json,
              "webhook": st.just("http://127.0.0.1:9/hook") | hostile_text}
FORM_UPLOAD = {"name": hostile_text, "workflow_text": st.just(json.dumps(CARD)) | hostile_text,
               "inputs": hostile_text, "policy": hostile_text, "pool": hostile_text, "timeout_seconds": hostile_text}
DECISION = {"decision": st.sampled_from(["approve", "reject"]) | hostile_json, "note": hostile_text | hostile_json}
RUNS_QUERY = ("wait",)

CATALOGUE: dict[tuple[str, str], Route] = {
    ("GET", "/"): Route(),
    ("GET", "/admin"): Route(query=("decided",)),
    ("GET", "/admin/calibration/{name}"): Route(query=("applied", "revision")),
    ("POST", "/admin/calibration/{name}/apply"): Route("form", {"version": hostile_text, "threshold": hostile_text,
                                                              "check": hostile_text, "band": hostile_text}),
    ("POST", "/admin/review/{output_id}"): Route("form", {"decision": hostile_text, "note": hostile_text}),
    ("GET", "/admin/workflows/{name}/versions/{number}/policy"): Route(query=("saved",)),
    ("POST", "/admin/workflows/{name}/versions/{number}/policy"): Route("form", {"policy": hostile_text}),
    ("GET", "/healthz"): Route(),
    ("GET", "/ready"): Route(),
    ("GET", "/login"): Route(query=("next",)),
    ("POST", "/login"): Route("form", {"username": st.just("fuzzer") | hostile_text,
                                       "password": st.just(PASSWORD) | hostile_text, "next": hostile_text}),
    ("POST", "/logout"): Route("form"),
    ("POST", "/ui/workflows"): Route("form", FORM_UPLOAD),
    ("GET", "/v1/audit"): Route(query=("action", "project", "limit", "before")),
    ("GET", "/v1/calibration/{name}"): Route(),
    ("GET", "/v1/keys"): Route(),
    ("POST", "/v1/keys"): Route("json", {"name": hostile_text, "user": hostile_text, "admin": hostile_json,
                                         "scopes": hostile_json, "limits": hostile_json}),
    ("DELETE", "/v1/keys/{prefix}"): Route(),
    ("GET", "/v1/me"): Route(),
    ("GET", "/v1/node-packs"): Route(),
    ("GET", "/v1/nodes"): Route(query=("pool",)),
    ("GET", "/v1/nodes/{class_type}"): Route(query=("pool",)),
    ("GET", "/v1/pools"): Route(),
    ("GET", "/v1/projects"): Route(),
    ("POST", "/v1/projects"): Route("json", {"name": hostile_text}),
    ("PUT", "/v1/projects/{project}/members/{name}"): Route("json", {"role": st.sampled_from(
        ["admin", "developer", "reviewer", "caller"]) | hostile_json}),
    ("DELETE", "/v1/projects/{project}/members/{name}"): Route(),
    ("GET", "/v1/review"): Route(),
    ("POST", "/v1/review/{output_id}"): Route("json", DECISION),
    ("GET", "/v1/review/{output_id}/image"): Route(),
    ("GET", "/v1/runs/{run_id}"): Route(query=RUNS_QUERY),
    ("POST", "/v1/runs/{run_id}/cancel"): Route(),
    ("GET", "/v1/runs/{run_id}/outputs/{index}"): Route(),
    ("GET", "/v1/users"): Route(),
    ("POST", "/v1/users"): Route("json", {"username": hostile_text, "password": hostile_text, "admin": hostile_json,
                                          "projects": hostile_json}),
    ("GET", "/v1/webhooks"): Route(query=("run",)),
    ("GET", "/v1/workflows"): Route(),
    ("POST", "/v1/workflows"): Route("json", UPLOAD_FIELDS),
    ("GET", "/v1/workflows/{name}"): Route(),
    ("POST", "/v1/workflows/{name}/runs"): Route("run", RUN_FIELDS, RUNS_QUERY),
    ("GET", "/v1/workflows/{name}/versions/{number}"): Route(),
    ("GET", "/v1/workflows/{name}/versions/{number}/policy"): Route(),
    ("PUT", "/v1/workflows/{name}/versions/{number}/policy"): Route("json", POLICY_FIELDS),
    ("POST", "/v1/workflows/{name}/versions/{number}/runs"): Route("run", RUN_FIELDS, RUNS_QUERY),
    ("GET", "/v1/workflows/{name}/versions/{number}/source"): Route(),
}


def registered_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path template) of every route the app registers; HEAD goes with GET."""
    app = create_app(Settings(data_dir=tmp_path / "routes"))
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        # A parameterised path's formatter names its parameters without their patterns: "/v1/runs/{run_id}".
        found.add((route.method, info.get("path") or info.get("formatter")))
    return found


def test_every_registered_route_is_in_the_fuzz_catalogue(tmp_path):
    registered = registered_routes(tmp_path)
    assert registered - CATALOGUE.keys() == set(), "routes the fuzz does not know: add them to CATALOGUE"
    assert CATALOGUE.keys() - registered == set(), "routes in CATALOGUE the app no longer has"


# --- a server with something in it -------------------------------------------------------------------------


@dataclass
class World:
    server: Server
    path_values: dict[str, list[str]]
    session_cookie: str
    csrf_token: str


def _seed(database_url: str, server: Server, tmp_path: Path) -> World:
    assert server.call("POST", "/v1/workflows", json={"name": "card", "workflow": CARD}).status_code == 201
    blank = json.loads((WORKFLOWS / "blank.json").read_text())
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        accounts.create_user(session, "fuzzer", PASSWORD, is_admin=True)
    # A run the gate rejected (a review item with an output), as a worker records it.
    registry = node_registry(Settings(data_dir=tmp_path / "registry"))
    storage = LocalStorage(tmp_path / "api" / "files")  # the server's own (the data dir's default)
    storage.put("runs/x/0.png", b"\x89PNG\r\n\x1a\n", "image/png")
    output_id = record_rejected_output(sessions, registry, storage, blank)
    with session_scope(sessions) as session:
        run_id = review.get_output(session, output_id).run_id
    queued = server.call("POST", "/v1/workflows/card/runs", key="user", json={"inputs": {}})
    assert queued.status_code == 202, queued.text
    login = requests.post(server.url + "/login", data={"username": "fuzzer", "password": PASSWORD},
                          allow_redirects=False, timeout=30)
    cookie = login.cookies.get("comfygate_session")
    assert cookie, login.text
    with session_scope(sessions) as session:
        csrf = accounts.session_user(session, cookie).csrf_token
    engine.dispose()
    projects = [p.get("project") for p in server.call("GET", "/v1/projects").json().get("projects", [])]
    prefixes = [k.get("prefix") for k in server.call("GET", "/v1/keys").json().get("keys", []) if k.get("prefix")]
    values = {"name": ["card", "blank", "fuzzer", "nobody"], "number": ["1", "2", "0", "99999999999"],
              "run_id": [run_id, queued.json()["id"], "0" * 32], "index": ["0", "1", "9" * 12],
              "output_id": [str(output_id), "0", "9" * 12], "class_type": ["EmptyImage", "SaveImage", "a/b"],
              "prefix": prefixes or ["0" * 8], "project": projects or ["default"]}
    return World(server, values, cookie, csrf)


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    # Rate limits off: the fuzz sends requests as fast as it can, and a 429 would hide the route behind it.
    settings = Settings(data_dir=tmp_path / "api", database_url=database_url, watchdog_seconds=60,
                        rate_limit_requests_per_second=0, rate_limit_runs_per_minute=0,
                        rate_limit_concurrent_runs=0, rate_limit_runs_per_day=0)
    with running_server(settings) as server:
        yield _seed(database_url, server, tmp_path)


# --- one generated request ---------------------------------------------------------------------------------

CALLERS = ["admin", "user", "none", "bad", "session"]
bad_tokens = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF), min_size=1, max_size=40)


@st.composite
def requests_for(draw: Callable, method: str, template: str, route: Route, world: World) -> dict[str, Any]:
    path = template
    for name in [part[1:-1] for part in template.split("/") if part.startswith("{")]:
        value = draw(st.sampled_from(world.path_values.get(name, ["x"])) | hostile_text.filter(bool))
        path = path.replace("{" + name + "}", _encoded(value))
    query_names = st.sampled_from(route.query) if route.query else hostile_text
    query = draw(st.lists(st.tuples(query_names | hostile_text, query_values), max_size=3))
    if query:
        path += "?" + "&".join(f"{_encoded(k)}={_encoded(v)}" for k, v in query)
    caller = draw(st.sampled_from(CALLERS))
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    if caller in ("admin", "user"):
        headers["Authorization"] = f"Bearer {world.server.admin_key if caller == 'admin' else world.server.user_key}"
    elif caller == "bad":
        headers["Authorization"] = "Bearer " + draw(bad_tokens)
    elif caller == "session":
        cookies["comfygate_session"] = world.session_cookie
        headers["X-CSRF-Token"] = world.csrf_token
    sent: dict[str, Any] = {"method": method, "url": world.server.url + path, "headers": headers,
                            "cookies": cookies}
    if route.body == "none":
        return sent
    shaped = st.fixed_dictionaries({}, optional={k: v | hostile_json for k, v in route.fields.items()})
    extra = st.dictionaries(hostile_text, hostile_json, max_size=2)
    if route.body == "form":
        form = {**draw(extra.map(lambda d: {k: json.dumps(v) for k, v in d.items()})),
                **{k: v if isinstance(v, str) else json.dumps(v) for k, v in draw(shaped).items()}}
        form["csrf_token"] = draw(st.just(world.csrf_token) | hostile_text)
        if draw(st.booleans()):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            sent["data"] = "&".join(f"{_encoded(k)}={_encoded(v)}" for k, v in form.items()).encode()
        else:
            _multipart(sent, [(k, None, v.encode("utf-8", "surrogatepass")) for k, v in form.items()])
        return sent
    kind = draw(st.sampled_from(["shaped", "shaped", "shaped", "any", "deep", "raw"]
                                + (["multipart"] if route.body == "run" else [])))
    if kind == "raw":
        sent["data"] = draw(st.sampled_from(RAW_BODIES))
        return sent
    if kind == "multipart":
        _multipart(sent, [("inputs", None, json.dumps(draw(RUN_FIELDS["inputs"] | hostile_json)).encode()),
                          ("webhook", None, draw(hostile_text).encode("utf-8", "surrogatepass")),
                          (draw(st.just("1.width") | hostile_text), "a.png", draw(st.binary(max_size=64)))])
        return sent
    body = {"shaped": lambda: {**draw(extra), **draw(shaped)}, "any": lambda: draw(hostile_json),
            "deep": lambda: draw(deep_json)}[kind]()
    headers["Content-Type"] = "application/json"
    sent["data"] = json.dumps(body).encode()
    return sent


def _multipart(sent: dict[str, Any], parts: list[tuple[str, str | None, bytes]]) -> None:
    """A multipart/form-data body written by hand: HTTP clients refuse to send the part names a broken or
    hostile one would (surrogates, NUL), and the server must cope with them."""
    boundary = "fuzzboundary7MA4YWxkTrZu0gW"
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name.replace(chr(34), "%22")}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"
                      .encode("utf-8", "surrogatepass") + data + b"\r\n")
    sent["data"] = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    sent["headers"]["Content-Type"] = f"multipart/form-data; boundary={boundary}"


def _send(sent: dict[str, Any]) -> requests.Response:
    return requests.request(timeout=60, allow_redirects=False, **sent)


def _fuzz_route(world: World, method: str, template: str) -> None:
    route = CATALOGUE[(method, template)]
    methods = [method, "HEAD"] if method == "GET" else [method]

    @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(sent=requests_for(method, template, route, world), verb=st.sampled_from(methods))
    def one(sent: dict[str, Any], verb: str) -> None:
        response = _send({**sent, "method": verb})
        assert response.status_code < 500, (verb, sent["url"][:300], response.status_code, response.text[:500])

    one()


def _order(key: tuple[str, str]) -> tuple[int, str, str]:
    # What revokes the fuzz's own credentials or removes its seeds goes last.
    last = key[0] == "DELETE" or key[1] == "/logout"
    return (int(last), key[1], key[0])


def test_no_generated_request_gets_a_5xx(world):
    for method, template in sorted(CATALOGUE, key=_order):
        _fuzz_route(world, method, template)
