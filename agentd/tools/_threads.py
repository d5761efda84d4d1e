"""The worker threads the tools' blocking file work runs in: a few per daemon, not trio's 40.

A model can ask for many read-only calls in one step, and several runs can be
in one at once; a slow disk or a huge tree must not take every thread that
the store and everything else share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
from trio.lowlevel import RunVar

__all__ = ["MAX_TOOL_THREADS", "run_sync"]

T = TypeVar("T")
MAX_TOOL_THREADS = 8
_limiter: RunVar[trio.CapacityLimiter] = RunVar("agentd_tool_threads")


def _threads() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(MAX_TOOL_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_sync(fn: Callable[..., T], *args: object, abandon_on_cancel: bool = False) -> T:
    """`fn(*args)` in a tool thread. Abandon on cancel only work that owns nothing the caller must see end:
    a read that opens and closes its own descriptors may finish unheeded; a write may not."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon_on_cancel, limiter=_threads())
