"""Where the limits meet the API: the request-rate middleware and the check before a run is created."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.orm import Session

from comfygate.platform.api.auth import CALLER, Caller
from comfygate.platform.api.context import AppState, state_of
from comfygate.platform.errors import Unauthorized
from comfygate.platform.limits import run_counts
from comfygate.platform.limits.policy import CallerLimits, over_limit

__all__ = ["rate_limit_middleware", "failed_auth_middleware", "check_run_start", "CONCURRENT_RETRY_SECONDS"]

# Nobody knows when one of the key's runs will end; a client that retries this often costs little.
CONCURRENT_RETRY_SECONDS = 5


def _subject(caller: Caller) -> tuple[str, str]:
    """(bucket name, whose limit it is): per API key, or per user for the console's session."""
    if caller.api_key_id is not None:
        return f"key:{caller.api_key_id}", "key"
    return f"user:{caller.name}", "user"


@web.middleware
async def rate_limit_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Every authenticated /v1 request takes one token; placed after ``auth_middleware``, which names the
    caller (its key's limits come with it from the key cache: no database round trip here)."""
    caller = request.get(CALLER)
    if caller is not None:
        limiter = state_of(request).limiter
        subject, whose = _subject(caller)
        await limiter.check_request(subject, limiter.limits_of(caller.key_limits), whose)
    return await handler(request)


@web.middleware
async def failed_auth_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Requests refused for an unknown key or a missing session are limited per client address, with a
    key's default request rate: guessing keys, or flooding with bad ones, meets a 429 like any key would.
    Placed before ``auth_middleware``, whose 401 it sees."""
    try:
        return await handler(request)
    except Unauthorized:
        limiter = state_of(request).limiter
        await limiter.check_request(f"addr:{request.remote or 'unknown'}", limiter.limits_of(None), "address")
        raise


def _check_run_counts(session: Session, api_key_id: int, limits: CallerLimits) -> None:
    if limits.concurrent_runs > 0 and run_counts.in_flight(session, api_key_id) >= limits.concurrent_runs:
        raise over_limit("concurrent_runs", limits.concurrent_runs, CONCURRENT_RETRY_SECONDS)
    if limits.runs_per_day > 0:
        wait = run_counts.day_quota_wait(session, api_key_id, limits.runs_per_day)
        if wait > 0:
            raise over_limit("runs_per_day", limits.runs_per_day, wait)


async def check_run_start(state: AppState, caller: Caller) -> None:
    """Refuse a new run of an API key over its concurrent or daily quota (counted in the run table, only
    when that limit is on) or its runs per minute. The counts are read before the run is created, so
    requests of one key racing each other can pass together: a key may end up that many runs over. A console
    session (no key) has the runs-per-minute bucket per user; its runs carry no key to count quotas by."""
    limits = state.limiter.limits_of(caller.key_limits)
    if caller.api_key_id is not None and (limits.concurrent_runs > 0 or limits.runs_per_day > 0):
        await state.call(_check_run_counts, caller.api_key_id, limits)
    # Last: a run refused by a quota above does not use up a token of the rate.
    subject, whose = _subject(caller)
    await state.limiter.take_run(subject, limits, whose)
