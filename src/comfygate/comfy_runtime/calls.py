"""Calling node methods: plain or async, with the arguments a method accepts."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["RunLoop", "accepted_arguments"]


def accepted_arguments(function: Callable[..., Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` less those ``function`` has no parameter for (all of them when it takes ``**kwargs``).

    Used for the optional hooks (IS_CHANGED, check_lazy_status), which often name only the inputs they read.
    """
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): pass everything
        return dict(arguments)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(arguments)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {name: value for name, value in arguments.items() if name in names}


async def _wait_for(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class RunLoop:
    """The event loop of one run, started on the first async call and closed with the run.

    Async node functions (coroutine functions, or functions returning an awaitable) run to completion on it,
    one at a time, in the run's thread. A run must therefore not be started from a thread that is already
    running an event loop (call it through ``asyncio.to_thread`` there).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(self, function: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
        result = function(**arguments)
        if inspect.isawaitable(result):
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            # The task copies the current context: progress reports and GraphBuilder prefixes follow it.
            result = self._loop.run_until_complete(_wait_for(result))
        return result

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:  # tasks a node started and did not wait for
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
