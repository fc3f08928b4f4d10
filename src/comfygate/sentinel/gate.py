"""The sentinel: runs a resolved policy's checks on candidates, cheapest first, and turns the results into
verdicts.

Order: decode, finite, blank, noise, silence, duplicate, then the checks on CLIP embeddings (clip_alignment,
aesthetic, nsfw), then the soft checks (blur, colour_entropy). The first check that fails in its reject band
stops a candidate: every later check is recorded as ``not_run`` ("skipped: <check> rejected the image").

Each check judges some kinds of output (check_specs.py) and reports ``not_run`` on the others ("does not apply
to audio (audio/flac)"). The picture checks read a still image, or the first, middle and last frames of an
animation or video: a check's score is then the worst of the frames, and its reason names that frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .candidate import Candidate
from .check_specs import CHECK_NAMES, CHECKS
from .checks import (
    PreparedImage,
    blank_score,
    blur_score,
    colour_entropy,
    finite_fraction,
    judge,
    noise_score,
    not_run,
    yes_no_result,
)
from .decoding import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_FRAMES, decode
from .errors import ScorerUnavailable
from .hashing import ImageHash, RecentOutput, hamming, image_hash
from .media import Decoded, base_type, kind_noun, kind_phrase
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
    frames: list[PreparedImage]  # decoded.frames, prepared for the checks
    results: dict[str, CheckResult] = field(default_factory=dict)
    hash: ImageHash | None = None
    stopped_by: str | None = None  # the check that rejected it; later checks are skipped

    def record(self, result: CheckResult) -> None:
        self.results[result.name] = result
        if result.status == "failed" and result.band == "reject" and self.stopped_by is None:
            self.stopped_by = result.name

    def due(self, check: ResolvedCheck) -> bool:
        """Whether ``check`` should run now; when not, its not_run result is recorded."""
        kind = self.decoded.kind
        if kind not in CHECKS[check.name].kinds:
            self.record(not_run(check, f"does not apply to {kind_phrase(kind)} "
                                       f"({base_type(self.candidate.content_type)})"))
        elif not check.on:
            self.record(not_run(check, "off in this policy"))
        elif self.stopped_by is not None:
            self.record(not_run(check, f"skipped: {self.stopped_by} rejected the {kind_noun(kind)}"))
        elif not self.decoded.readable and check.name != "finite":
            self.record(not_run(check, self.undecoded_reason()))
        else:
            return True
        return False

    def undecoded_reason(self) -> str:
        problems = "; ".join(self.decoded.problems)
        noun = kind_noun(self.decoded.kind)
        return f"the {noun} did not decode: {problems}" if problems else f"the {noun} did not decode"

    def judge_frames(self, check: ResolvedCheck, scores: Sequence[float], code: str, predicate: str,
                     measure: str) -> CheckResult:
        """Judge the worst of the frames' scores (one per frame); the reason names that frame."""
        pick = min if CHECKS[check.name].higher_is_better else max
        worst = pick(range(len(scores)), key=scores.__getitem__)
        label = self.decoded.frames[worst].label  # None for a still image
        result = judge(check, float(scores[worst]), code, f"{label or 'image'} {predicate}", measure)
        if label is not None and result.reason is None:
            result.reason = f"worst of the {len(scores)} frames checked: {label}" if len(scores) > 1 else \
                f"scored on {label}"
        return result

    def verdict(self) -> Verdict:
        return Verdict.from_checks([self.results[name] for name in CHECK_NAMES], self.hash)


