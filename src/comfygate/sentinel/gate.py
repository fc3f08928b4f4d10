"""The sentinel: runs a resolved policy's checks on candidates, cheapest first, and turns the results into
verdicts.

Order: decode, finite, blank, noise, duplicate, then the checks on CLIP embeddings (clip_alignment,
aesthetic, nsfw), then the soft checks (blur, colour_entropy). The first check that fails in its reject band
stops a candidate: every later check is recorded as ``not_run`` ("skipped: <check> rejected the image").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .candidate import Candidate
from .check_specs import CHECK_NAMES
from .checks import (
    DEFAULT_MAX_PIXELS,
    Decoded,
    PreparedImage,
    blank_score,
    blur_score,
    colour_entropy,
    decode,
    finite_fraction,
    judge,
    noise_score,
    not_run,
    yes_no_result,
)
from .errors import ScorerUnavailable
from .hashing import ImageHash, RecentOutput, hamming, image_hash
from .policy import Policy, ResolvedCheck, ResolvedPolicy
from .verdict import CheckResult, Verdict

if TYPE_CHECKING:  # the scorers import torch lazily; the gate only needs their interface
    from .scorers import Scorers

__all__ = ["Sentinel"]

_MODEL_CHECKS = ("clip_alignment", "aesthetic", "nsfw")


@dataclass
class _Judging:
    """One candidate on its way through the checks."""

    candidate: Candidate
    decoded: Decoded
    prepared: PreparedImage | None
    results: dict[str, CheckResult] = field(default_factory=dict)
    hash: ImageHash | None = None
    stopped_by: str | None = None  # the check that rejected it; later checks are skipped

    def record(self, result: CheckResult) -> None:
        self.results[result.name] = result
        if result.status == "failed" and result.band == "reject" and self.stopped_by is None:
            self.stopped_by = result.name

    def due(self, check: ResolvedCheck) -> bool:
        """Whether ``check`` should run now; when not, its not_run result is recorded."""
        if not check.on:
            self.record(not_run(check, "off in this policy"))
        elif self.stopped_by is not None:
            self.record(not_run(check, f"skipped: {self.stopped_by} rejected the image"))
        elif self.prepared is None and check.name != "finite":
            self.record(not_run(check, self.undecoded_reason()))
        else:
            return True
        return False

    def undecoded_reason(self) -> str:
        problems = "; ".join(self.decoded.problems)
        return f"the image did not decode: {problems}" if problems else "the image did not decode"

    def verdict(self) -> Verdict:
        return Verdict.from_checks([self.results[name] for name in CHECK_NAMES], self.hash)


class Sentinel:
    """Quality gate for workflow outputs.

    ``scorers`` holds the learned scorers (CLIP, aesthetic and NSFW heads); a check that needs one that is
    not configured reports ``not_run``, never passed. ``max_pixels`` is the decompression-bomb guard: larger
    images fail the decode check unread. A sentinel holds no per-run state, so one instance serves all
    threads of a worker.
    """

    def __init__(self, scorers: Scorers | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.scorers = scorers
        self.max_pixels = max_pixels

    def evaluate(
        self, candidate: Candidate, policy: ResolvedPolicy | Policy, recent: Sequence[RecentOutput] = ()
    ) -> Verdict:
        """Judge one candidate; see ``evaluate_batch``."""
        return self.evaluate_batch([candidate], policy, recent)[0]

    def evaluate_batch(
        self, candidates: Sequence[Candidate], policy: ResolvedPolicy | Policy,
        recent: Sequence[RecentOutput] = (),
    ) -> list[Verdict]:
        """Judge candidates together: pixel checks and hashes per image, then one CLIP pass over the ones
        still standing, then the heads on the same embeddings.

        ``recent`` are the endpoint's recent outputs, newest first (the duplicate check compares with the
        first ``window`` of them); later candidates of the batch are also compared with earlier ones. A
        ``Policy`` is resolved with no history (percentile thresholds use their fallbacks). Raises
        ``ScorerUnavailable`` when a configured model cannot be loaded or gives a non-finite score: a broken
        scorer is for an operator to see, not a reason to pass or fail outputs.
        """
        resolved = policy if isinstance(policy, ResolvedPolicy) else policy.resolve({})
        states = [self._pixel_checks(candidate, resolved) for candidate in candidates]
        self._duplicate_check(states, resolved.check("duplicate"), recent)
        self._model_checks(states, resolved)
        for state in states:
            self._soft_checks(state, resolved)
        return [state.verdict() for state in states]

    # ---- stages -------------------------------------------------------------------------------------------

    def _pixel_checks(self, candidate: Candidate, policy: ResolvedPolicy) -> _Judging:
        decoded = decode(candidate, self.max_pixels)
        state = _Judging(candidate, decoded, PreparedImage(decoded.image) if decoded.image is not None else None)

        check = policy.check("decode")
        if check.on:  # not via due(): decode reports on undecodable images itself
            state.record(yes_no_result(check, 1.0 if decoded.ok else 0.0, decoded.code,
                                       "; ".join(decoded.problems) or None))
        else:
            state.record(not_run(check, "off in this policy"))

        check = policy.check("finite")
        if state.due(check):
            if candidate.pixels is None:
                state.record(not_run(check, "no raw pixels were given"))
            else:
                fraction, problem = finite_fraction(candidate.pixels)
                state.record(yes_no_result(check, fraction, "not_finite" if problem else None, problem))

        check = policy.check("blank")
        if state.due(check):
            assert state.prepared is not None
            state.record(judge(check, blank_score(state.prepared.image8), "blank",
                               "image is blank or near-uniform", "colour spread"))
        check = policy.check("noise")
        if state.due(check):
            assert state.prepared is not None
            state.record(judge(check, noise_score(state.prepared.small_grey), "noise",
                               "image looks like noise", "neighbour correlation"))
        return state

    def _duplicate_check(self, states: list[_Judging], check: ResolvedCheck, recent: Sequence[RecentOutput]) -> None:
        # Hashed even with the check off: callers keep the hashes, so turning the check on later has a history.
        for state in states:
            if state.prepared is not None:
                state.hash = image_hash(state.candidate.data, state.prepared.image8)
        history = list(recent[: check.window])
        for index, state in enumerate(states):
            if state.due(check):
                assert state.hash is not None
                state.record(_duplicate_result(check, state, history))
            # Later candidates of the batch must not repeat this one either.
            if state.hash is not None:
                history.append(RecentOutput(state.hash.sha256, state.hash.phash, state.candidate.request_key,
                                            f"candidate {index} of this batch"))

    def _model_checks(self, states: list[_Judging], policy: ResolvedPolicy) -> None:
        clip = self.scorers.clip if self.scorers is not None else None
        heads = {
            "aesthetic": self.scorers.aesthetic if self.scorers is not None else None,
            "nsfw": self.scorers.nsfw if self.scorers is not None else None,
        }
        alignment = policy.check("clip_alignment")

        def wants_alignment(state: _Judging) -> bool:
            return alignment.on and bool((state.candidate.prompt or "").strip())

        # One image-embedding pass over every candidate still standing that some configured check needs.
        standing = [state for state in states if state.stopped_by is None and state.prepared is not None]
        wanted = [
            state for state in standing if clip is not None and (
                wants_alignment(state) or any(policy.check(n).on and heads[n] is not None for n in heads)
            )
        ]
        embeddings = self._embed_images(clip, wanted) if wanted else None
        row = {id(state): index for index, state in enumerate(wanted)}
        similarity = self._similarities(clip, wanted, embeddings, wants_alignment) if wanted else {}
        head_scores = {
            name: _finite_scores(name, head.score(embeddings))
            for name, head in heads.items()
            if head is not None and policy.check(name).on and embeddings is not None
        }

        for state in states:
            if state.due(alignment):
                if clip is None:
                    state.record(not_run(alignment, "no CLIP model is configured"))
                elif not wants_alignment(state):
                    state.record(not_run(alignment, "no prompt text was given"))
                else:
                    state.record(judge(alignment, similarity[id(state)], "prompt_mismatch",
                                       "image does not match the prompt", "CLIP similarity"))
            for name, code, finding, measure in (
                ("aesthetic", "low_aesthetic", "image scores low on aesthetics", "aesthetic score"),
                ("nsfw", "nsfw", "image is likely NSFW", "NSFW probability"),
            ):
                check = policy.check(name)
                if not state.due(check):
                    continue
                if heads[name] is None or clip is None:  # Scorers refuses a head without its CLIP model
                    state.record(not_run(check, f"no {name} model is configured"))
                else:
                    score = float(head_scores[name][row[id(state)]])
                    state.record(judge(check, score, code, finding, measure))

    def _embed_images(self, clip, states: list[_Judging]) -> np.ndarray:
        assert self.scorers is not None
        images = [_rgb(state) for state in states]
        size = max(1, int(self.scorers.batch_size))
        chunks = [clip.embed_images(images[start:start + size]) for start in range(0, len(images), size)]
        return np.concatenate(chunks, axis=0)  # [N, D], L2-normalised

    @staticmethod
    def _similarities(clip, states, embeddings, wants_alignment) -> dict[int, float]:
        """Cosine similarity of each candidate that wants alignment with its own prompt (one text pass)."""
        prompts = sorted({state.candidate.prompt for state in states if wants_alignment(state)})
        if not prompts:
            return {}
        texts = clip.embed_texts(prompts)  # [T, D], L2-normalised
        column = {prompt: index for index, prompt in enumerate(prompts)}
        cosines = _finite_scores("clip_alignment", embeddings @ texts.T)  # [N, T]
        return {
            id(state): float(cosines[index, column[state.candidate.prompt]])
            for index, state in enumerate(states) if wants_alignment(state)
        }

    def _soft_checks(self, state: _Judging, policy: ResolvedPolicy) -> None:
        check = policy.check("blur")
        if state.due(check):
            assert state.prepared is not None
            score = blur_score(state.prepared.small_grey)
            state.record(not_run(check, "image is smaller than 3x3 pixels") if score is None else
                         judge(check, score, "blurry", "image looks blurry", "Laplacian variance"))
        check = policy.check("colour_entropy")
        if state.due(check):
            assert state.prepared is not None
            state.record(judge(check, colour_entropy(state.prepared.small_rgb), "low_colour_entropy",
                               "image has very few colours", "colour entropy in bits"))


def _duplicate_result(check: ResolvedCheck, state: _Judging, history: Sequence[RecentOutput]) -> CheckResult:
    assert state.hash is not None
    key = state.candidate.request_key
    # Repeating a request may rightly repeat its image: only other requests' outputs count.
    others = [entry for entry in history if key is None or entry.request_key != key]
    if not others:
        return not_run(check, "no earlier outputs of other requests to compare with")
    exact = next((entry for entry in others if entry.sha256 == state.hash.sha256), None)
    if exact is not None:
        return judge(check, 0.0, "exact_duplicate", f"exact copy of {exact.label}", "hash distance")
    distance, nearest = min(((hamming(state.hash.phash, entry.phash), entry) for entry in others),
                            key=lambda pair: pair[0])
    return judge(check, float(distance), "near_duplicate", f"near-duplicate of {nearest.label}", "hash distance")


def _finite_scores(name: str, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise ScorerUnavailable(f"the {name} scorer gave a non-finite score (NaN or Inf)")
    return scores


def _rgb(state: _Judging) -> Image.Image:
    assert state.prepared is not None
    image = state.prepared.image8
    return image if image.mode == "RGB" else image.convert("RGB")

