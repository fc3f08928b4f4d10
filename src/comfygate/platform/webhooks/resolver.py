"""The sender's resolver: the delivery-time half of the address policy (targets.py).

aiohttp asks it for a host's addresses right before it connects; it answers only the addresses the policy
allows, and refuses (a ``TargetRefused``, which aiohttp reports as a failed connection) when none is left.
So a name that resolved to a public address at submit and to an internal one now (DNS rebinding) is never
connected to. Hosts written as IP addresses never reach a resolver; the sender checks those itself.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from comfygate.platform.webhooks.targets import TargetRefused, WebhookTargets

__all__ = ["GuardedResolver"]


class GuardedResolver(AbstractResolver):
    def __init__(self, targets: WebhookTargets) -> None:
        self.targets = targets
        # getaddrinfo in a thread, as at submit: the same answers for numeric spellings and /etc/hosts.
        self.inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        if self.targets.allows_name(host):
            return answers
        allowed = [answer for answer in answers if self.targets.why_refused(answer["host"]) is None]
        if not allowed:
            raise TargetRefused(self.targets.resolved_refusal(host, [answer["host"] for answer in answers])
                                or f"{host} resolves to no address")
        return allowed

    async def close(self) -> None:
        await self.inner.close()
