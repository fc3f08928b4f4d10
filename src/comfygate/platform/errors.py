"""Errors of the control plane.

Every error a client can cause maps to one HTTP status and one JSON body, produced by the single handler in
``platform.api.errors``::

    PlatformError                    (base; status 500 only if raised without a subclass)
    ├── BadRequest                   400  malformed JSON, a body of the wrong shape
    ├── Unauthorized                 401  no key, unknown key, revoked key
    ├── Forbidden                    403  a non-admin key on an admin route, a bad CSRF token
    │   └── OutputWithheld           403  the output exists but the sentinel (or a reviewer) withheld it
    ├── NotFound                     404  workflow, version, run or output that does not exist
    ├── Conflict                     409  a state change that the current state forbids
    ├── PayloadTooLarge              413  request body or uploaded image over the limit
    ├── Unprocessable                422  the request parsed but its content is invalid
    │   └── (carries ``details``: ComfyUI-shaped node_errors, or per-input errors)
    ├── TooManyRequests              429  a rate limit or quota of the key, or a login throttle (Retry-After)
    └── ServiceUnavailable           503  the database or broker is down for now (Retry-After)

Errors of the other subpackages (``comfy_runtime.ComfyRuntimeError``, ``sentinel.PolicyInvalid``) are turned
into these by the services that call them, so views only ever see ``PlatformError``. Storage failures
(``platform.storage.StorageError``) are infrastructure faults, not the caller's: they surface as 500 with a
logged reference, and a worker records them on the run.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PlatformError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "OutputWithheld",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "Unprocessable",
    "TooManyRequests",
    "ServiceUnavailable",
]


class PlatformError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Seconds after which the same request may succeed; sent as the Retry-After header (429, 503).
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details is not None:
            body["error"]["details"] = self.details
        return body


class BadRequest(PlatformError):
    status = 400
    code = "bad_request"


class Unauthorized(PlatformError):
    status = 401
    code = "unauthorized"


class Forbidden(PlatformError):
    status = 403
    code = "forbidden"


class OutputWithheld(Forbidden):
    code = "output_withheld"


class NotFound(PlatformError):
    status = 404
    code = "not_found"


class Conflict(PlatformError):
    status = 409
    code = "conflict"


class PayloadTooLarge(PlatformError):
    status = 413
    code = "payload_too_large"


class Unprocessable(PlatformError):
    status = 422
    code = "invalid"


class TooManyRequests(PlatformError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(PlatformError):
    status = 503
    code = "unavailable"
