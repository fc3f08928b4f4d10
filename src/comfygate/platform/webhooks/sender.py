"""The webhook sender: delivers the outbox rows (services/webhooks.py) from inside each API server.

It wakes on every run-ended notice (``RunWaiters.add_listener``) and at least once a second, claims the due
rows (a conditional UPDATE, so several API servers can run senders side by side), and POSTs each body::

    {"event": "run.ended" | "run.reviewed", "run": {... GET /v1/runs/{id} ...}}

with ``X-Comfygate-Event``, ``X-Comfygate-Delivery`` (the delivery id: the receiver's key for ignoring a
repeat, since delivery is at least once) and, when ``webhook_secret`` is set, ``X-Comfygate-Signature:
sha256=<hex HMAC-SHA256 of the body with the secret>``. A 2xx answer delivers it; anything else (a timeout,
a refused connection, a redirect, another status) is retried after 1, 2, 4, ... s until
``webhook_max_attempts``, then recorded as failed. ``GET /v1/webhooks?run=ID`` shows each delivery's state.

Every try connects only to addresses the policy allows (targets.py): the connector's resolver drops the others
(resolver.py) and a host written as an IP address is checked before the POST. A refused try is recorded
("refused: 10.0.0.1 is a private address; ...") and retried like any other failure: the policy is read on every
try, so a target whose DNS answers change back, or that an operator allows, is delivered to later. No proxy
from the environment is used (a proxy would connect for us, out of the policy's sight), and redirects are
never followed (a 3xx is a failed try: its Location is not checked and could point anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from sqlalchemy.exc import SQLAlchemyError
from yarl import URL

from comfygate.platform.api.context import AppState
from comfygate.platform.services import webhooks as outbox
from comfygate.platform.webhooks.resolver import GuardedResolver
from comfygate.platform.webhooks.targets import TargetRefused, WebhookTargets, targets_allowing

__all__ = ["start_sender", "signature", "POLL_SECONDS"]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# Tries in flight at once per server; more due rows wait for the next round.
_MAX_IN_FLIGHT = 32
# How long past the delivery timeout a claimed row stays away from other senders.
_LEASE_MARGIN_SECONDS = 30.0


def signature(secret: str, body: bytes) -> str:
    """The X-Comfygate-Signature value for ``body``; a receiver recomputes it with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Sender:
    def __init__(self, state: AppState, client: aiohttp.ClientSession, targets: WebhookTargets) -> None:
        self.state = state
        self.client = client
        self.targets = targets
        self.wake = asyncio.Event()
        self.in_flight: set[asyncio.Task[None]] = set()

    async def loop(self) -> None:
        settings = self.state.settings
        lease = settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)
            self.wake.clear()
            room = _MAX_IN_FLIGHT - len(self.in_flight)
            if room <= 0:
                continue
            try:
                claimed = await self.state.call(outbox.claim_due, lease, room)
            except SQLAlchemyError:
                # A database blip must not end the sender for the life of the server; the next round retries.
                log.exception("claiming webhook deliveries failed; retrying in %s s", POLL_SECONDS)
                continue
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

    async def _deliver(self, delivery: outbox.ClaimedDelivery) -> None:
        settings = self.state.settings
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "comfygate-webhooks",
                   "X-Comfygate-Event": delivery.event, "X-Comfygate-Delivery": str(delivery.id)}
        if settings.webhook_secret:
            headers["X-Comfygate-Signature"] = signature(settings.webhook_secret, body)
        status: int | None = None
        error = self._refusal_of_literal(delivery.url)
        if error is None:
            status, error = await self._post(delivery.url, body, headers)
        if error:  # it may quote the URL, user:password included
            error = outbox.without_credentials(error, delivery.url)
        try:
            state = await self.state.call(outbox.settle, delivery, status, error, settings.webhook_max_attempts)
        except SQLAlchemyError:
            # The row stays claimed until its lease ends, then it is tried again: at least once.
            log.exception("recording webhook delivery %s failed", delivery.id)
            return
        if state != "delivered":
            log.warning("webhook %s (%s of run %s) to %s, try %s: %s; now %s", delivery.id, delivery.event,
                        delivery.run_id, outbox.masked_url(delivery.url), delivery.attempt, error, state)

    def _refusal_of_literal(self, url: str) -> str | None:
        """A host written as an IP address is connected to without a resolver: judge it here."""
        try:
            host = URL(url).host
        except ValueError:
            return None  # aiohttp refuses the URL itself, and says why
        reason = host and self.targets.literal_refusal(host)
        return f"refused: {reason}" if reason else None

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """One try: the receiver's status and the error to record (None when it was a 2xx)."""
        settings = self.state.settings
        status: int | None = None
        error: str | None = None
        try:
            async with self.client.post(url, data=body, headers=headers, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
                                        ) as response:
                status = response.status
                if not 200 <= status < 300:
                    error = f"HTTP {status} from the receiver"
        except TimeoutError:
            error = f"no answer within {settings.webhook_timeout_seconds:g} s"
        except aiohttp.ClientConnectorError as exc:
            refused = exc.os_error if isinstance(exc.os_error, TargetRefused) else None
            error = f"refused: {refused}" if refused else f"{type(exc).__name__}: {exc}"
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL aiohttp cannot use
            error = f"{type(exc).__name__}: {exc}"
        return status, error

    async def close(self) -> None:
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.gather(*self.in_flight, return_exceptions=True)


async def start_sender(state: AppState) -> Callable[[], Awaitable[None]]:
    """Start the sender of this API server; returns the coroutine function that stops it. A bad
    ``webhook_allow`` entry stops the server from starting (ValueError naming it)."""
    targets = targets_allowing(state.settings.webhook_allow)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(targets))
    client = aiohttp.ClientSession(connector=connector, trust_env=False)
    sender = _Sender(state, client, targets)
    remove_listener = state.waiters.add_listener(lambda _run_id: sender.wake.set())
    task = asyncio.create_task(sender.loop())

    async def stop() -> None:
        remove_listener()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender.close()
        await client.close()

    return stop
