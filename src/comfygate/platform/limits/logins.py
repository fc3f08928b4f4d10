"""Login throttling: growing delays per username and per client address, kept in the limits' store.

After ``USERNAME_BACKOFF.free_failures`` failed logins of one username in a row, further attempts get 429
for 1 s, then 2, 4, ... up to 15 minutes; a success resets that username. The client address gets the same
treatment with more free failures (people behind one NAT share it) and is not reset by a success (one
attacker's own account must not clear its spraying of other names). The username is counted as typed,
whether or not it exists, and the answer is the same for both: the throttle tells nobody which names exist.

Attempts for one username, and from one address, take turns within a process: a failure is only counted
once its password check ended, so attempts sent all at once would otherwise all pass the block check first.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from comfygate.platform.errors import TooManyRequests
from comfygate.platform.limits.store import Backoff, LimitStore

__all__ = ["LoginThrottle", "USERNAME_BACKOFF", "ADDRESS_BACKOFF"]

T = TypeVar("T")

USERNAME_BACKOFF = Backoff(free_failures=5)
ADDRESS_BACKOFF = Backoff(free_failures=20)


class LoginThrottle:
    def __init__(self, store: LimitStore) -> None:
        self.store = store
        # One lock per username and per address while attempts for it are in flight; dropped when unused.
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _turn(self, key: str) -> asyncio.Lock:
        lock = self._turns.get(key)
        if lock is None:
            lock = self._turns[key] = asyncio.Lock()
        return lock

    async def attempt(self, username: str, address: str | None,
                      login: Callable[[], Awaitable[T | None]]) -> T | None:
        """``await login()`` unless the username or address is blocked (then TooManyRequests), counting
        a None answer as a failure of both and anything else as the username's success."""
        # Hashed: names of any length or character (a lone surrogate from JSON too) become short keys.
        user_key = "login:user:" + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
        address_key = "login:addr:" + (address or "unknown")
        user_turn, address_turn = self._turn(user_key), self._turn(address_key)
        async with user_turn, address_turn:
            return await self._attempt(user_key, address_key, login)

    async def _attempt(self, user_key: str, address_key: str, login: Callable[[], Awaitable[T | None]]
                       ) -> T | None:
        wait = max(await self.store.blocked_for(user_key), await self.store.blocked_for(address_key))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyRequests(f"too many failed logins; retry in {seconds} s",
                                  details={"limit": "login_failures", "retry_after": seconds},
                                  retry_after=seconds)
        result = await login()
        if result is None:
            await self.store.add_failure(user_key, USERNAME_BACKOFF)
            await self.store.add_failure(address_key, ADDRESS_BACKOFF)
        else:
            await self.store.clear_failures(user_key)
        return result
