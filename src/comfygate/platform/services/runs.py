"""Runs: creation (validated before anything is queued), reading, cancelling, and the worker's state changes.

Every state change a worker makes is a conditional UPDATE on (id, attempt, status): a worker that lost its
run to the watchdog (it went silent and the run was re-queued) can no longer touch it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer, joinedload

from comfygate.comfy_runtime import (
    ExposedInput,
    InputsInvalid,
    NodeRegistry,
    UnknownNodeTypes,
    WorkflowInvalid,
    bind_inputs,
    validate_prompt,
)
from comfygate.comfy_runtime.paths import unsafe_name_reason
from comfygate.platform.errors import Conflict, NotFound, OutputWithheld, Unprocessable
from comfygate.platform.models import Run, RunOutput, RunStatus, Workflow, WorkflowVersion, new_id, utcnow
from comfygate.platform.pools import PoolSchemas, schemas_for_pool
from comfygate.platform.services import webhooks
from comfygate.platform.services.run_limits import DEFAULT_RUN_LIMITS, RunLimits, check_run_limits
from comfygate.platform.services.uploads import (
    CheckedImage,
    ImageLimits,
    check_input_image,
    decode_base64_image,
    store_input_image,
)
from comfygate.platform.services.workflows import exposed_inputs_of
from comfygate.platform.storage import Storage
from comfygate.platform.webhooks.targets import PUBLIC_ONLY, WebhookTargets

__all__ = ["create_run", "get_run", "run_to_dict", "gate_summary", "cancel_run", "claim_run", "heartbeat",
           "cancel_requested", "give_back", "redispatched", "finish_run", "fail_run", "announce", "check_webhook_url",
           "OutputRecord", "ClaimedRun", "output_url", "run_url", "released_output", "withheld_reason",
           "MAX_WEBHOOK_URL"]

MAX_WEBHOOK_URL = 2048


def check_webhook_url(value: Any, targets: WebhookTargets = PUBLIC_ONLY) -> str | None:
    """The run's webhook URL as given (None when there is none); Unprocessable naming ``webhook`` otherwise,
    also when its host resolves to an address ``targets`` (the operator's allowlist) refuses."""
    if value is None:
        return None

    def bad(why: str) -> Unprocessable:
        shown = webhooks.masked_url(str(value)) or ""
        return Unprocessable(f"webhook: {why}, got {shown[:100]!r}", details={"field": "webhook"})

    if not isinstance(value, str):
        raise bad("must be an http(s) URL string")
    if len(value) > MAX_WEBHOOK_URL:
        raise bad(f"must be at most {MAX_WEBHOOK_URL} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise bad(f"is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("must be an absolute http:// or https:// URL with a host")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise bad("must not contain spaces or control characters")
    refusal = targets.refusal(parts.hostname)
    if refusal is not None:
        raise Unprocessable(f"webhook: {refusal}", details={"field": "webhook"})
    return value


def create_run(session: Session, registry: NodeRegistry, storage: Storage, limits: ImageLimits,
               version: WorkflowVersion, raw_inputs: Any, files: Mapping[str, bytes],
               api_key_id: int | None, *, run_id: str | None = None, webhook: Any = None,
               run_limits: RunLimits = DEFAULT_RUN_LIMITS, webhook_targets: WebhookTargets = PUBLIC_ONLY) -> Run:
    webhook_url = check_webhook_url(webhook, webhook_targets)
    if not isinstance(raw_inputs, dict):
        raise Unprocessable("'inputs' must be an object of input name to value", details={"field": "inputs"})
    # The schemas of the version's pool: its nodes may be ones only that pool's ComfyUI has.
    pool = schemas_for_pool(session, registry, version.pool)
    try:
        exposed = exposed_inputs_of(pool.schemas, version)
    except WorkflowInvalid as exc:
        raise _pool_lacks(exc, pool) from exc
    known = {e.name for e in exposed}
    unknown_files = sorted(set(files) - known)
    if unknown_files:
        raise Unprocessable(f"uploaded file(s) {unknown_files} match no input of this workflow",
                            details={"inputs": unknown_files})
    values = dict(raw_inputs)
    images: list[CheckedImage] = []
    for item in exposed:
        if item.kind != "image":
            continue
        if item.name in files:
            data = files[item.name]
        elif item.name in values:
            data = decode_base64_image(item.name, values[item.name])
        else:
            raise Unprocessable(f"input {item.name!r}: an image is required (a file upload or base64)",
                                details={"errors": [{"input": item.name, "message": "required"}]})
        images.append(check_input_image(item.name, data, limits))
        values[item.name] = images[-1].name
    try:
        prompt = bind_inputs(version.graph, exposed, values)
    except InputsInvalid as exc:
        message = "; ".join(f"{e['input']}: {e['message']}" for e in exc.errors)
        raise Unprocessable(f"invalid inputs: {message}", details={"errors": exc.errors}) from exc
    # Every node of the prompt as it will run, fixed values too: the operator may have lowered a limit since
    # the upload.
    check_run_limits(prompt, exposed, run_limits, "inputs")
    try:
        # The graph as it will run: a node's own checks (e.g. a safe SaveImage.filename_prefix) apply to
        # values set per run too, so a bad one is refused here rather than failing in the worker.
        validate_prompt(prompt, pool.schemas, hooks=pool.hooks,
                        skip_file_check={(e.node_id, e.input_name) for e in exposed
                                         if e.kind == "image"}).raise_for_node_errors()
    except UnknownNodeTypes as exc:
        raise _pool_lacks(exc, pool) from exc
    except WorkflowInvalid as exc:
        raise _node_checks_failed(exc, exposed) from exc
    _check_output_names(prompt, exposed)
    # Stored only once every input is valid: a refused request leaves nothing behind.
    for image in images:
        store_input_image(storage, image)
    now = utcnow()
    # dispatched_at is set now: the caller sends the task right after this commits.
    run = Run(id=run_id or new_id(), version_id=version.id, project_id=version.workflow.project_id,
              status=RunStatus.QUEUED, inputs=values,
              prompt=prompt, api_key_id=api_key_id, queued_at=now, dispatched_at=now, webhook_url=webhook_url)
    session.add(run)
    session.flush()
    return run


def _pool_lacks(exc: WorkflowInvalid, pool: PoolSchemas) -> Unprocessable:
    """The pool's workers reported other nodes since the version was uploaded: not the caller's inputs."""
    return Unprocessable(f"this workflow version cannot run on pool {pool.pool!r} as it reports its nodes now: "
                         f"{exc}", details={**exc.to_dict(), "checked_against": pool.checked_against()})


def _check_output_names(prompt: Mapping[str, Any], exposed: list[ExposedInput]) -> None:
    """Every save node's ``filename_prefix`` must name a place inside the engine's output folder. The built-in
    SaveImage checks its own; a ComfyUI pool's nodes have no such check here, and ComfyUI would write a
    "../x" prefix beside the run's folder, so the platform refuses it for every node."""
    by_target = {(e.node_id, e.input_name): e.name for e in exposed}
    errors = []
    for node_id, node in prompt.items():
        prefix = node.get("inputs", {}).get("filename_prefix") if isinstance(node, dict) else None
        reason = unsafe_name_reason(prefix) if isinstance(prefix, str) else None
        if reason is not None:
            errors.append({"input": by_target.get((node_id, "filename_prefix"), ""), "node": node_id,
                           "message": f"filename_prefix {prefix[:100]!r} is not allowed: {reason}"})
    if errors:
        message = "; ".join(f"{e['input'] or 'node ' + e['node']}: {e['message']}" for e in errors)
        raise Unprocessable(f"invalid inputs: {message}", details={"errors": errors})


def _problem_text(problem: dict[str, Any]) -> str:
    # ComfyUI's messages are generic ("Custom validation failed for node"); the details say what failed.
    details = problem.get("details")
    return f"{problem['message']}: {details}" if details else problem["message"]


def _node_checks_failed(exc: WorkflowInvalid, exposed: list[ExposedInput]) -> Unprocessable:
    """The graph's node errors, each also named by the exposed input that set the bad value."""
    by_target = {(e.node_id, e.input_name): e.name for e in exposed}
    errors = [
        {"input": by_target.get((node_id, problem.get("extra_info", {}).get("input_name")), ""),
         "node": node_id, "message": _problem_text(problem)}
        for node_id, entry in exc.node_errors.items() for problem in entry.get("errors", [])
    ] or [{"input": "", "message": exc.error["message"]}]
    message = "; ".join(f"{e['input'] or 'node ' + e.get('node', '?')}: {e['message']}" for e in errors)
    return Unprocessable(f"invalid inputs: {message}", details={**exc.to_dict(), "errors": errors})


def get_run(session: Session, run_id: str) -> Run:
    # Reading a run is the hot path of every wait and poll: skip the large JSON columns it does not show
    # (the bound prompt, the version's graph and schema).
    run = session.get(Run, run_id, options=[
        defer(Run.prompt),
        joinedload(Run.version).load_only(WorkflowVersion.number, WorkflowVersion.workflow_id)
        .joinedload(WorkflowVersion.workflow).load_only(Workflow.name),
    ])
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def run_url(run_id: str) -> str:
    return f"/v1/runs/{run_id}"


def output_url(run_id: str, index: int) -> str:
    return f"{run_url(run_id)}/outputs/{index}"


def _output_to_dict(output: RunOutput) -> dict[str, Any]:
    body: dict[str, Any] = {
        "index": output.index,
        "id": output.id,
        "node_id": output.node_id,
        "filename": output.filename,
        "url": output_url(output.run_id, output.index),
        "content_type": output.content_type,
        "width": output.width,
        "height": output.height,
        "size_bytes": output.size_bytes,
        "released": output.released,
        "review": output.review_state,
        "sampled": output.sampled,
        "gate_attempt": output.gate_attempt,
        "verdict": output.verdict,
    }
    if not output.released:
        body["withheld_reason"] = withheld_reason(output)
    return body


def released_output(session: Session, run_id: str, index: int) -> RunOutput:
    """An output whose bytes the caller may have; OutputWithheld (with the reason) when the gate or a
    reviewer holds it back."""
    output = session.scalars(
        select(RunOutput).where(RunOutput.run_id == run_id, RunOutput.index == index)
    ).one_or_none()
    if output is None:
        get_run(session, run_id)  # 404 names the run when it is the run that is missing
        raise NotFound(f"run {run_id} has no output {index}")
    if not output.released:
        raise OutputWithheld(withheld_reason(output), details={"verdict": output.verdict,
                                                               "review": output.review_state})
    return output


def withheld_reason(output: RunOutput) -> str:
    reasons = "; ".join(output.verdict.get("reasons", [])) or "failed the quality gate"
    if output.review_state == "rejected":
        return f"rejected by a reviewer after the quality gate withheld it ({reasons})"
    return f"withheld by the quality gate, waiting for review: {reasons}"


def gate_summary(run: Run) -> dict[str, Any] | None:
    """What the gate loop did, for callers and reviewers: each attempt's seeds, decision and per-output
    reason codes and scores (full verdicts stay in the run row), which attempt was chosen, why retrying
    stopped. None for a run that never reached the gate."""
    if not run.gate:
        return None
    attempts = []
    for attempt in run.gate.get("attempts", []):
        outputs = [{"index": o["index"], "decision": o["verdict"].get("decision"),
                    "reason_codes": o["verdict"].get("reason_codes", []), "scores": o["verdict"].get("scores", {})}
                   for o in attempt.get("outputs", [])]
        attempts.append({
            "attempt": attempt["attempt"], "seeds": attempt.get("seeds", {}), "decision": attempt["decision"],
            "retryable": attempt.get("retryable", False),
            "reason_codes": sorted({code for o in outputs for code in o["reason_codes"]}),
            "outputs": outputs, "execute_ms": attempt.get("execute_ms"), "gate_ms": attempt.get("gate_ms"),
        })
    return {"attempts": attempts, "chosen": run.gate.get("chosen"), "retry_stopped": run.gate.get("retry_stopped"),
            "policy_revision": run.policy_revision}


def _error_for(run: Run, admin: bool) -> dict[str, Any] | None:
    # A node's traceback names server paths: for admins only.
    if run.error is None or admin or "traceback" not in run.error:
        return run.error
    return {k: v for k, v in run.error.items() if k != "traceback"}


def run_to_dict(run: Run, *, admin: bool = False) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "url": run_url(run.id),
        "workflow": run.version.workflow.name,
        "version": run.version.number,
        "inputs": run.inputs,
        "webhook": webhooks.masked_url(run.webhook_url),  # its credentials are for the receiver only
        "attempt": run.attempt,
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "engine": run.engine,
        "progress": run.progress if run.status == RunStatus.RUNNING else None,
        "outputs": [_output_to_dict(o) for o in run.outputs],
        "error": _error_for(run, admin),
        "timings": run.timings,
        "gate": gate_summary(run),
    }


def cancel_run(session: Session, run_id: str) -> Run:
    run = get_run(session, run_id)
    if run.status in RunStatus.TERMINAL:
        raise Conflict(f"run {run_id} has already ended ({run.status}); it cannot be canceled")
    canceled_now = session.execute(
        update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.CANCELED, finished_at=utcnow(), cancel_requested=True)
    ).rowcount
    if not canceled_now:
        # Running: the worker sees the flag between nodes and ends the run as canceled.
        session.execute(update(Run).where(Run.id == run_id).values(cancel_requested=True))
    session.refresh(run)
    if canceled_now:
        announce(session, run_id, webhooks.EVENT_ENDED)
    return run


