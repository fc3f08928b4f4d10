"""Command line: serve | worker | db upgrade | keys | users | projects | workflows push|convert|validate | run |
score | settings."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import mimetypes
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfygate.accounts_cli import add_account_commands
from comfygate.settings import SETTINGS, Settings, SettingsError

if TYPE_CHECKING:
    from comfygate.sentinel import Policy

__all__ = ["main"]


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.server import serve

    with_worker = settings.embedded_worker if args.worker is None else args.worker
    return serve(settings, with_worker=bool(with_worker))


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.worker_main import run_worker

    if args.pool:
        settings = settings.replace(pool=args.pool)
    if args.health_port is not None:
        settings = settings.replace(worker_health_port=args.health_port)
    # The engine flags override their settings; naming a ComfyUI implies --engine comfyui.
    engine_flags = {"comfyui_url": args.comfyui_url, "comfyui_dir": args.comfyui_dir,
                    "comfyui_python": args.comfyui_python, "comfyui_args": args.comfyui_args}
    settings = settings.replace(**{name: value for name, value in engine_flags.items() if value is not None})
    if args.engine:
        settings = settings.replace(engine=args.engine)
    elif args.comfyui_url or args.comfyui_dir:
        settings = settings.replace(engine="comfyui")
    if settings.engine == "comfyui" and not (settings.comfyui_url or settings.comfyui_dir):
        print("comfygate worker: --engine comfyui needs --comfyui-url URL (attach to a running ComfyUI) or "
              "--comfyui-dir DIR (start one from that install)", file=sys.stderr)
        return 2
    return run_worker(settings, concurrency=args.concurrency or settings.worker_concurrency, preload=args.preload)


def _db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.platform.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print("database is up to date")
    return 0


def _read_json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{what} {path}: {exc}") from exc


def _workflows_push(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.client import ApiClient

    body: dict[str, Any] = {"name": args.name, "workflow": _read_json_file(args.file, "workflow")}
    if args.inputs:
        body["inputs"] = _read_json_file(args.inputs, "inputs spec")
    if args.policy:
        body["policy"] = _read_json_file(args.policy, "policy")
    if args.pool:
        body["pool"] = args.pool
    if args.timeout is not None:
        body["timeout_seconds"] = args.timeout
    status, answer = ApiClient(args.url or settings.public_url, args.key or settings.api_key).post(
        "/v1/workflows", body)
    print(json.dumps(answer, indent=2))
    return 0 if status in (200, 201) else 1


def _offline_schemas(settings: Settings, object_info: str | None) -> Any:
    """Node schemas for convert/validate: another server's /object_info (file or URL), else the local runtime."""
    from comfygate.comfy_runtime import load_object_info
    from comfygate.platform.runtime import node_registry

    return load_object_info(object_info) if object_info else node_registry(settings)


