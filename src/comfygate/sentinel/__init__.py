"""The sentinel: a quality gate that judges every workflow output before a caller sees it.

``Sentinel(clip).evaluate(candidate, policy, prompt_text) -> Verdict``. Pixel checks (decode, finite, blank,
noise) need only numpy and Pillow; the prompt-alignment check uses a ``ClipScorer``, which imports torch and
open_clip on first use. Nothing here imports ``comfygate.platform`` or ``comfygate.comfy_runtime``.
"""

from .candidate import Candidate
from .clip import ClipScorer, config_sidecar_path, register_model_config
from .errors import PolicyInvalid, ScorerUnavailable, SentinelError
from .gate import Sentinel
from .policy import ACTIONS, CHECK_NAMES, DEFAULT_THRESHOLDS, CheckSettings, Policy
from .verdict import CheckResult, Verdict

__all__ = [
    "ACTIONS",
    "CHECK_NAMES",
    "DEFAULT_THRESHOLDS",
    "Candidate",
    "CheckResult",
    "CheckSettings",
    "ClipScorer",
    "Policy",
    "PolicyInvalid",
    "ScorerUnavailable",
    "Sentinel",
    "SentinelError",
    "Verdict",
    "config_sidecar_path",
    "register_model_config",
]
