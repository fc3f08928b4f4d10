"""Webhooks, sent from every API server: the sender (sender.py) of the outbox rows that services/webhooks.py
writes, and the address policy every target must pass (targets.py at submit, resolver.py on each try)."""

from __future__ import annotations

from typing import Any

from comfygate.platform.webhooks.targets import HINT, PUBLIC_ONLY, TargetRefused, WebhookTargets, targets_allowing

__all__ = ["start_sender", "signature", "POLL_SECONDS", "WebhookTargets", "TargetRefused", "targets_allowing",
           "PUBLIC_ONLY", "HINT"]

_SENDER_NAMES = {"start_sender", "signature", "POLL_SECONDS"}


def __getattr__(name: str) -> Any:
    # The sender is loaded on first use: it pulls in aiohttp, and the run service imports the policy from here
    # (services never depend on the web framework).
    if name in _SENDER_NAMES:
        from comfygate.platform.webhooks import sender

        return getattr(sender, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