def announce(session: Session, run_id: str, event: str) -> None:
    """Queue the run's webhook (if it has one) for ``event``, in the caller's transaction, with the run as it
    is now in this transaction."""
    session.flush()
    run = session.get(Run, run_id)
    if run is None or not run.webhook_url:
        return
    session.refresh(run)  # outputs and status written by UPDATE statements in this transaction
    webhooks.enqueue(session, run, event, run_to_dict(run))


# --- the worker's side -------------------------------------------------------------------------------


def _owned(run_id: str, attempt: int) -> Any:
    return (Run.id == run_id) & (Run.attempt == attempt) & (Run.status == RunStatus.RUNNING)


@dataclass(frozen=True)
class ClaimedRun:
    prompt: dict[str, Any]
    inputs: dict[str, Any]
    version_id: int
    queue_ms: float
    policy_revision: int  # the version's policy revision this attempt is gated with
    workflow_id: int
    has_webhook: bool  # whether the caller asked for a webhook (the end notice then wakes the senders)
    timeout_seconds: float = 600.0  # the version's: past it the attempt is interrupted and fails


def claim_run(session: Session, run_id: str, attempt: int, worker: str, engine: str = "builtin"
              ) -> ClaimedRun | None:
    """Take a queued run for this attempt; None when it is not ours to run (duplicate or stale message)."""
    now = utcnow()
    # The policy revision is taken in the same statement: the run is gated with the policy as it was when
    # it started, whatever edits come meanwhile.
    current_revision = (select(WorkflowVersion.policy_revision).where(WorkflowVersion.id == Run.version_id)
                        .scalar_subquery())
    row = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.QUEUED,
               Run.cancel_requested.is_(False))
        .values(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, worker=worker, engine=engine,
                progress=None, policy_revision=current_revision)
        .returning(Run.prompt, Run.inputs, Run.version_id, Run.queued_at, Run.policy_revision, Run.webhook_url,
                   _workflow_of_run(), _timeout_of_run())
    ).one_or_none()
    if row is None:
        return None
    return ClaimedRun(prompt=row.prompt, inputs=row.inputs, version_id=row.version_id,
                      queue_ms=round((now - row.queued_at).total_seconds() * 1000, 3),
                      policy_revision=row.policy_revision, workflow_id=int(row.workflow_id),
                      has_webhook=bool(row.webhook_url), timeout_seconds=float(row.timeout_seconds))


