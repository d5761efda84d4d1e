"""A workspace's event journal: the events a client may replay, on their way to the store.

Publishing never waits on the disk: logged events are kept here, in seq
order, until a background task has written them, and a replay reads both the
store and what is still here, so nothing published is missing from it.
"""

from __future__ import annotations

import logging

import trio

from agentd.protocol import events
from agentd.pubsub import Event
from agentd.store import Store

__all__ = ["LOGGED_EVENTS", "EventJournal"]

log = logging.getLogger(__name__)

# The terminal and state-changing events, enough to rebuild what a client shows.
LOGGED_EVENTS = events.LOGGED

# If the store keeps failing, keep at most this many unwritten events.
_MAX_PENDING = 50_000


class EventJournal:
    def __init__(self, workspace_id: str, store: Store, max_pending: int = _MAX_PENDING) -> None:
        self._workspace_id = workspace_id
        self._store = store
        self._max_pending = max_pending
        self._pending: list[Event] = []
        self._wakeup = trio.Event()
        # Logged events up to this seq were let go unwritten; not yet in the store.
        self.lost_through = 0

    def record(self, event: Event) -> None:
        """Called by the broker, synchronously, for every logged event it publishes."""
        self._pending.append(event)
        if len(self._pending) > self._max_pending:
            # A replay reaching back past it must say so: see `lost_through`.
            self.lost_through = self._pending.pop(0).seq
        self._wakeup.set()

    def unwritten(self, since: int, through: int) -> list[Event]:
        return [e for e in self._pending if since < e.seq <= through]

    async def run(self) -> None:
        """Write what is recorded, as it comes, in batches."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self.flush()

    async def flush(self, *, final: bool = False) -> None:
        """Write what is recorded.

        `final`: nothing more will be recorded; in the same transaction, the
        store learns the workspace closed with every logged event accounted for.
        """
        batch = list(self._pending)
        lost_through = self.lost_through
        if not batch and not lost_through and not final:
            return
        try:
            await self._store.append_events(
                self._workspace_id,
                [(e.seq, e.type, e.payload) for e in batch],
                lost_through=lost_through,
                closed=final,
            )
        except Exception:
            # Kept, and tried again with the next batch: replay still sees them.
            log.exception("workspace %s: writing %d events to the log failed", self._workspace_id, len(batch))
            return
        if self.lost_through == lost_through:
            self.lost_through = 0
        # Only now: a replay that read the store before this write still found them here.
        written = {id(e) for e in batch}
        self._pending = [e for e in self._pending if id(e) not in written]
