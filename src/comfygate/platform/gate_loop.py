"""The gate loop's decisions, apart from the worker's plumbing: which seeds an attempt runs with, when to
generate again, which attempt the caller gets, and which passing runs are sampled for audit.

- Attempt 1 runs the bound prompt as it is. Attempt k ≥ 2 replaces every literal INT input named ``seed`` or
  ``noise_seed`` with ``derive_seed(run_id, k, node, input)``: reproducible from the run id, different per
  attempt, within the input's declared range.
- ``best_of`` attempts are generated; each one that is rejected for a reason a new seed can fix (blank,
  noise, duplicate, a low score) is generated again while ``retries`` (extra generations, in total) last. A
  reject a new seed cannot fix (undecodable file, NaN/Inf pixels) ends the loop; so does a workflow without
  a seed input, since the same prompt gives the same picture.
- The chosen attempt has the best decision (pass > review > reject), then the highest ``rank_by`` score.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfygate.sentinel import Verdict

__all__ = ["SeedInput", "Attempt", "LoopOutcome", "SEED_INPUT_NAMES", "DEFAULT_SEED_MAX", "seed_inputs",
           "derive_seed", "seeds_for_attempt", "run_attempts", "choose", "sampled_for_audit", "request_key",
           "NO_SEED_REASON"]

SEED_INPUT_NAMES = ("seed", "noise_seed")
# When a node's schema declares no maximum: the largest integer a JSON number keeps exactly.
DEFAULT_SEED_MAX = 2**53
NO_SEED_REASON = "the workflow has no seed input to vary"
_DECISION_RANK = {"reject": 0, "review": 1, "pass": 2}


@dataclass(frozen=True)
class SeedInput:
    node_id: str
    input_name: str
    maximum: int
    minimum: int = 0

    @property
    def label(self) -> str:
        return f"{self.node_id}.{self.input_name}"


def _declared_int_range(info: Mapping[str, Any], input_name: str) -> tuple[int, int] | None:
    """The input's declared (min, max) when the node's schema says it is an INT; None when it is not an INT.
    A node the schemas lack (validated elsewhere) gets the widest range."""
    for section in ("required", "optional"):
        spec = info.get("input", {}).get(section, {}).get(input_name)
        if not spec:
            continue
        if spec[0] != "INT":
            return None
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        low, high = options.get("min"), options.get("max")
        low = low if isinstance(low, int) and low >= 0 else 0
        high = high if isinstance(high, int) and high >= low else DEFAULT_SEED_MAX
        return low, high
    return 0, DEFAULT_SEED_MAX


def seed_inputs(prompt: Mapping[str, Any], object_info: Callable[[str], Mapping[str, Any]]) -> list[SeedInput]:
    """The literal INT seed inputs of a bound prompt (an input wired to another node's output is not one).
    ``object_info(class_type)`` is the engine's schema of a node ({} when it has none)."""
    found = []
    for node_id, node in prompt.items():
        inputs = node.get("inputs", {})
        for name in SEED_INPUT_NAMES:
            value = inputs.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            declared = _declared_int_range(object_info(node.get("class_type", "")), name)
            if declared is not None:
                found.append(SeedInput(str(node_id), name, maximum=declared[1], minimum=declared[0]))
    return found


def derive_seed(run_id: str, attempt: int, node_id: str, input_name: str, maximum: int = DEFAULT_SEED_MAX,
                minimum: int = 0) -> int:
    """First 8 bytes of sha256("run_id:attempt:node:input"), brought into ``minimum..maximum``."""
    digest = hashlib.sha256(f"{run_id}:{attempt}:{node_id}:{input_name}".encode()).digest()
    return minimum + int.from_bytes(digest[:8], "big") % (maximum - minimum + 1)


def seeds_for_attempt(prompt: Mapping[str, Any], seeds: Sequence[SeedInput], run_id: str, attempt: int
                      ) -> tuple[dict[str, Any], dict[str, int]]:
    """(the prompt attempt ``attempt`` runs, its seed values by ``node.input``)."""
    if attempt == 1:
        return dict(prompt), {s.label: prompt[s.node_id]["inputs"][s.input_name] for s in seeds}
    varied = copy.deepcopy(dict(prompt))
    values = {}
    for s in seeds:
        values[s.label] = varied[s.node_id]["inputs"][s.input_name] = derive_seed(
            run_id, attempt, s.node_id, s.input_name, s.maximum, s.minimum)
    return varied, values


@dataclass
class Attempt:
    """One generation and its verdicts. ``outputs`` is whatever the worker keeps per output (opaque here)."""

    number: int
    seeds: dict[str, int]
    verdicts: list[Verdict]
    outputs: list[Any] = field(default_factory=list)
    storage_keys: list[str] = field(default_factory=list)
    execute_ms: float = 0.0
    gate_ms: float = 0.0
    store_ms: float = 0.0

    @property
    def decision(self) -> str:
        """The worst decision among its outputs (an attempt without outputs passes)."""
        return min((v.decision for v in self.verdicts), key=_DECISION_RANK.__getitem__, default="pass")

    @property
    def retryable(self) -> bool:
        """Rejected, and every rejected output could be fixed by a new seed."""
        rejected = [v for v in self.verdicts if v.decision == "reject"]
        return bool(rejected) and all(v.retryable for v in rejected)

    def rank_score(self, check: str | None) -> float | None:
        """Mean ``check`` score over its outputs (None when no output has one)."""
        scores = [s for v in self.verdicts if (s := v.score(check)) is not None] if check else []
        return sum(scores) / len(scores) if scores else None

    def to_dict(self, output_indexes: Sequence[int]) -> dict[str, Any]:
        return {
            "attempt": self.number, "seeds": self.seeds, "decision": self.decision, "retryable": self.retryable,
            "outputs": [{"index": index, "storage_key": key, "verdict": verdict.to_dict()}
                        for index, key, verdict in zip(output_indexes, self.storage_keys, self.verdicts,
                                                       strict=True)],
            "execute_ms": self.execute_ms, "gate_ms": self.gate_ms,
        }


@dataclass
class LoopOutcome:
    attempts: list[Attempt]
    retry_stopped: str | None  # why the loop generated no more than it did, when it wanted to


def run_attempts(generate: Callable[[int], Attempt], *, retries: int, best_of: int, can_vary: bool,
                 later_attempt_errors: tuple[type[Exception], ...] = ()) -> LoopOutcome:
    """Call ``generate(n)`` for n = 1, 2, ... as the policy asks (see the module docstring).

    An error of ``later_attempt_errors`` from attempt 2 on (e.g. a node failing with a varied seed) ends the
    loop, keeping the attempts already made: a reviewable first image is not thrown away for a failed extra.
    """
    attempts: list[Attempt] = []

    def next_attempt() -> Attempt | None:
        try:
            attempt = generate(len(attempts) + 1)
        except later_attempt_errors:
            if not attempts:
                raise
            return None
        attempts.append(attempt)
        return attempt

    retries_left = retries
    for slot in range(best_of):
        if slot and not can_vary:
            return LoopOutcome(attempts, NO_SEED_REASON)
        while True:
            attempt = next_attempt()
            if attempt is None:
                return LoopOutcome(attempts, f"attempt {len(attempts) + 1} failed to run; kept the earlier ones")
            if attempt.decision != "reject":
                break
            if not attempt.retryable:
                if retries_left or slot + 1 < best_of:
                    codes = sorted({code for v in attempt.verdicts for code in _reject_codes(v)})
                    return LoopOutcome(attempts, f"a new seed cannot fix {', '.join(codes) or 'this reject'}")
                return LoopOutcome(attempts, None)
            if not retries_left:
                stopped = f"all {retries} retries used" if retries else None
                if slot + 1 == best_of:
                    return LoopOutcome(attempts, stopped)
                break
            if not can_vary:
                return LoopOutcome(attempts, NO_SEED_REASON)
            retries_left -= 1
    return LoopOutcome(attempts, None)


def _reject_codes(verdict: Verdict) -> list[str]:
    return [c.code for c in verdict.checks if c.status == "failed" and c.band == "reject" and c.code]


def choose(attempts: Sequence[Attempt], rank_by: str | None) -> Attempt:
    """Best decision first, then the highest ``rank_by`` score; the earliest attempt among equals."""
    def key(attempt: Attempt) -> tuple[int, float, int]:
        score = attempt.rank_score(rank_by)
        return _DECISION_RANK[attempt.decision], score if score is not None else float("-inf"), -attempt.number

    return max(attempts, key=key)


def sampled_for_audit(run_id: str, rate: float) -> bool:
    """Whether a run's passing outputs also go to review: a share ``rate`` of runs, fixed by the run id."""
    draw = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big") / 2**64
    return draw < rate


def request_key(prompt: Mapping[str, Any]) -> str:
    """Identifies a request by its bound prompt: the duplicate check lets a repeated request repeat itself."""
    canonical = json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
