"""The sentinel: a quality gate that judges every workflow output before a caller sees it.

``Sentinel(scorers).evaluate_batch(candidates, policy.resolve(recent_scores), recent_outputs) -> [Verdict]``.
Outputs may be still images, animations, videos, audio, glTF binaries, text or other files (``media_kind``);
each check judges the kinds it applies to and reports ``not_run`` on the rest. Pixel checks (decode, finite,
blank, noise, duplicate, blur, colour entropy) need only numpy and Pillow; videos and audio are read with PyAV,
imported on first use; the learned checks (prompt alignment, aesthetic, NSFW) use ``Scorers``, which import
torch and open_clip on first use. Nothing here imports ``comfygate.platform`` or ``comfygate.comfy_runtime``.
"""

from .candidate import Candidate
from .check_specs import CHECK_NAMES, MEDIA_KINDS, REASON_CODES
from .clip import ClipScorer, config_sidecar_path, register_model_config
from .decoding import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_FRAMES
from .errors import PolicyInvalid, ScorerUnavailable, SentinelError
from .gate import Sentinel
from .hashing import ImageHash, RecentOutput, hamming, image_hash, perceptual_hash, phash_from_hex, phash_hex
from .heads import EmbeddingHead
from .media import media_kind
from .policy import DEFAULT_POLICY, CheckConfig, Percentile, Policy, ResolvedCheck, ResolvedPolicy
from .scorers import Scorers
from .verdict import NON_RETRYABLE_CHECKS, CheckResult, Verdict

__all__ = [
    "CHECK_NAMES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VIDEO_FRAMES",
    "DEFAULT_POLICY",
    "MEDIA_KINDS",
    "NON_RETRYABLE_CHECKS",
    "REASON_CODES",
    "Candidate",
    "CheckConfig",
    "CheckResult",
    "ClipScorer",
    "EmbeddingHead",
    "ImageHash",
    "Percentile",
    "Policy",
    "PolicyInvalid",
    "RecentOutput",
    "ResolvedCheck",
    "ResolvedPolicy",
    "ScorerUnavailable",
    "Scorers",
    "Sentinel",
    "SentinelError",
    "Verdict",
    "config_sidecar_path",
    "hamming",
    "image_hash",
    "media_kind",
    "perceptual_hash",
    "phash_from_hex",
    "phash_hex",
    "register_model_config",
]
