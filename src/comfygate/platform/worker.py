"""What a worker does with one run: claim, execute and gate (again with new seeds when the policy asks),
store, record.

``RunProcessor`` holds what a worker process keeps warm (node registry, sentinel with its scoring models,
storage client, database engine, policy and history caches) and is built once per process.
``process(run_id, attempt)`` is idempotent: a duplicate or stale task finds the run not claimable and
returns. The loop's decisions (seeds, retries, choosing, audit sampling) live in ``gate_loop.py``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from comfygate.comfy_runtime import (
    Executor,
    NodeExecutionError,
    NodeRegistry,
    OutputImage,
    RunCanceled,
    RunContext,
    RunResult,
    WorkflowInvalid,
)
from comfygate.platform import gate_loop
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.gate_history import History, HistoryCache
from comfygate.platform.models import RunStatus, WorkflowVersion
from comfygate.platform.notify import Publisher
from comfygate.platform.runtime import node_registry
from comfygate.platform.services import runs as run_service
from comfygate.platform.services.uploads import input_key
from comfygate.platform.storage import InvalidStorageKey, Storage, StoredObjectMissing, open_storage
from comfygate.sentinel import (
    Candidate,
    ImageHash,
    Policy,
    RecentOutput,
    ResolvedPolicy,
    Scorers,
    Sentinel,
    phash_from_hex,
    phash_hex,
)
from comfygate.settings import Settings

__all__ = ["RunProcessor", "build_scorers"]

log = logging.getLogger(__name__)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def build_scorers(settings: Settings, registry: NodeRegistry) -> Scorers:
    """The scoring models named in settings, on the worker's device, living in its model pool when it has one
    (so they are evictable when idle like any other model). Nothing configured: no torch is imported."""
    if not (settings.clip_model or settings.clip_weights or settings.aesthetic_weights or settings.nsfw_weights):
        return Scorers(batch_size=settings.sentinel_batch_size)
    models = registry.models
    if models is not None:
        device, cache = str(models.device), models.pool
    else:
        from comfygate.comfy_runtime.diffusion.memory import pick_device

        device, cache = str(pick_device(settings.device)), None
    # A CLIP name without weights (or the reverse) raises ScorerUnavailable here: the worker does not start.
    return Scorers.from_paths(clip_model=settings.clip_model, clip_weights=settings.clip_weights,
                              aesthetic_weights=settings.aesthetic_weights, nsfw_weights=settings.nsfw_weights,
                              device=device, cache=cache, batch_size=settings.sentinel_batch_size)


@dataclass
class _Heartbeat:
    """Marks the run alive from a side thread and notices cancel requests."""

    factory: sessionmaker[Session]
    run_id: str
    attempt: int
    interval: float
    cancel_requested: threading.Event
    lost: threading.Event
    stop: threading.Event

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                with session_scope(self.factory) as session:
                    alive, cancel = run_service.heartbeat(session, self.run_id, self.attempt)
            except SQLAlchemyError as exc:
                # A database blip: keep beating. If it lasts past stale_after_seconds the watchdog re-queues
                # the run, and the next successful beat reports it lost.
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)
                continue
            if cancel:
                self.cancel_requested.set()
            if not alive:
                self.lost.set()
                return


class _RunLost(Exception):
    """The watchdog took the run back while we worked on it: nothing more is recorded."""


@dataclass
class _GatedOutput:
    output: OutputImage
    image_hash: ImageHash | None


@dataclass
class _Job:
    """One claimed run on its way through the gate loop."""

    run_id: str
    attempt: int  # the task attempt (the watchdog's count), not the gate loop's
    claimed: run_service.ClaimedRun
    policy: Policy
    resolved: ResolvedPolicy
    history: History
    prompt_text: str | None
    request_key: str
    seeds: list[gate_loop.SeedInput]
    input_dir: Path
    beat: _Heartbeat
    results: dict[int, RunResult]


class RunProcessor:
    def __init__(self, settings: Settings, registry: NodeRegistry | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.sessions = make_session_factory(self.engine)
        self.registry = registry or node_registry(settings)
        # One executor per process: its node cache lets a run reuse what an earlier run computed.
        self.executor = Executor(self.registry, cache_entries=settings.node_cache_entries)
        self.storage: Storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
        self.scorers = build_scorers(settings, self.registry)
        self.sentinel = Sentinel(self.scorers)
        self.publisher = Publisher(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # Keyed by revision: an edited policy is a new key, so no invalidation is needed.
        self._policies: dict[tuple[int, int], Policy] = {}
        self.history = HistoryCache(self.sessions)

    def _policy(self, session: Session, version_id: int, revision: int) -> Policy:
        policy = self._policies.get((version_id, revision))
        if policy is None:
            stored, stored_revision = session.execute(
                select(WorkflowVersion.policy, WorkflowVersion.policy_revision)
                .where(WorkflowVersion.id == version_id)).one()
            policy = Policy.from_dict(stored)
            # An edit between the claim and this read: that newer revision is the one we have.
            self._policies[(version_id, stored_revision)] = policy
        return policy

    def warm_up(self, preload: Sequence[str] = ()) -> None:
        """Load the scoring models and the ``preload`` model files (folder/name under the models dir) before
        taking runs, so the first runs do not pay for them (and a bad path stops the worker at start with a
        clear error rather than failing runs one by one)."""
        self.scorers.load()
        models = self.registry.models
        for entry in preload:
            if models is None:
                raise ValueError(f"cannot preload {entry!r}: this worker's node registry has no model library")
            start = time.perf_counter()
            models.preload(entry)
            log.info("preloaded %s in %.0f ms", entry, _ms(start))

    def models_report(self) -> list[dict[str, Any]]:
        """What is warm in this process's model pool: size, load time, loads and hits per model."""
        return self.registry.models.report() if self.registry.models is not None else []

    def process(self, run_id: str, attempt: int) -> str | None:
        """Run one attempt of a run; returns the final status, or None when the run was not ours."""
        with session_scope(self.sessions) as session:
            claimed = run_service.claim_run(session, run_id, attempt, self.name)
            if claimed is None:
                log.info("run %s attempt %s is not claimable (duplicate or stale task); skipped", run_id, attempt)
                return None
        try:
            with session_scope(self.sessions) as session:
                policy = self._policy(session, claimed.version_id, claimed.policy_revision)
            return self._execute_and_record(run_id, attempt, claimed, policy)
        except Exception as exc:
            # A bug of ours, not of the workflow: record it so the run never stays 'running', then re-raise
            # so the worker log carries the traceback.
            log.exception("run %s attempt %s failed inside comfygate", run_id, attempt)
            self._end_without_outputs(run_id, attempt, RunStatus.FAILED,
                                      {"message": f"internal error: {type(exc).__name__}: {exc}"}, {})
            raise
        finally:
            self.publisher.run_ended(run_id, webhook=claimed.has_webhook)

    @contextmanager
    def _heartbeat(self, run_id: str, attempt: int) -> Iterator[_Heartbeat]:
        beat = _Heartbeat(self.sessions, run_id, attempt, self.settings.heartbeat_seconds,
                          threading.Event(), threading.Event(), threading.Event())
        thread = threading.Thread(target=beat.loop, name=f"heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield beat
        finally:
            beat.stop.set()
            thread.join()

    def _execute_and_record(self, run_id: str, attempt: int, claimed: run_service.ClaimedRun, policy: Policy
                            ) -> str | None:
        timings: dict[str, Any] = {"queue_ms": claimed.queue_ms}
        # The heartbeat covers the whole loop (every generation, gate and upload): a slow CLIP pass or upload
        # must not look like a dead worker.
        with self._heartbeat(run_id, attempt) as beat, tempfile.TemporaryDirectory(prefix="cg-run-") as tmp:
            self._fetch_input_files(claimed.prompt, Path(tmp))
            history = self.history.get(claimed.workflow_id, claimed.version_id, claimed.policy_revision, policy)
            prompt_text = claimed.inputs.get(policy.prompt_input) if policy.prompt_input else None
            job = _Job(run_id, attempt, claimed, policy, policy.resolve(history.scores), history,
                       prompt_text if isinstance(prompt_text, str) else None,
                       gate_loop.request_key(claimed.prompt), gate_loop.seed_inputs(claimed.prompt, self.registry),
                       Path(tmp), beat, {})
            try:
                outcome = gate_loop.run_attempts(lambda number: self._generate(job, number),
                                                 retries=policy.retries, best_of=policy.best_of,
                                                 can_vary=bool(job.seeds),
                                                 later_attempt_errors=(NodeExecutionError, WorkflowInvalid))
                if beat.lost.is_set():
                    raise _RunLost()
            except RunCanceled as exc:
                where = f" during node {exc.node_id}" if exc.node_id else " between nodes"
                error = {"message": f"canceled at the caller's request{where}", "node_id": exc.node_id}
                return self._end_without_outputs(run_id, attempt, RunStatus.CANCELED, error, timings)
            except NodeExecutionError as exc:
                return self._end_without_outputs(run_id, attempt, RunStatus.FAILED, exc.to_dict(), timings)
            except WorkflowInvalid as exc:
                # E.g. this worker lacks a node pack the API server has: say so in ComfyUI's shape.
                error = {"message": exc.error["message"], "type": "workflow_invalid_on_worker",
                         "node_errors": exc.node_errors}
                return self._end_without_outputs(run_id, attempt, RunStatus.FAILED, error, timings)
            except _RunLost:
                log.warning("run %s attempt %s was taken back by the watchdog; result dropped", run_id, attempt)
                return None

        chosen = gate_loop.choose(outcome.attempts, policy.rank_by_check)
        records = self._records(job, chosen)
        gate = {"attempts": [a.to_dict([g.output.index for g in a.outputs]) for a in outcome.attempts],
                "chosen": chosen.number, "retry_stopped": outcome.retry_stopped}
        timings = self._loop_timings(timings, job, outcome.attempts, chosen)
        with session_scope(self.sessions) as session:
            status = run_service.finish_run(session, run_id, attempt, records, timings, gate)
        if status is None:
            log.warning("run %s attempt %s ended elsewhere; its result was not recorded", run_id, attempt)
            return None
        self.history.add(claimed.workflow_id,
                         [RecentOutput(r.sha256, phash_from_hex(r.phash), r.request_key,
                                       f"run {run_id} output {r.index}") for r in records if r.sha256 and r.phash],
                         [v.scores for a in outcome.attempts for v in a.verdicts])
        return status

    def _generate(self, job: _Job, number: int) -> gate_loop.Attempt:
        """Attempt ``number`` of the gate loop: run the prompt (with its seeds varied from attempt 2 on), gate
        every output in one batch, store them all."""
        if job.beat.lost.is_set():
            raise _RunLost()
        prompt, seeds = gate_loop.seeds_for_attempt(job.claimed.prompt, job.seeds, job.run_id, number)
        start = time.perf_counter()
        result = self.executor.run(prompt, RunContext(
            input_dir=job.input_dir, should_cancel=job.beat.cancel_requested.is_set, run_id=job.run_id))
        job.results[number] = result
        execute_ms = round(_ms(start) - result.model_load_ms, 3)

        start = time.perf_counter()
        candidates = [self._candidate(o, job) for o in result.outputs]
        verdicts = self.sentinel.evaluate_batch(candidates, job.resolved, job.history.recent)
        gated = [_GatedOutput(o, v.image_hash) for o, v in zip(result.outputs, verdicts, strict=True)]
        gate_ms = _ms(start)

        attempt = gate_loop.Attempt(number, seeds, verdicts, gated, execute_ms=execute_ms, gate_ms=gate_ms)
        start = time.perf_counter()
        for output in result.outputs:
            # One key per task attempt and gate attempt: a late, superseded task can never overwrite the bytes
            # another one recorded, and every generation stays available to reviewers.
            key = f"runs/{job.run_id}/{job.attempt}-{number}-{output.index}.png"
            self.storage.put(key, output.png, "image/png")
            attempt.storage_keys.append(key)
        attempt.store_ms = _ms(start)
        return attempt

    @staticmethod
    def _loop_timings(timings: dict[str, Any], job: _Job, attempts: Sequence[gate_loop.Attempt],
                      chosen: gate_loop.Attempt) -> dict[str, Any]:
        """Times summed over every generation of the loop; per-node times of the chosen one."""
        results = [job.results[a.number] for a in attempts]
        timings["model_load_ms"] = round(sum(r.model_load_ms for r in results), 3)
        timings["execute_ms"] = round(sum(a.execute_ms for a in attempts), 3)
        timings["sentinel_ms"] = round(sum(a.gate_ms for a in attempts), 3)
        timings["store_ms"] = round(sum(a.store_ms for a in attempts), 3)
        timings["total_ms"] = round(sum(timings.values()), 3)
        timings["gate_attempts"] = len(attempts)
        # Per node: how long each one ran, and which were answered from the worker's node cache.
        timings["node_ms"] = {node_id: round(ms, 3) for node_id, ms in job.results[chosen.number].node_ms.items()}
        timings["cached_nodes"] = job.results[chosen.number].cached_nodes
        timings["model_loads"] = [load for r in results for load in r.model_loads]
        return timings

    def _records(self, job: _Job, chosen: gate_loop.Attempt) -> list[run_service.OutputRecord]:
        sampled = gate_loop.sampled_for_audit(job.run_id, job.policy.review_sample_rate)
        records = []
        for gated, key, verdict in zip(chosen.outputs, chosen.storage_keys, chosen.verdicts, strict=True):
            output, image_hash = gated.output, gated.image_hash
            records.append(run_service.OutputRecord(
                index=output.index, node_id=output.node_id, filename=_download_name(output), storage_key=key,
                content_type="image/png", width=output.width, height=output.height, size_bytes=len(output.png),
                verdict=verdict.to_dict(), decision=verdict.decision,
                sha256=image_hash.sha256 if image_hash else None,
                phash=phash_hex(image_hash.phash) if image_hash else None,
                request_key=job.request_key, gate_attempt=chosen.number, sampled=sampled and verdict.passed))
        return records

    def _end_without_outputs(self, run_id: str, attempt: int, status: str, error: dict[str, Any],
                             timings: dict[str, Any]) -> str | None:
        with session_scope(self.sessions) as session:
            recorded = run_service.fail_run(session, run_id, attempt, status, error, timings)
        return status if recorded else None

    def _fetch_input_files(self, prompt: dict[str, Any], input_dir: Path) -> None:
        """Copy the LoadImage files this run names from storage into its input dir.

        A name storage does not hold (deleted, or a constant from the exported workflow that was never
        uploaded) is left out: LoadImage then fails naming its node and the file, which says more than we
        could here."""
        for node in prompt.values():
            name = node.get("inputs", {}).get("image") if node.get("class_type") == "LoadImage" else None
            if not isinstance(name, str) or (input_dir / name).exists():
                continue
            try:
                data = self.storage.get(input_key(name))
            except (StoredObjectMissing, InvalidStorageKey):
                continue
            (input_dir / name).write_bytes(data)

    @staticmethod
    def _candidate(output: OutputImage, job: _Job) -> Candidate:
        return Candidate(data=output.png, content_type="image/png", expected_width=output.width,
                         expected_height=output.height, pixels=output.pixels, prompt=job.prompt_text,
                         request_key=job.request_key)


def _download_name(output: OutputImage) -> str:
    # Goes into a Content-Disposition header: only characters that need no quoting.
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", output.filename_prefix) or "output"
    return f"{stem}_{output.index:05d}.png"