class Sentinel:
    """Quality gate for workflow outputs.

    ``scorers`` holds the learned scorers (CLIP, aesthetic and NSFW heads); a check that needs one that is
    not configured reports ``not_run``, never passed. ``max_pixels`` is the decompression-bomb guard: larger
    images and frames fail the decode check unread. ``max_video_frames`` bounds the frames of a video decoded
    in full; past them its packets are only read, and its middle and last frames found by seeking. A
    sentinel holds no per-run state, so one instance serves all threads of a worker.
    """

    def __init__(self, scorers: Scorers | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> None:
        self.scorers = scorers
        self.max_pixels = max_pixels
        self.max_video_frames = max_video_frames

    def evaluate(
        self, candidate: Candidate, policy: ResolvedPolicy | Policy, recent: Sequence[RecentOutput] = ()
    ) -> Verdict:
        """Judge one candidate; see ``evaluate_batch``."""
        return self.evaluate_batch([candidate], policy, recent)[0]

    def evaluate_batch(
        self, candidates: Sequence[Candidate], policy: ResolvedPolicy | Policy,
        recent: Sequence[RecentOutput] = (),
    ) -> list[Verdict]:
        """Judge candidates together: pixel checks and hashes per output, then one CLIP pass over the frames
        of the ones still standing, then the heads on the same embeddings.

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
        decoded = decode(candidate, self.max_pixels, self.max_video_frames)
        state = _Judging(candidate, decoded, [PreparedImage(frame.image) for frame in decoded.frames])

        check = policy.check("decode")
        if check.on:  # not via due(): decode reports on undecodable images itself
            state.record(yes_no_result(check, 1.0 if decoded.ok else 0.0, decoded.code,
                                       "; ".join(decoded.problems) or None))
        else:
            state.record(not_run(check, "off in this policy"))

        check = policy.check("finite")
        if state.due(check):
            if candidate.pixels is None:
                state.record(not_run(check, "no raw pixels were given" if decoded.kind == "image" else
                                     f"no raw pixel values for {'an' if decoded.kind == 'animation' else 'a'} "
                                     f"{kind_noun(decoded.kind)}"))
            else:
                fraction, problem = finite_fraction(candidate.pixels)
                state.record(yes_no_result(check, fraction, "not_finite" if problem else None, problem))

        check = policy.check("blank")
        if state.due(check):
            state.record(state.judge_frames(check, [blank_score(frame.image8) for frame in state.frames], "blank",
                                            "is blank or near-uniform", "colour spread"))
        check = policy.check("noise")
        if state.due(check):
            state.record(state.judge_frames(check, [noise_score(frame.small_grey) for frame in state.frames],
                                            "noise", "looks like noise", "neighbour correlation"))
        check = policy.check("silence")
        if state.due(check):
            assert decoded.level_dbfs is not None
            state.record(judge(check, decoded.level_dbfs, "silent", "audio is silent or nearly so",
                               "RMS level in dBFS"))
        return state

    def _duplicate_check(self, states: list[_Judging], check: ResolvedCheck, recent: Sequence[RecentOutput]) -> None:
        # Hashed even with the check off: callers keep the hashes, so turning the check on later has a history.
        # A video or animation is known by its bytes and its middle frame.
        for state in states:
            if state.frames:
                state.hash = image_hash(state.candidate.data, state.frames[state.decoded.hash_index].image8)
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

        # One image-embedding pass over every frame of every candidate still standing that a configured check
        # needs; rows[id(state)] are its frames' rows in the embeddings.
        standing = [state for state in states if state.stopped_by is None and state.frames]
        wanted = [
            state for state in standing if clip is not None and (
                wants_alignment(state) or any(policy.check(n).on and heads[n] is not None for n in heads)
            )
        ]
        images: list[Image.Image] = []
        rows: dict[int, range] = {}
        for state in wanted:
            rows[id(state)] = range(len(images), len(images) + len(state.frames))
            images.extend(_rgb(frame) for frame in state.frames)
        embeddings = self._embed_images(clip, images) if images else None
        similarity = self._similarities(clip, wanted, rows, embeddings, wants_alignment) if wanted else {}
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
                    state.record(state.judge_frames(alignment, similarity[id(state)], "prompt_mismatch",
                                                    "does not match the prompt", "CLIP similarity"))
            for name, code, predicate, measure in (
                ("aesthetic", "low_aesthetic", "scores low on aesthetics", "aesthetic score"),
                ("nsfw", "nsfw", "is likely NSFW", "NSFW probability"),
            ):
                check = policy.check(name)
                if not state.due(check):
                    continue
                if heads[name] is None or clip is None:  # Scorers refuses a head without its CLIP model
                    state.record(not_run(check, f"no {name} model is configured"))
                else:
                    scores = [float(head_scores[name][row]) for row in rows[id(state)]]
                    state.record(state.judge_frames(check, scores, code, predicate, measure))

    def _embed_images(self, clip, images: list[Image.Image]) -> np.ndarray:
        assert self.scorers is not None
        size = max(1, int(self.scorers.batch_size))
        chunks = [clip.embed_images(images[start:start + size]) for start in range(0, len(images), size)]
        return np.concatenate(chunks, axis=0)  # [N, D], L2-normalised

    @staticmethod
    def _similarities(clip, states, rows, embeddings, wants_alignment) -> dict[int, list[float]]:
        """Cosine similarity of each frame of each candidate that wants alignment with its own prompt (one text
        pass)."""
        prompts = sorted({state.candidate.prompt for state in states if wants_alignment(state)})
        if not prompts:
            return {}
        texts = clip.embed_texts(prompts)  # [T, D], L2-normalised
        column = {prompt: index for index, prompt in enumerate(prompts)}
        cosines = _finite_scores("clip_alignment", embeddings @ texts.T)  # [N, T]
        return {
            id(state): [float(cosines[row, column[state.candidate.prompt]]) for row in rows[id(state)]]
            for state in states if wants_alignment(state)
        }

    def _soft_checks(self, state: _Judging, policy: ResolvedPolicy) -> None:
        check = policy.check("blur")
        if state.due(check):
            scores = [blur_score(frame.small_grey) for frame in state.frames]
            measured = [score for score in scores if score is not None]
            if len(measured) < len(scores):  # the frames of a video share one size
                state.record(not_run(check, f"{kind_noun(state.decoded.kind)} is smaller than 3x3 pixels"))
            else:
                state.record(state.judge_frames(check, measured, "blurry", "looks blurry", "Laplacian variance"))
        check = policy.check("colour_entropy")
        if state.due(check):
            state.record(state.judge_frames(check, [colour_entropy(frame.small_rgb) for frame in state.frames],
                                            "low_colour_entropy", "has very few colours", "colour entropy in bits"))


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
    by = "" if state.decoded.kind == "image" else " by its middle frame"
    return judge(check, float(distance), "near_duplicate", f"near-duplicate of {nearest.label}{by}",
                 "hash distance")


def _finite_scores(name: str, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise ScorerUnavailable(f"the {name} scorer gave a non-finite score (NaN or Inf)")
    return scores


def _rgb(frame: PreparedImage) -> Image.Image:
    image = frame.image8
    return image if image.mode == "RGB" else image.convert("RGB")

