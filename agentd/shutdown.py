"""The daemon's one shutdown deadline, and the bound on every shielded cleanup.

Cleanup that must run after cancellation — a cancelled run's RunComplete, the
event log's last write, a workspace's `workspace.closed` — is shielded, so
nothing but its own bound can end it. In normal life each has a bound of a few
seconds of its own. Once the daemon shuts down none may outlast the shutdown
deadline, decided once, here, the way hypercorn's `graceful_timeout` bounds
its workers: `begin()` sets it and tightens every shielded scope opened through
`shielded()` that is still running, and every later one starts under it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = ["DEFAULT_GRACEFUL_TIMEOUT", "DEFAULT_SHUTDOWN_DELIVERY_TIMEOUT", "Shutdown"]

# From SIGTERM to exit, at most (plus closing the store).
DEFAULT_GRACEFUL_TIMEOUT = 8.0
# Once shutting down, how long one subscriber may hold up one must-deliver event
# before it is cut off: a stuck client must not take the whole grace period.
DEFAULT_SHUTDOWN_DELIVERY_TIMEOUT = 2.0


class Shutdown:
    def __init__(
        self,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        delivery_timeout: float = DEFAULT_SHUTDOWN_DELIVERY_TIMEOUT,
    ) -> None:
        self.graceful_timeout = graceful_timeout
        self.delivery_timeout = delivery_timeout
        #: When every cleanup must be over; inf until shutdown begins.
        self.deadline = math.inf
        self._scopes: set[trio.CancelScope] = set()

    @property
    def begun(self) -> bool:
        return self.deadline != math.inf

    def begin(self) -> float:
        """Shutdown starts now: set the deadline (once) and hold every running cleanup to it."""
        if not self.begun:
            self.deadline = trio.current_time() + self.graceful_timeout
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self.deadline)
        return self.deadline

    @contextmanager
    def shielded(self, seconds: float) -> Iterator[trio.CancelScope]:
        """A shielded scope for cleanup: `seconds` at most, and never past the shutdown deadline."""
        scope = trio.CancelScope(deadline=min(trio.current_time() + seconds, self.deadline), shield=True)
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def delivery_deadline(self, timeout: float) -> float:
        """By when a subscriber must take a must-deliver event published now, or be cut off."""
        if self.begun:
            timeout = min(timeout, self.delivery_timeout)
        return min(trio.current_time() + timeout, self.deadline)