def _check_workflow_file(settings: Settings, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(loaded workflow or None, ComfyUI-shaped error body or {}) for convert and validate."""
    from comfygate.comfy_runtime import ComfyRuntimeError, WorkflowInvalid, load_valid_workflow

    document = _read_json_file(args.file, "workflow")
    try:
        return load_valid_workflow(document, _offline_schemas(settings, args.object_info)), {}
    except WorkflowInvalid as exc:
        return None, exc.to_dict()
    except ComfyRuntimeError as exc:  # a malformed document or object_info: ComfyUI's invalid_prompt shape
        return None, {"error": {"type": "invalid_prompt", "message": str(exc), "details": "", "extra_info": {}},
                      "node_errors": {}}


def _workflows_convert(settings: Settings, args: argparse.Namespace) -> int:
    loaded, error = _check_workflow_file(settings, args)
    if loaded is None:
        print(json.dumps(error, indent=2), file=sys.stderr)
        return 1
    print(json.dumps(loaded.prompt, indent=2))
    return 0


def _workflows_validate(settings: Settings, args: argparse.Namespace) -> int:
    loaded, error = _check_workflow_file(settings, args)
    if loaded is None:
        print(json.dumps({"valid": False, **error}, indent=2))
        return 1
    print(json.dumps({"valid": True, "source_format": loaded.source_format, "node_errors": {}}, indent=2))
    return 0


def _parse_input(pair: str) -> tuple[str, Any]:
    """k=v: v as JSON when it parses (numbers, booleans), else a string; k=@file sends a file as base64."""
    name, sep, raw = pair.partition("=")
    if not sep or not name:
        raise SystemExit(f"--input {pair!r}: expected NAME=VALUE")
    if raw.startswith("@"):
        return name, base64.b64encode(Path(raw[1:]).read_bytes()).decode()
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.client import ApiClient

    inputs = dict(_parse_input(pair) for pair in args.input)
    path = (f"/v1/workflows/{args.name}/versions/{args.version}/runs" if args.version
            else f"/v1/workflows/{args.name}/runs")
    if args.wait:
        path += f"?wait={args.wait}"
    status, answer = ApiClient(args.url or settings.public_url, args.key or settings.api_key).post(
        path, {"inputs": inputs})
    print(json.dumps(answer, indent=2))
    return 0 if status in (200, 202) and answer.get("status") not in ("failed", "rejected", "held") else 1


class _UsageError(Exception):
    """A bad argument of ``comfygate score`` (unreadable file, invalid policy); the message names it."""


def _score_policy(path: str | None) -> Policy:
    """The policy in ``path`` (v2 JSON), or the default policy; ``_UsageError`` naming the file and key path."""
    from comfygate.sentinel import Policy, PolicyInvalid

    if path is None:
        return Policy.default()
    try:
        document = json.loads(Path(path).read_bytes())  # bytes: json finds the encoding, or says it is not JSON
    except OSError as exc:
        raise _UsageError(f"cannot read policy {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _UsageError(f"policy {path} is not JSON: {exc}") from exc
    try:
        return Policy.from_dict(document)
    except PolicyInvalid as exc:
        where = exc.path or "(the document)"
        raise _UsageError(f"policy {path}: {where}: {exc.message}") from exc


def _detected_content_type(path: str, data: bytes) -> str:
    """The media type of the bytes themselves (read from their header), so the decode check judges the file as
    it is; a file Pillow does not recognise at all gets its extension's type, and its verdict says it does not
    decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        found = None
    if found:
        return Image.MIME.get(found, f"image/{found.lower()}")
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _scoring_device(settings: Settings) -> str:
    """The device setting as a torch device name; "auto" asks torch only when a scoring model will load."""
    setting = settings.device.strip().lower() or "auto"
    if setting != "auto":
        return setting
    if not settings.clip_model:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _score(settings: Settings, args: argparse.Namespace) -> int:
    from comfygate.sentinel import Candidate, RecentOutput, Scorers, ScorerUnavailable, Sentinel

    try:
        policy = _score_policy(args.policy)
        for path in args.images:  # every file must be readable before any verdict is printed
            try:
                Path(path).open("rb").close()
            except OSError as exc:
                raise _UsageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    except _UsageError as exc:
        print(f"comfygate score: {exc}", file=sys.stderr)
        return 2

    batch_size = max(1, settings.sentinel_batch_size)
    resolved = policy.resolve({})  # no score history here: percentile bands use their fallback
    earlier: list[RecentOutput] = []  # newest first: the history the duplicate check compares with
    all_passed = True
    try:
        scorers = Scorers.from_paths(settings.clip_model, settings.clip_weights, settings.aesthetic_weights,
                                     settings.nsfw_weights, _scoring_device(settings), batch_size=batch_size)
        sentinel = Sentinel(scorers, max_pixels=settings.max_image_pixels)
        for start in range(0, len(args.images), batch_size):
            paths = args.images[start:start + batch_size]
            # Each image is its own request (its position), so the same file given twice is a duplicate.
            candidates = []
            for index, path in enumerate(paths, start):
                data = Path(path).read_bytes()
                candidates.append(Candidate(data, _detected_content_type(path, data), prompt=args.prompt,
                                            request_key=str(index)))
            verdicts = sentinel.evaluate_batch(candidates, resolved, earlier[:policy.duplicate_window])
            for path, candidate, verdict in zip(paths, candidates, verdicts, strict=True):
                print(json.dumps({"image": path, **verdict.to_dict()}), flush=True)
                all_passed = all_passed and verdict.passed
                hashed = verdict.image_hash
                if hashed is not None:
                    earlier.insert(0, RecentOutput(hashed.sha256, hashed.phash, candidate.request_key, path))
    except ScorerUnavailable as exc:
        # A scoring model named in the settings cannot be used: that is not a verdict on the images.
        print(f"comfygate score: {exc}", file=sys.stderr)
        return 2
    return 0 if all_passed else 1


def _shown(name: str, value: Any) -> str:
    """A setting's value for printing: secrets (API key, webhook signing key) and passwords in URLs are masked."""
    if name in ("api_key", "webhook_secret"):
        return "(set)" if value else "(not set)"
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", repr(value))


def _settings(settings: Settings, args: argparse.Namespace) -> int:
    for spec in SETTINGS:
        print(f"{spec.env}\n    {spec.help}\n    now: {_shown(spec.name, getattr(settings, spec.name))}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfygate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the API server and web UI (and, embedded, a local worker)")
    serve.add_argument("--worker", dest="worker", action="store_true", default=None,
                       help="also start a local worker (default with the embedded broker)")
    serve.add_argument("--no-worker", dest="worker", action="store_false", help="do not start a local worker")
    serve.set_defaults(handler=_serve)

    worker = sub.add_parser("worker", help="start a Celery worker that executes runs")
    worker.add_argument("--concurrency", type=int, default=0, help="runs at once (default from settings)")
    worker.add_argument("--pool", default="", help="pool name: consume queue pool.<name>")
    worker.add_argument("--preload", nargs="+", default=[], metavar="FILE",
                        help="model files to load before taking runs, as folder/name under the models dir "
                             "(checkpoints/sd15.safetensors); the worker reports ready only after")
    worker.add_argument("--health-port", type=int, default=None,
                        help="serve the readiness probe (GET /ready, GET /models) on this port")
    worker.add_argument("--engine", choices=("builtin", "comfyui"), default=None,
                        help="what runs the prompts (default COMFYGATE_ENGINE, builtin)")
    worker.add_argument("--comfyui-url", default=None, metavar="URL",
                        help="attach to the ComfyUI server at URL (http://127.0.0.1:8188)")
    worker.add_argument("--comfyui-dir", type=Path, default=None, metavar="DIR",
                        help="start ComfyUI from this install (its main.py) on 127.0.0.1 and a free port; "
                             "with --comfyui-url: only where its input/output/temp folders are")
    worker.add_argument("--comfyui-python", type=Path, default=None, metavar="PATH",
                        help="the Python that runs ComfyUI (default <dir>/.venv/bin/python, else this one)")
    worker.add_argument("--comfyui-args", default=None, metavar="ARGS",
                        help='more arguments for ComfyUI\'s main.py, e.g. "--highvram"')
    worker.set_defaults(handler=_worker)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations").set_defaults(handler=_db_upgrade)

    add_account_commands(sub)

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default="", help="server URL (default COMFYGATE_PUBLIC_URL)")
        p.add_argument("--key", default="", help="API key (default COMFYGATE_API_KEY)")

    wf = sub.add_parser("workflows", help="workflows")
    wf_sub = wf.add_subparsers(dest="workflows_command", required=True)
    push = wf_sub.add_parser("push", help="upload a workflow (API or UI format) as a new version")
    push.add_argument("file")
    push.add_argument("--name", required=True)
    push.add_argument("--inputs", help="JSON file naming the exposed inputs")
    push.add_argument("--policy", help="JSON file with the quality-gate policy")
    push.add_argument("--pool", metavar="NAME",
                      help="the worker pool that runs it, checked against the nodes and model files its workers "
                           "report (default: the server's pool)")
    push.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="run attempts longer than this are interrupted and fail (1 to 86400; default 600)")
    client_options(push)
    push.set_defaults(handler=_workflows_push)

    def offline_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="workflow JSON, API or UI format")
        p.add_argument("--object-info", dest="object_info", metavar="FILE_OR_URL",
                       help="node schemas of another runtime: an /object_info JSON file or a server URL "
                            "(default: this install's nodes and node packs)")

    convert = wf_sub.add_parser("convert", help="print the API-format prompt of a workflow (errors: exit 1)")
    offline_options(convert)
    convert.set_defaults(handler=_workflows_convert)
    validate = wf_sub.add_parser("validate", help="print the validation verdict as JSON (exit 0 valid, 1 invalid)")
    offline_options(validate)
    validate.set_defaults(handler=_workflows_validate)

    run = sub.add_parser("run", help="run a workflow")
    run.add_argument("name")
    run.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                     help="an input value (JSON or text; @file sends an image)")
    run.add_argument("--version", type=int, default=0)
    run.add_argument("--wait", type=float, nargs="?", const=60.0, default=0.0,
                     help="wait up to N seconds (default 60) for the result")
    client_options(run)
    run.set_defaults(handler=_run)

    score = sub.add_parser(
        "score", help="judge image files with the sentinel: one JSON verdict per line (exit 0 all pass, "
                      "1 any rejected or held for review, 2 bad usage)",
        description="Judge image files with the sentinel, using the scoring models named in the settings "
                    "(COMFYGATE_CLIP_MODEL, COMFYGATE_CLIP_WEIGHTS, COMFYGATE_AESTHETIC_WEIGHTS, "
                    "COMFYGATE_NSFW_WEIGHTS). Prints one JSON line per image. Each image is also compared with "
                    "the images before it for duplicates.")
    score.add_argument("images", nargs="+", metavar="IMAGE", help="image files to judge")
    score.add_argument("--prompt", default=None, metavar="TEXT",
                       help="the prompt the images were made for (prompt-alignment check)")
    score.add_argument("--policy", default=None, metavar="FILE",
                       help="policy JSON (the v2 format, see README); default: the default policy")
    score.set_defaults(handler=_score)

    sub.add_parser("settings", help="list the settings and their values").set_defaults(handler=_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"comfygate: {exc}", file=sys.stderr)
        return 2
    return int(args.handler(settings, args))


if __name__ == "__main__":
    sys.exit(main())
