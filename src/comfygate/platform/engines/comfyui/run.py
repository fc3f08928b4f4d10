"""One job on ComfyUI: upload its input files, submit the prompt, follow it to its end, collect the outputs,
then remove what it left in ComfyUI (uploads, output and temp files, the history entry).

Following does not trust the websocket alone: a socket can drop (nothing is replayed after a reconnect) or go
quiet (ComfyUI unregistered it), so /queue and /history are polled too, often while the socket is down.

Each prompt saves into a folder of its own: a constant ``filename_prefix`` (the input every save node of
ComfyUI and of the common node packs has) is put under ``comfygate/<prompt id>/`` in ComfyUI's output folder.
That keeps runs' files apart from each other and from other users of the same ComfyUI, and it keeps reruns
cheap: ComfyUI answers a prompt it has run before from its cache, and an output node answered from the cache
re-reports the *earlier* run's file (deleted since, or even replaced: save nodes number files from the highest
one left). With a prefix of its own, a save node is never a cache hit, while everything upstream (loaders,
sampler) still is. Only an output node without a constant prefix can still re-report an earlier file; then the
run empties ComfyUI's cache (POST /free {"free_memory": true}: its worker resets the node cache before it takes
the next prompt) and submits again, at most twice (the reset can race a prompt already on its way); those
reruns pay for their loaders again.

A prompt the job stops waiting for while ComfyUI may still run it (a stop ComfyUI did not confirm, ComfyUI not
answering, a POST /prompt without an answer) is handed to the engine's reaper (reaper.py), which cleans up
after it once ComfyUI is done with it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comfygate.comfy_runtime import NodeExecutionError, WorkflowInvalid

from ..base import (
    EngineJob,
    EngineResult,
    EngineUnavailable,
    OutOfMemory,
    RunInterrupted,
    is_out_of_memory_type,
)
from .client import SOCKET, HTTPStatusError, Unreachable
from .follow import PromptFollower
from .outputs import fetch_outputs, file_refs, written_files
from .paths import prompt_folder
from .prompt import rejected, saving_into, upload_inputs

if TYPE_CHECKING:
    from .engine import ComfyUIEngine

__all__ = ["PromptRun", "prompt_id_for"]

log = logging.getLogger(__name__)

POLL_SOCKET_UP = 2.0  # poll /queue and /history this often while the socket is open (it may have gone quiet)
POLL_SOCKET_DOWN = 0.5  # ... while it is down, while stopping, or while the prompt seems missing or unreachable
POLL_TIMEOUT = 3.0  # one poll's wait for an answer: well under the unreachable grace, which a hung ComfyUI uses up
STOP_GRACE = 5.0  # ComfyUI confirms a stop within this long, else the job stops waiting for it
HISTORY_WAIT = 5.0  # the history entry may come a little after the end frame
LOST_AFTER = 5.0  # in neither queue nor history this long: ComfyUI lost it (it restarted; history is in memory)
RERUNS = 2  # submissions more after a cached answer whose files cannot be trusted


def prompt_id_for(job: EngineJob) -> str:
    """The ComfyUI prompt id of a generation: its run and label, safe as a folder name."""
    raw = f"{job.run_id}-{job.label}" if job.label else job.run_id
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw).lstrip(".") or "run"


@dataclass
class _Watch:
    """What the polls of one prompt found so far."""

    next_poll: float
    unreachable_since: float | None = None
    missing_since: float | None = None
    quiet_polls: int = 0  # polls that found it running while no frame of it came
    seen_running: bool = False  # a poll found it running
    socket_changed: bool = False  # the socket dropped or was replaced since the prompt was submitted


@dataclass
class Submission:
    prompt_id: str
    follower: PromptFollower
    entry: dict[str, Any] | None = None  # the history entry, once it ended
    settled: bool = False  # it ended, or ComfyUI never queued it or dropped it: nothing of it comes later

    def ui_outputs(self) -> dict[str, Any]:
        entry_outputs = (self.entry or {}).get("outputs")
        return entry_outputs if isinstance(entry_outputs, dict) else dict(self.follower.executed)


class PromptRun:
    def __init__(self, engine: ComfyUIEngine, job: EngineJob) -> None:
        self.engine = engine
        self.client = engine.client
        self.job = job
        self.base_id = prompt_id_for(job)
        self.submissions: list[Submission] = []
        self.stop: tuple[str, float] | None = None  # (reason, when it was asked)
        self.upload_folder: str | None = None
        self.posted_at: float | None = None

    def execute(self) -> EngineResult:
        try:
            if self.job.input_files:
                self.upload_folder = prompt_folder(self.base_id)
            uploaded = upload_inputs(self.client, self.job.prompt, self.job.input_files, self.upload_folder)
            for attempt in range(RERUNS + 1):
                prompt_id = self.base_id if attempt == 0 else f"{self.base_id}-r{attempt}"
                prompt = saving_into(uploaded, prompt_folder(prompt_id))
                run = self._submit_and_follow(prompt, prompt_id)
                self._raise_for_ending(run)
                stale = self._cached_file_nodes(run)
                if not stale:
                    break
                if attempt < RERUNS:
                    log.info("ComfyUI answered prompt %s from its cache (nodes %s); freeing the cache and running "
                             "it again", run.prompt_id, ", ".join(stale))
                    self.client.call("POST", "/free", json={"unload_models": False, "free_memory": True})
                else:
                    log.warning("ComfyUI answered prompt %s from its cache again; using the files it names",
                                run.prompt_id)
            outputs = fetch_outputs(self.client, run.ui_outputs(), run.follower.executed, prompt)
            return EngineResult(outputs, execute_ms=(time.monotonic() - self.posted_at) * 1000,
                                node_ms=dict(run.follower.node_ms), cached_nodes=list(run.follower.cached))
        except (Unreachable, HTTPStatusError) as exc:  # an error status here: ComfyUI is not itself
            raise EngineUnavailable(str(exc)) from exc
        finally:
            self._clean_up()

    # -- submit and follow ---------------------------------------------------------------------------------------

    def _submit_and_follow(self, prompt: dict[str, Any], prompt_id: str) -> Submission:
        run = Submission(prompt_id, PromptFollower(self.job.run_id, self.job.emit))
        frames = self.client.subscribe(prompt_id)  # before the POST: frames can come before its answer
        try:
            self.engine.wait_connected()  # ComfyUI sends frames only to the submitter's open socket
            while not frames.empty():  # socket markers from before the POST say nothing about this prompt
                frames.get_nowait()
            generation = self.engine.generation()
            self.submissions.append(run)
            self._submit(run, prompt)
            try:
                run.entry = self._follow(run, frames, generation)
                run.settled = True
            except BaseException:
                if self.stop is None:  # the job gives up on it (or failed itself): ComfyUI should too
                    self._stop_quietly(prompt_id)
                raise
        finally:
            self.client.unsubscribe(prompt_id)
        return run

    def _submit(self, run: Submission, prompt: dict[str, Any]) -> None:
        prompt_id = run.prompt_id
        body = {"prompt": prompt, "client_id": self.client.client_id, "prompt_id": prompt_id}
        try:
            answer = self.client.call("POST", "/prompt", json=body, timeout=120, expect=dict)
        except HTTPStatusError as exc:
            refusal = rejected(exc)
            if isinstance(refusal, WorkflowInvalid):
                run.settled = True  # refused: never queued
            else:  # a 502 or 504 of a proxy in front: ComfyUI may have queued it all the same
                self._stop_quietly(prompt_id)
            raise refusal from None
        except Unreachable:  # ComfyUI may have queued it all the same
            self._stop_quietly(prompt_id)
            raise
        if self.posted_at is None:
            self.posted_at = time.monotonic()
        node_errors = answer.get("node_errors")
        if node_errors:
            # ComfyUI runs the valid outputs and drops the invalid ones (recording 03); a run is all or nothing.
            log.warning("ComfyUI accepted prompt %s without its invalid outputs; taking it back: %s", prompt_id,
                        node_errors)
            self._stop_quietly(prompt_id)
            raise WorkflowInvalid({"type": "prompt_outputs_failed_validation",
                                   "message": "Prompt outputs failed validation",
                                   "details": "some outputs are invalid; comfygate does not run the rest alone",
                                   "extra_info": {}}, node_errors if isinstance(node_errors, dict) else {})

    def _follow(self, run: Submission, frames: queue.Queue, generation: int) -> dict[str, Any] | None:
        """Feeds frames to the follower until the prompt ends, polling ComfyUI now and then; returns its
        history entry (None when it has none: deleted from the queue on a stop, or the entry never came)."""
        watch = _Watch(next_poll=time.monotonic() + POLL_SOCKET_UP)
        while True:
            try:
                message = frames.get(timeout=0.1)  # also the pace of the stop check
            except queue.Empty:
                message = None
            now = time.monotonic()
            if message is not None and message["type"] == SOCKET:
                watch.next_poll = now  # dropped or reopened: what happened meanwhile is only in /queue, /history
                watch.socket_changed, watch.quiet_polls = True, 0
            elif message is not None:
                run.follower.feed(message)
            if run.follower.ended:
                entry = self._history_after_end(run.prompt_id, frames)
                if entry is not None:  # fills in frames lost while the socket was down
                    run.follower.apply_history(entry)
                return entry
            self.engine.check_alive(generation)
            if self._check_stop(run.prompt_id, now):
                watch.next_poll = now  # a prompt taken off the queue sends no frame: only a poll sees it gone
            if now >= watch.next_poll and frames.empty():  # frames first: a poll must not overtake them
                ended, entry = self._poll(run, watch, now)
                if ended:
                    self._settle(run, frames, watch, entry)
                    if entry is not None:
                        run.follower.apply_history(entry)
                    return entry

    def _poll(self, run: Submission, watch: _Watch, sent: float) -> tuple[bool, dict[str, Any] | None]:
        """(ended, history entry) from /queue and /history; raises EngineUnavailable when ComfyUI stays
        unreachable or lost the prompt."""
        prompt_id = run.prompt_id
        quick = self.stop or watch.missing_since or watch.unreachable_since or not self.client.connected.is_set()
        watch.next_poll = sent + (POLL_SOCKET_DOWN if quick else POLL_SOCKET_UP)
        try:
            state = self._prompt_state(prompt_id)
        except (Unreachable, HTTPStatusError) as exc:
            if isinstance(exc, HTTPStatusError) and exc.status < 500:
                raise
            # From when the failed poll was sent: a poll that waited out its timeout counts as unanswered time.
            watch.unreachable_since = watch.unreachable_since or sent
            waited = time.monotonic() - watch.unreachable_since
            if waited >= self.engine.unreachable_grace:
                raise EngineUnavailable(f"ComfyUI at {self.engine.url} unreachable for {waited:.0f} s while "
                                        f"running prompt {prompt_id}: {exc}") from exc
            return False, None
        watch.unreachable_since = None
        self._check_socket_heard(run, state, watch)
        if isinstance(state, dict):
            return True, state
        if state is not None:
            watch.missing_since = None
            return False, None
        if self.stop is not None:
            return True, None  # deleted from the queue on our request: it will never run
        watch.missing_since = watch.missing_since or sent
        if sent - watch.missing_since >= LOST_AFTER:
            raise EngineUnavailable(f"ComfyUI at {self.engine.url} lost prompt {prompt_id}: it is in neither "
                                    "its queue nor its history (did it restart?)")
        return False, None

    def _check_socket_heard(self, run: Submission, state: str | dict[str, Any] | None, watch: _Watch) -> None:
        """ComfyUI has been running the prompt for two polls, yet none of its frames came over the open socket:
        ComfyUI no longer sends to that socket (recording 13), so it is replaced."""
        if state == "running":
            watch.seen_running = True
        if (run.follower.heard or state != "running" or self.stop is not None
                or not self.client.connected.is_set()):
            watch.quiet_polls = 0
            return
        watch.quiet_polls += 1
        if watch.quiet_polls >= 2:  # at the first, its first frames may still be on their way
            self._replace_socket(run.prompt_id)
            watch.quiet_polls = 0

    def _settle(self, run: Submission, frames: queue.Queue, watch: _Watch, entry: dict[str, Any] | None) -> None:
        """After a poll found the prompt ended: takes its frames still on their way (up to the end frame), so
        its events are complete. None at all over a socket open all along, for a prompt ComfyUI ran (a poll saw
        it running, or it has a history entry), means ComfyUI no longer sends to that socket: it is replaced
        for the next prompts. Not for a prompt deleted from the queue (it never sends a frame) nor one that ran
        while the socket was down: the socket is shared, and replacing it costs other prompts frames."""
        if not self.client.connected.is_set() or (entry is None and self.stop is not None):
            return  # nothing comes over a socket that is down, nor for a prompt deleted from the queue
        deadline = time.monotonic() + 0.5
        while not run.follower.ended and (left := deadline - time.monotonic()) > 0:
            try:
                message = frames.get(timeout=left)
            except queue.Empty:
                break
            if message["type"] == SOCKET:
                watch.socket_changed = True
            else:
                run.follower.feed(message)
        ran = watch.seen_running or entry is not None
        if not run.follower.heard and ran and self.stop is None and not watch.socket_changed:
            self._replace_socket(run.prompt_id)

    def _replace_socket(self, prompt_id: str) -> None:
        log.warning("no frames for ComfyUI prompt %s over an open websocket; opening a new one", prompt_id)
        self.client.reconnect()

    def _prompt_state(self, prompt_id: str) -> str | dict[str, Any] | None:
        """"running"/"pending", its history entry, or None. The queue is asked first: ComfyUI writes the
        history entry before it takes a prompt off the queue, so nothing finishes unseen between the two."""
        return (self.client.queue_state(prompt_id, timeout=POLL_TIMEOUT)
                or self.client.history(prompt_id, timeout=POLL_TIMEOUT))

    def _history_after_end(self, prompt_id: str, frames: queue.Queue) -> dict[str, Any] | None:
        deadline, pause = time.monotonic() + HISTORY_WAIT, 0.01
        while True:
            entry = self.client.history(prompt_id)
            if entry:
                return entry
            if time.monotonic() >= deadline:
                log.warning("ComfyUI has no history for prompt %s %g s after it ended; using its frames",
                            prompt_id, HISTORY_WAIT)
                return None
            with contextlib.suppress(queue.Empty):  # nothing more comes for an ended prompt: this paces polls
                frames.get(timeout=pause)
            pause = min(pause * 2, 0.25)

    # -- stopping ------------------------------------------------------------------------------------------------

    def _check_stop(self, prompt_id: str, now: float) -> bool:
        """Stops the prompt once the job asks (True when the stop was sent now); raises RunInterrupted when
        ComfyUI has not confirmed it within STOP_GRACE."""
        if self.stop is None:
            reason = self.job.stop_reason()
            if reason is None:
                return False
            self.stop = (reason, now)
            log.info("stopping ComfyUI prompt %s (%s)", prompt_id, reason)
            self._stop_quietly(prompt_id)
            return True
        if now - self.stop[1] >= STOP_GRACE:
            log.warning("ComfyUI did not confirm stopping prompt %s within %g s; leaving it", prompt_id,
                        STOP_GRACE)
            raise RunInterrupted(self.stop[0], None, f"run {self.stop[0]}; ComfyUI did not confirm the stop")
        return False

    def _stop_quietly(self, prompt_id: str) -> None:
        try:
            self._send_stop(prompt_id)
        except (Unreachable, HTTPStatusError) as exc:
            log.warning("could not stop ComfyUI prompt %s: %s", prompt_id, exc)

    def _send_stop(self, prompt_id: str) -> None:
        """Takes a pending prompt off the queue, interrupts a running one (short timeouts: a stop is bounded)."""
        state = self.client.queue_state(prompt_id, timeout=2)
        if state == "pending":
            self.client.call("POST", "/queue", json={"delete": [prompt_id]}, timeout=2)
            state = self.client.queue_state(prompt_id, timeout=2)  # it may have started meanwhile
        if state == "running":
            self.client.call("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=2)

    # -- the end -------------------------------------------------------------------------------------------------

    def _raise_for_ending(self, run: Submission) -> None:
        """The typed error of a prompt that failed or was stopped; nothing for one that succeeded."""
        follower = run.follower
        if follower.error is not None:
            error = follower.error
            exception_type = str(error.get("exception_type") or "")
            message = str(error.get("exception_message") or "").rstrip()
            kind = OutOfMemory if is_out_of_memory_type(exception_type, message) else NodeExecutionError
            raise kind(str(error.get("node_id")), str(error.get("node_type") or ""), message, exception_type,
                       traceback="".join(error.get("traceback") or ()))
        status = ((run.entry or {}).get("status") or {}).get("status_str")
        stopped = self.stop is not None and (run.entry is None or status != "success")
        if follower.interrupted is not None and self.stop is None:
            # Not the caller's cancel (someone pressed Cancel in ComfyUI's own page?): the run is tried again.
            log.warning("ComfyUI interrupted prompt %s without comfygate asking; handing the run back",
                        run.prompt_id)
            raise EngineUnavailable(f"ComfyUI interrupted prompt {run.prompt_id} without comfygate asking "
                                    "(canceled in ComfyUI itself?)")
        if follower.interrupted is not None or stopped:
            raise RunInterrupted(self.stop[0], (follower.interrupted or {}).get("node_id"))

    def _cached_file_nodes(self, run: Submission) -> list[str]:
        return [node for node, ui in run.ui_outputs().items()
                if node in run.follower.cached and isinstance(ui, dict)
                and any(ref.type == "output" for ref in file_refs(node, ui))]

    def _clean_up(self) -> None:
        """Deletes what the job's prompts wrote (not files a cached node re-reported: an earlier prompt's),
        their uploads and their history entries; best effort, after success or failure alike. A prompt that
        may still run goes to the reaper, which does the same once ComfyUI is done with it."""
        dirs = self.engine.dirs
        written = [ref for run in self.submissions
                   for ref in written_files({**run.follower.executed, **run.ui_outputs()}, run.follower.cached)]
        ended = [run.prompt_id for run in self.submissions if run.settled]
        if dirs is None:
            if written or self.upload_folder:
                self.engine.warn_files_left()
        else:
            for ref in written:
                dirs.delete_file(ref.type, ref.subfolder, ref.filename)
            for prompt_id in ended:  # the prompt's own folder, with anything a node wrote unreported
                dirs.delete_tree("output", prompt_folder(prompt_id))
            if self.upload_folder:  # a prompt still pending fails on its missing inputs: sooner done
                dirs.delete_tree("input", self.upload_folder)
        for run in self.submissions:
            if not run.settled:
                self.engine.reaper.take(run.prompt_id)
        if ended:
            try:
                self.client.call("POST", "/history", json={"delete": ended})
            except (Unreachable, HTTPStatusError) as exc:
                log.warning("could not delete ComfyUI's history of %s: %s", self.base_id, exc)
