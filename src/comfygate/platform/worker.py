"""What a worker does with one run: claim, run on its engine and gate (again with new seeds when the policy
asks), store, record.

``RunProcessor`` holds what a worker process keeps warm (its engine, the sentinel with its scoring models,
storage client, database engine, policy and history caches) and is built once per process.
``process(run_id, attempt)`` is idempotent: a duplicate or stale task finds the run not claimable and
returns. The loop's decisions (seeds, retries, choosing, audit sampling) live in ``gate_loop.py``; the engines
(built-in executor, a real ComfyUI) in ``engines/``; the side thread that beats and notices cancels in
``run_watch.py``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import NodeExecutionError, NodeRegistry, WorkflowInvalid
from comfygate.platform import gate_loop
from comfygate.platform.db import make_engine, make_session_factory, session_scope, unit_of_work_retried
from comfygate.platform.engines import (
    FILE_INPUTS,
    Capabilities,
    Engine,
    EngineJob,
    EngineOutput,
    EngineResult,
    EngineUnavailable,
    OutOfMemory,
    RunInterrupted,
    create_engine,
)
from comfygate.platform.engines.media import extension_for
from comfygate.platform.gate_history import History, HistoryCache
from comfygate.platform.models import RunStatus, WorkflowVersion
from comfygate.platform.notify import Publisher
from comfygate.platform.run_watch import RunWatch, watching
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


class _RunLost(Exception):
    """The watchdog took the run back while we worked on it: nothing more is recorded."""


# How long a task waits for a restarting engine before it goes back to the queue for another worker.
ENGINE_READY_WAIT_SECONDS = 10.0


@dataclass
class _GatedOutput:
    output: EngineOutput
    index: int
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
    input_files: dict[str, bytes]
    watch: RunWatch
    deadline: float
    results: dict[int, EngineResult]


class RunProcessor:
    def __init__(self, settings: Settings, registry: NodeRegistry | None = None, engine: Engine | None = None
                 ) -> None:
        self.settings = settings
        self.database = make_engine(settings.database_url)
        self.sessions = make_session_factory(self.database)
        self.registry = registry or node_registry(settings)
        # One engine per process: the built-in one keeps its node cache and model pool warm across runs.
        self.engine: Engine = engine or create_engine(settings, self.registry)
        self.storage: Storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
        self.scorers = build_scorers(settings, self.registry)
        self.sentinel = Sentinel(self.scorers)
        self.publisher = Publisher(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # Keyed by revision: an edited policy is a new key, so no invalidation is needed.
        self._policies: dict[tuple[int, int], Policy] = {}
        self.history = HistoryCache(self.sessions)
        # Where the engine's node schemas come from for seed ranges: its capabilities, read once at start.
        self._object_info: Callable[[str], dict[str, Any]] = self._registry_object_info
        self.give_back: Callable[[str, int], None] | None = None  # re-sends a run handed back (worker_main)
        self._first_capabilities: Capabilities | None = None

    def _registry_object_info(self, class_type: str) -> dict[str, Any]:
        try:
            return self.registry.object_info(class_type)
        except KeyError:
            return {}

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
        """Start the engine (a supervised ComfyUI answers first), load the scoring models and the ``preload``
        model files (folder/name under the models dir) before taking runs, so the first runs do not pay for
        them (and a bad path stops the worker at start with a clear error rather than failing runs one by one)."""
        self.engine.start()
        if self.engine.name != "builtin":
            self._first_capabilities = self.engine.capabilities()
            object_info = self._first_capabilities.object_info
            self._object_info = lambda class_type: object_info.get(class_type, {})
        self.scorers.load()
        models = self.registry.models
        for entry in preload:
            if models is None or self.engine.name != "builtin":
                raise ValueError(f"cannot preload {entry!r}: preloading is for the builtin engine's model pool "
                                 "(a ComfyUI engine loads its models itself)")
            start = time.perf_counter()
            models.preload(entry)
            log.info("preloaded %s in %.0f ms", entry, _ms(start))

    def capabilities(self) -> Capabilities:
        """The engine's node schemas and model files; the first call after warm_up reuses what it read (a
        ComfyUI's /object_info is large)."""
        first, self._first_capabilities = self._first_capabilities, None
        return first if first is not None else self.engine.capabilities()

    def close(self) -> None:
        self.engine.close()

    def models_report(self) -> list[dict[str, Any]]:
        """What is warm in this process's model pool: size, load time, loads and hits per model."""
        return self.registry.models.report() if self.registry.models is not None else []

    def process(self, run_id: str, attempt: int) -> str | None:
        """Run one attempt of a run; returns the final status, or None when the run was not ours."""
        if not self._engine_ready_within(ENGINE_READY_WAIT_SECONDS) and self.give_back is not None:
            # Our ComfyUI is down or restarting: leave the run unclaimed (no attempt spent) for a worker whose
            # engine answers; the message goes back to the pool's queue, marked sent so the watchdog adds none.
            with session_scope(self.sessions) as session:
                still_queued = run_service.redispatched(session, run_id, attempt)
            if still_queued:
                log.warning("engine %s is not ready; run %s goes back to the queue unclaimed", self.engine.name,
                            run_id)
                self.give_back(run_id, attempt)
            return None
        # Retried through a database outage: a message whose claim failed would be gone from the broker.
        claimed = unit_of_work_retried(
            self.sessions, lambda session: run_service.claim_run(session, run_id, attempt, self.name,
                                                                 self.engine.name), what=f"claiming run {run_id}")
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

    def _engine_ready_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        pause = threading.Event()  # waited on, never set: a pause that is no busy loop
        while not self.engine.is_ready():
            if time.monotonic() >= deadline:
                return False
            pause.wait(0.1)
        return True

    def _execute_and_record(self, run_id: str, attempt: int, claimed: run_service.ClaimedRun, policy: Policy
                            ) -> str | None:
        timings: dict[str, Any] = {"queue_ms": claimed.queue_ms}
        # The watch covers the whole loop (every generation, gate and upload): a slow CLIP pass or upload
        # must not look like a dead worker.
        with watching(self.sessions, run_id, attempt, self.settings.heartbeat_seconds) as watch:
            history = self.history.get(claimed.workflow_id, claimed.version_id, claimed.policy_revision, policy)
            prompt_text = claimed.inputs.get(policy.prompt_input) if policy.prompt_input else None
            job = _Job(run_id, attempt, claimed, policy, policy.resolve(history.scores), history,
                       prompt_text if isinstance(prompt_text, str) else None,
                       gate_loop.request_key(claimed.prompt),
                       gate_loop.seed_inputs(claimed.prompt, self._object_info),
                       self._input_files(claimed.prompt), watch,
                       time.monotonic() + claimed.timeout_seconds, {})
            try:
                outcome = gate_loop.run_attempts(lambda number: self._generate(job, number),
                                                 retries=policy.retries, best_of=policy.best_of,
                                                 can_vary=bool(job.seeds),
                                                 later_attempt_errors=(NodeExecutionError, WorkflowInvalid))
                if watch.lost.is_set():
                    raise _RunLost()
            except RunInterrupted as exc:
                if exc.reason == "lost":
                    log.warning("run %s attempt %s was taken back by the watchdog; its engine stopped it",
                                run_id, attempt)
                    return None
                return self._interrupted(job, exc, timings)
            except OutOfMemory as exc:
                error = {**exc.to_dict(), "type": "out_of_memory", "traceback": exc.traceback,
                         "message": f"out of memory twice (memory was freed between): {exc.message}"}
                return self._end_without_outputs(run_id, attempt, RunStatus.FAILED, error, timings)
            except NodeExecutionError as exc:
                error = {**exc.to_dict(), "type": "node_failed", "traceback": exc.traceback}
                return self._end_without_outputs(run_id, attempt, RunStatus.FAILED, error, timings)
            except WorkflowInvalid as exc:
                # E.g. this worker's engine lacks a node pack the API server has: say so in ComfyUI's shape.
                error = {"message": exc.error["message"], "type": "workflow_invalid_on_worker",
                         "error": exc.error, "node_errors": exc.node_errors}
                return self._end_without_outputs(run_id, attempt, RunStatus.FAILED, error, timings)
            except EngineUnavailable as exc:
                return self._hand_back(run_id, attempt, str(exc))
            except _RunLost:
                log.warning("run %s attempt %s was taken back by the watchdog; result dropped", run_id, attempt)
                return None

        chosen = gate_loop.choose(outcome.attempts, policy.rank_by_check)
        records = self._records(job, chosen)
        gate = {"attempts": [a.to_dict([g.index for g in a.outputs]) for a in outcome.attempts],
                "chosen": chosen.number, "retry_stopped": outcome.retry_stopped}
        timings = self._loop_timings(timings, job, outcome.attempts, chosen)
        # A run that ends while the database is down is recorded once it is back, not lost.
        status = unit_of_work_retried(
            self.sessions, lambda session: run_service.finish_run(session, run_id, attempt, records, timings, gate),
            what=f"recording run {run_id}")
        if status is None:
            log.warning("run %s attempt %s ended elsewhere; its result was not recorded", run_id, attempt)
            return None
        self.history.add(claimed.workflow_id,
                         [RecentOutput(r.sha256, phash_from_hex(r.phash), r.request_key,
                                       f"run {run_id} output {r.index}") for r in records if r.sha256 and r.phash],
                         [v.scores for a in outcome.attempts for v in a.verdicts])
        return status

    def _interrupted(self, job: _Job, exc: RunInterrupted, timings: dict[str, Any]) -> str | None:
        where = f" during node {exc.node_id}" if exc.node_id else " between nodes"
        if exc.reason == "timeout":
            error = {"message": f"timed out after {job.claimed.timeout_seconds:g} s (the version's "
                                f"timeout_seconds){where}", "type": "timeout", "node_id": exc.node_id}
            return self._end_without_outputs(job.run_id, job.attempt, RunStatus.FAILED, error, timings)
        error = {"message": f"canceled at the caller's request{where}", "type": "canceled", "node_id": exc.node_id}
        return self._end_without_outputs(job.run_id, job.attempt, RunStatus.CANCELED, error, timings)

    def _hand_back(self, run_id: str, attempt: int, reason: str) -> str | None:
        """The engine died under the run: queue it again as a new attempt (any worker of the pool may take
        it), or fail it once the attempts are used up."""
        with session_scope(self.sessions) as session:
            status = run_service.give_back(session, run_id, attempt, self.settings.max_attempts,
                                           f"engine {self.engine.name} became unavailable: {reason}")
        if status == RunStatus.QUEUED:
            log.warning("run %s handed back after attempt %s (%s); queued as attempt %s", run_id, attempt, reason,
                        attempt + 1)
            if self.give_back is not None:  # else the watchdog re-sends it once it counts as lost
                self.give_back(run_id, attempt + 1)
        return status

    def _run_engine(self, job: _Job, prompt: dict[str, Any], number: int) -> EngineResult:
        """One engine call; after an out-of-memory error the engine frees memory and the call is tried once
        more (a second one ends the run)."""
        engine_job = EngineJob(run_id=job.run_id, prompt=prompt, input_files=job.input_files,
                               cancel=job.watch.cancel, lost=job.watch.lost, deadline=job.deadline,
                               timeout_seconds=job.claimed.timeout_seconds,
                               on_event=job.watch.progress.on_event, label=f"{job.attempt}-{number}")
        try:
            return self.engine.run(engine_job)
        except OutOfMemory as exc:
            log.warning("run %s: out of memory in node %s; freeing memory and trying once more", job.run_id,
                        exc.node_id)
            self.engine.free_memory()
            return self.engine.run(engine_job)

    def _generate(self, job: _Job, number: int) -> gate_loop.Attempt:
        """Attempt ``number`` of the gate loop: run the prompt (with its seeds varied from attempt 2 on), gate
        every output in one batch, store them all."""
        if job.watch.lost.is_set():
            raise _RunLost()
        if job.watch.cancel.is_set():  # asked while the gate judged the last generation: no new one
            raise RunInterrupted("canceled")
        job.watch.progress.new_generation(number)
        prompt, seeds = gate_loop.seeds_for_attempt(job.claimed.prompt, job.seeds, job.run_id, number)
        start = time.perf_counter()
        result = self._run_engine(job, prompt, number)
        job.results[number] = result
        execute_ms = round(_ms(start) - result.model_load_ms, 3)

        start = time.perf_counter()
        candidates = [self._candidate(o, job) for o in result.outputs]
        verdicts = self.sentinel.evaluate_batch(candidates, job.resolved, job.history.recent)
        gated = [_GatedOutput(o, index, v.image_hash)
                 for index, (o, v) in enumerate(zip(result.outputs, verdicts, strict=True))]
        gate_ms = _ms(start)

        attempt = gate_loop.Attempt(number, seeds, verdicts, gated, execute_ms=execute_ms, gate_ms=gate_ms)
        start = time.perf_counter()
        for index, output in enumerate(result.outputs):
            # One key per task attempt and gate attempt: a late, superseded task can never overwrite the bytes
            # another one recorded, and every generation stays available to reviewers.
            extension = extension_for(output.content_type, output.filename)
            key = f"runs/{job.run_id}/{job.attempt}-{number}-{index}{extension}"
            self.storage.put(key, output.data, output.content_type)
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
        # Per node: how long each one ran, and which were answered from the engine's node cache.
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
                index=gated.index, node_id=output.node_id, filename=_download_name(output, gated.index),
                storage_key=key, content_type=output.content_type, width=output.width, height=output.height,
                size_bytes=len(output.data), verdict=verdict.to_dict(), decision=verdict.decision,
                sha256=image_hash.sha256 if image_hash else None,
                phash=phash_hex(image_hash.phash) if image_hash else None,
                request_key=job.request_key, gate_attempt=chosen.number, sampled=sampled and verdict.passed))
        return records

    def _end_without_outputs(self, run_id: str, attempt: int, status: str, error: dict[str, Any],
                             timings: dict[str, Any]) -> str | None:
        recorded = unit_of_work_retried(
            self.sessions, lambda session: run_service.fail_run(session, run_id, attempt, status, error, timings),
            what=f"recording run {run_id}")
        return status if recorded else None

    def _input_files(self, prompt: dict[str, Any]) -> dict[str, bytes]:
        """The uploaded files this run's prompt names, read from storage.

        A name storage does not hold (deleted, or a constant from the exported workflow that was never
        uploaded) is left out: the loading node then fails naming its node and the file, which says more than
        we could here."""
        files: dict[str, bytes] = {}
        for node in prompt.values():
            inputs = node.get("inputs", {})
            for class_type, input_name in FILE_INPUTS:
                name = inputs.get(input_name) if node.get("class_type") == class_type else None
                if not isinstance(name, str) or name in files:
                    continue
                try:
                    files[name] = self.storage.get(input_key(name))
                except (StoredObjectMissing, InvalidStorageKey):
                    continue
        return files

    @staticmethod
    def _candidate(output: EngineOutput, job: _Job) -> Candidate:
        return Candidate(data=output.data, content_type=output.content_type, expected_width=output.width,
                         expected_height=output.height, pixels=output.pixels, prompt=job.prompt_text,
                         request_key=job.request_key)


def _download_name(output: EngineOutput, index: int) -> str:
    # Goes into a Content-Disposition header: only characters that need no quoting.
    name = PurePosixPath(output.filename)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name.stem).strip("_") or "output"
    return f"{stem[:100]}_{index:05d}{extension_for(output.content_type, output.filename)}"
