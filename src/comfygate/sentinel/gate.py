"""The sentinel: runs a policy's checks on one candidate and turns the results into a verdict."""

from __future__ import annotations

from PIL import Image

from .candidate import Candidate
from .checks import (
    DEFAULT_MAX_PIXELS,
    Decoded,
    check_blank,
    check_finite,
    check_noise,
    decode,
    image_8bit,
    not_run,
)
from .clip import ClipScorer
from .policy import CheckSettings, Policy
from .verdict import CheckResult, Verdict

__all__ = ["Sentinel"]

_IMAGE_CHECKS = ("decode", "blank", "noise", "clip_alignment")


class Sentinel:
    """Quality gate for workflow outputs.

    ``clip`` scores prompt alignment; without it the ``clip_alignment`` check reports ``not_run``.
    ``max_pixels`` is the decompression-bomb guard: larger images fail the decode check unread.
    A sentinel holds no per-run state, so one instance serves all threads of a worker.
    """

    def __init__(self, clip: ClipScorer | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.clip = clip
        self.max_pixels = max_pixels

    def evaluate(self, candidate: Candidate, policy: Policy, prompt_text: str | None = None) -> Verdict:
        """Run the checks the policy enables, in order, and decide.

        The file is decoded whenever a check needs the image, even with the decode check disabled; those
        checks report ``not_run`` when it does not decode. Raises ``ScorerUnavailable`` when the CLIP check
        is due and the configured model cannot be loaded: a broken scorer is for an operator to see, not a
        reason to pass or fail outputs.
        """
        results: list[CheckResult] = []
        decoded: Decoded | None = None
        if any(policy.enabled(name) for name in _IMAGE_CHECKS):
            decoded = decode(candidate, policy.settings("decode"), self.max_pixels)
        if decoded is not None and policy.enabled("decode"):
            results.append(decoded.result)

        if policy.enabled("finite"):
            results.append(check_finite(candidate.pixels, policy.settings("finite")))

        pixel_checks = [(name, check) for name, check in (("blank", check_blank), ("noise", check_noise))
                        if policy.enabled(name)]
        if pixel_checks:
            # Converted once: both checks read the same 8-bit image.
            image8 = image_8bit(decoded.image) if decoded and decoded.image else None
            for name, check in pixel_checks:
                settings = policy.settings(name)
                results.append(check(image8, settings) if image8 is not None
                               else not_run(name, settings, _undecoded(decoded)))

        if policy.enabled("clip_alignment"):
            results.append(self._clip_alignment(decoded, policy.settings("clip_alignment"), prompt_text))
        return Verdict.from_checks(results)

    def _clip_alignment(
        self, decoded: Decoded | None, settings: CheckSettings, prompt_text: str | None
    ) -> CheckResult:
        name = "clip_alignment"
        if self.clip is None:
            return not_run(name, settings, "no CLIP model is configured")
        if prompt_text is None or not prompt_text.strip():
            return not_run(name, settings, "no prompt text was given")
        image: Image.Image | None = decoded.image if decoded else None
        if image is None:
            return not_run(name, settings, _undecoded(decoded))
        assert settings.threshold is not None  # the policy gives every scored check a threshold
        score = self.clip.similarity(image, [prompt_text])[0]
        if score < settings.threshold:
            return CheckResult(
                name, "failed", settings.action, score, settings.threshold,
                f"image does not match the prompt (CLIP similarity {score:.3f} < {settings.threshold})",
            )
        return CheckResult(name, "passed", settings.action, score, settings.threshold, None)


def _undecoded(decoded: Decoded | None) -> str:
    reason = decoded.result.reason if decoded is not None else None
    return f"the image did not decode: {reason}" if reason else "the image did not decode"