def _timeout_of_run() -> Any:
    return (select(WorkflowVersion.timeout_seconds).where(WorkflowVersion.id == Run.version_id)
            .scalar_subquery().label("timeout_seconds"))


def _workflow_of_run() -> Any:
    # A correlated subquery, so the run's UPDATE ... RETURNING also names its workflow: no second round trip.
    return (select(WorkflowVersion.workflow_id).where(WorkflowVersion.id == Run.version_id)
            .scalar_subquery().label("workflow_id"))


def heartbeat(session: Session, run_id: str, attempt: int, progress: dict[str, Any] | None = None
              ) -> tuple[bool, bool]:
    """Mark the run alive (and record where it is, when ``progress`` is given). Returns (still ours, cancel
    requested)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    row = session.execute(update(Run).where(_owned(run_id, attempt)).values(**values)
                          .returning(Run.cancel_requested)).one_or_none()
    if row is None:
        return False, cancel_requested(session, run_id)
    return True, bool(row.cancel_requested)


def cancel_requested(session: Session, run_id: str) -> bool:
    """Whether the caller asked to cancel: polled between heartbeats, so a cancel is noticed within a second."""
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def give_back(session: Session, run_id: str, attempt: int, max_attempts: int, reason: str) -> str | None:
    """The worker's engine died under the run: queue it again as attempt ``attempt + 1`` (returns "queued"), end
    it "canceled" when the caller asked for that meanwhile (a queued run with the flag would never be claimed),
    or fail it once ``max_attempts`` are used up ("failed"); None when the run is no longer ours."""
    canceled = session.execute(update(Run).where(_owned(run_id, attempt), Run.cancel_requested.is_(True)).values(
        status=RunStatus.CANCELED, finished_at=utcnow(),
        error={"message": f"canceled at the caller's request while its engine failed ({reason})",
               "type": "canceled"})).rowcount
    if canceled:
        announce(session, run_id, webhooks.EVENT_ENDED)
        return RunStatus.CANCELED
    if attempt >= max_attempts:
        failed = fail_run(session, run_id, attempt, RunStatus.FAILED,
                          {"message": f"{reason}; giving up after {attempt} attempts", "type": "engine_unavailable"})
        return RunStatus.FAILED if failed else None
    # Not when a cancel came in since the statement above: the watchdog ends such a queued run as canceled.
    requeued = session.execute(update(Run).where(_owned(run_id, attempt)).values(
        status=RunStatus.QUEUED, attempt=attempt + 1, worker=None, heartbeat_at=None, started_at=None,
        progress=None, dispatched_at=utcnow())).rowcount
    return RunStatus.QUEUED if requeued else None


def redispatched(session: Session, run_id: str, attempt: int) -> bool:
    """A worker sends a run it did not claim back to the queue: mark it sent now (so the watchdog does not add
    another message for it). False when it is no longer queued for that attempt (canceled, claimed elsewhere)."""
    return bool(session.execute(update(Run).where(
        Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.QUEUED,
        Run.cancel_requested.is_(False)).values(dispatched_at=utcnow())).rowcount)


@dataclass(frozen=True)
class OutputRecord:
    """One output of the chosen gate attempt, as the worker stored it."""

    index: int
    node_id: str
    filename: str
    storage_key: str
    content_type: str
    width: int | None
    height: int | None
    size_bytes: int
    verdict: dict[str, Any]
    decision: str  # the verdict's: pass | review | reject
    sha256: str | None = None
    phash: str | None = None  # 16 hex digits
    request_key: str | None = None
    gate_attempt: int = 1
    sampled: bool = False  # a passing output also sent to review (audit); it stays released


def _status_of(outputs: list[OutputRecord]) -> str:
    decisions = {o.decision for o in outputs}
    if "reject" in decisions:
        return RunStatus.REJECTED
    if "review" in decisions:
        return RunStatus.HELD
    return RunStatus.SUCCEEDED


def finish_run(session: Session, run_id: str, attempt: int, outputs: list[OutputRecord],
               timings: dict[str, Any], gate: dict[str, Any] | None = None) -> str | None:
    """Record outputs, the gate loop's record and the final status: any rejected output → rejected, else any
    output in a review band → held (both withheld, waiting for review), else succeeded. The webhook of a
    succeeded run is queued in the same transaction; that of a rejected or held one waits for the review.
    Returns the status, or None if the run is no longer ours."""
    status = _status_of(outputs)
    ended = session.execute(
        update(Run).where(_owned(run_id, attempt))
        .values(status=status, finished_at=utcnow(), timings=timings, error=None, gate=gate)
        .returning(Run.webhook_url, _workflow_of_run())
    ).one_or_none()
    if ended is None:
        return None
    workflow_id = ended.workflow_id
    for o in outputs:
        passed = o.decision == "pass"
        session.add(RunOutput(
            run_id=run_id, workflow_id=workflow_id, index=o.index, node_id=o.node_id, filename=o.filename,
            storage_key=o.storage_key, content_type=o.content_type, width=o.width, height=o.height,
            size_bytes=o.size_bytes, verdict=o.verdict, passed=passed, released=passed,
            review_state="pending" if not passed or o.sampled else None, sampled=passed and o.sampled,
            sha256=o.sha256, phash=o.phash, request_key=o.request_key, gate_attempt=o.gate_attempt,
        ))
    if status in RunStatus.ENDED_WITHOUT_REVIEW and ended.webhook_url:
        announce(session, run_id, webhooks.EVENT_ENDED)
    return status


def fail_run(session: Session, run_id: str, attempt: int, status: str, error: dict[str, Any],
             timings: dict[str, Any] | None = None) -> bool:
    """End the run without outputs (failed or canceled), queueing its webhook in the same transaction."""
    ended = session.execute(
        update(Run).where(_owned(run_id, attempt))
        .values(status=status, finished_at=utcnow(), error=error, timings=timings)
        .returning(Run.webhook_url)
    ).one_or_none()
    if ended is not None and ended.webhook_url:
        announce(session, run_id, webhooks.EVENT_ENDED)
    return ended is not None
