"""What a worker does with one run: claim, execute, gate, store, record.

``RunProcessor`` holds what a worker process keeps warm (node registry, sentinel with its CLIP model,
storage client, database engine) and is built once per process. ``process(run_id, attempt)`` is idempotent:
a duplicate or stale task finds the run not claimable and returns.
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

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from comfygate.comfy_runtime import (
    Executor,
    NodeExecutionError,
    NodeRegistry,
    OutputImage,
    RunCanceled,
    RunContext,
    WorkflowInvalid,
)
from comfygate.platform.db import make_engine, make_session_factory, session_scope
from comfygate.platform.models import RunStatus, WorkflowVersion
from comfygate.platform.notify import Publisher
from comfygate.platform.runtime import node_registry
from comfygate.platform.services import runs as run_service
from comfygate.platform.services.uploads import input_key
from comfygate.platform.storage import InvalidStorageKey, Storage, StoredObjectMissing, open_storage
from comfygate.sentinel import Candidate, ClipScorer, Policy, Sentinel, Verdict
from comfygate.settings import Settings

__all__ = ["RunProcessor"]

log = logging.getLogger(__name__)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


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


class RunProcessor:
    def __init__(self, settings: Settings, registry: NodeRegistry | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.sessions = make_session_factory(self.engine)
        self.registry = registry or node_registry(settings)
        # One executor per process: its node cache lets a run reuse what an earlier run computed.
        self.executor = Executor(self.registry, cache_entries=settings.node_cache_entries)
        self.storage: Storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
        self.clip: ClipScorer | None = None
        if settings.clip_model and settings.clip_weights:
            self.clip = ClipScorer(settings.clip_model, settings.clip_weights)
        self.sentinel = Sentinel(clip=self.clip)
        self.publisher = Publisher(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._policies: dict[int, Policy] = {}

    def _policy(self, session: Session, version_id: int) -> Policy:
        # Versions are immutable, so their policies are read once per process.
        policy = self._policies.get(version_id)
        if policy is None:
            policy = Policy.from_dict(session.get_one(WorkflowVersion, version_id).policy)
            self._policies[version_id] = policy
        return policy

    def warm_up(self, preload: Sequence[str] = ()) -> None:
        """Load the CLIP model and the ``preload`` model files (folder/name under the models dir) before taking
        runs, so the first runs do not pay for them (and a bad path stops the worker at start with a clear error
        rather than failing runs one by one)."""
        if self.clip is not None:
            self.clip.load()
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
            policy = self._policy(session, claimed.version_id)
        try:
            return self._execute_and_record(run_id, attempt, claimed.prompt, claimed.inputs, policy,
                                            claimed.queue_ms)
        except Exception as exc:
            # A bug of ours, not of the workflow: record it so the run never stays 'running', then re-raise
            # so the worker log carries the traceback.
            log.exception("run %s attempt %s failed inside comfygate", run_id, attempt)
            self._end_without_outputs(run_id, attempt, RunStatus.FAILED,
                                      {"message": f"internal error: {type(exc).__name__}: {exc}"}, {})
            raise
        finally:
            self.publisher.run_ended(run_id)

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

    def _execute_and_record(self, run_id: str, attempt: int, prompt: dict[str, Any], inputs: dict[str, Any],
                            policy: Policy, queue_ms: float) -> str | None:
        timings: dict[str, Any] = {"queue_ms": queue_ms}
        # The heartbeat covers the whole attempt (execute, gate, store): a slow CLIP pass or upload must not
        # look like a dead worker.
        with self._heartbeat(run_id, attempt) as beat:
            with tempfile.TemporaryDirectory(prefix="cg-run-") as tmp:
                try:
                    self._fetch_input_files(prompt, Path(tmp))
                    start = time.perf_counter()
                    result = self.executor.run(prompt, RunContext(
                        input_dir=Path(tmp), should_cancel=beat.cancel_requested.is_set, run_id=run_id))
                    # Loading model files into the pool is counted apart from running the graph.
                    timings["model_load_ms"] = result.model_load_ms
                    timings["execute_ms"] = round(_ms(start) - result.model_load_ms, 3)
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

            prompt_text = inputs.get(policy.prompt_input) if policy.prompt_input else None
            start = time.perf_counter()
            verdicts = [self.sentinel.evaluate(self._candidate(o), policy,
                                               prompt_text if isinstance(prompt_text, str) else None)
                        for o in result.outputs]
            timings["sentinel_ms"] = _ms(start)

            if beat.lost.is_set():
                log.warning("run %s attempt %s was taken back by the watchdog; result dropped", run_id, attempt)
                return None
            start = time.perf_counter()
            records = [self._store(run_id, attempt, output, verdict)
                       for output, verdict in zip(result.outputs, verdicts, strict=True)]
            timings["store_ms"] = _ms(start)
        timings["total_ms"] = round(sum(timings.values()), 3)
        # Per node: how long each one ran, and which were answered from the worker's node cache.
        timings["node_ms"] = {node_id: round(ms, 3) for node_id, ms in result.node_ms.items()}
        timings["cached_nodes"] = result.cached_nodes
        timings["model_loads"] = result.model_loads

        with session_scope(self.sessions) as session:
            status = run_service.finish_run(session, run_id, attempt, records, timings)
        if status is None:
            log.warning("run %s attempt %s ended elsewhere; its result was not recorded", run_id, attempt)
        return status

    def _store(self, run_id: str, attempt: int, output: OutputImage, verdict: Verdict) -> run_service.OutputRecord:
        # One key per attempt: a late, superseded attempt can never overwrite the bytes another one recorded.
        key = f"runs/{run_id}/{attempt}-{output.index}.png"
        self.storage.put(key, output.png, "image/png")
        return run_service.OutputRecord(
            index=output.index, node_id=output.node_id, filename=_download_name(output), storage_key=key,
            content_type="image/png", width=output.width, height=output.height, size_bytes=len(output.png),
            verdict=verdict.to_dict(), passed=verdict.passed)

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
    def _candidate(output: OutputImage) -> Candidate:
        return Candidate(data=output.png, content_type="image/png", expected_width=output.width,
                         expected_height=output.height, pixels=output.pixels)


def _download_name(output: OutputImage) -> str:
    # Goes into a Content-Disposition header: only characters that need no quoting.
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", output.filename_prefix) or "output"
    return f"{stem}_{output.index:05d}.png"
