"""Errors raised by the sentinel.

All of them derive from one base class, so a caller can catch the whole family::

    SentinelError
    ├── PolicyInvalid       a policy document has an unknown key or a bad value; ``.path`` names it
    └── ScorerUnavailable   a configured scorer (CLIP, aesthetic or NSFW head) cannot be loaded or run

A check that *fails* is not an error: it is a ``CheckResult`` with status ``"failed"`` in the ``Verdict``.
A scorer that is unavailable is never treated as a pass or a failure: the error reaches the operator.
"""

from __future__ import annotations

__all__ = ["SentinelError", "PolicyInvalid", "ScorerUnavailable"]


class SentinelError(Exception):
    """Base class of every error the sentinel raises."""


class PolicyInvalid(SentinelError):
    """A policy document cannot be used as given.

    ``path`` is the dotted key path of the offending value (``"checks.blank.reject"``, ``"retries"``), or
    ``""`` for the document itself; the message starts with it.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ScorerUnavailable(SentinelError):
    """A learned scorer cannot be loaded or run with the configuration it was given."""
