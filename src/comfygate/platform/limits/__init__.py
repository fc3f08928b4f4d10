"""Rate limits, quotas and login throttling, shared by every API process through Redis or kept in-process.

``Limiter`` (``limiter.py``) is what the API holds; ``http.py`` hooks it into aiohttp (imported by the app,
not here, since it depends on the API package).
"""

from comfygate.platform.limits.limiter import Limiter, redis_prefix
from comfygate.platform.limits.policy import LIMIT_NAMES, CallerLimits

__all__ = ["Limiter", "CallerLimits", "LIMIT_NAMES", "redis_prefix"]
